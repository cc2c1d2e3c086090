"""Each authorization defect of the local mesh changes what real Envoy does, the way its description says.

One mesh per defect (defects are fixed when a mesh starts), beside a mesh without defects. Each row names a
policy, a caller, and what that caller gets without the defect and with it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from conformance.expect import Outcome, expect_all
from conformance.probe import CallResult, ProbeClient
from conformance.provider import ProbeSpec
from conformance.providers import build_config
from conformance.providers.local.defects import Defect
from conformance.providers.local.provider import LocalProvider
from conformance.topology import load_topology

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Row:
    defect: Defect
    spec: dict[str, Any]
    """AuthorizationPolicy spec in the server's namespace; ``{ns}`` is filled in."""
    caller: str
    without: Outcome
    with_defect: Outcome
    path: str = "/"


FORBIDDEN, OK = Outcome.FORBIDDEN, Outcome.OK
ROWS = [
    Row(Defect.IGNORE_AUTHZ_DENY, {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]},
        "frontend", FORBIDDEN, OK, "/admin"),
    Row(Defect.IGNORE_AUTHZ_ALLOW,
        {"rules": [{"from": [{"source": {"namespaces": ["nowhere"]}}]}]}, "frontend", FORBIDDEN, OK),
    Row(Defect.ALLOW_NOTHING_ALLOWS, {}, "frontend", FORBIDDEN, OK),
    Row(Defect.IGNORE_PRINCIPAL_RULES,
        {"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/{ns}/sa/frontend"]}}]}]},
        "other", FORBIDDEN, OK),
]


@pytest.fixture(params=ROWS, ids=[r.defect.value for r in ROWS])
def row_and_mesh(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Row, LocalProvider]]:
    row: Row = request.param
    monkeypatch.setitem(os.environ, "MESHCONF_STATE_DIR", str(tmp_path_factory.getbasetemp() / "runs"))
    provider = LocalProvider(build_config(defects=[row.defect.value]), load_topology("multi-primary"))
    try:
        provider.up()
        yield row, provider
    finally:
        provider.down()


def _outcome(mesh: LocalProvider, row: Row) -> CallResult:
    namespace = f"azd-{secrets.token_hex(3)}"
    server = mesh.deploy_probe(ProbeSpec("server", namespace, "cluster1"))
    caller = mesh.deploy_probe(ProbeSpec(row.caller, namespace, "cluster1"))
    try:
        mesh.apply([{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                     "metadata": {"name": "policy", "namespace": namespace}, "spec": _fill(row.spec, namespace)}],
                   ["cluster1"])
        return ProbeClient(mesh, 2, 30).call(caller, server.url(row.path), 3)
    finally:
        mesh.delete_namespace(namespace)


def test_defect_changes_enforcement(local_mesh: LocalProvider, row_and_mesh: tuple[Row, LocalProvider]) -> None:
    row, defective = row_and_mesh
    expect_all(_outcome(local_mesh, row), row.without)
    expect_all(_outcome(defective, row), row.with_defect)


def _fill(value: Any, namespace: str) -> Any:
    if isinstance(value, str):
        return value.replace("{ns}", namespace)
    if isinstance(value, list):
        return [_fill(v, namespace) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, namespace) for k, v in value.items()}
    return value
