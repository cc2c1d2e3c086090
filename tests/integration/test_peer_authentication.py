"""PeerAuthentication and auto-mTLS on real Envoy: a request matrix per mode, as Istio documents it.

Each row applies a policy and then calls: the provider's ``apply`` returns only after every Envoy loaded the
new config. A connection that the client's sidecar kept alive from the previous row may carry one more
request on the old filter chain until the listener drain closes it (Istio drains too, for 45 s; the local
mesh drains within ``DRAIN_TIME_S``), so the row must hold within that time, not on the very first call.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from conformance.errors import ManifestError, UnsupportedError
from conformance.expect import Outcome
from conformance.probe import CallResult, ProbeClient
from conformance.provider import ProbeHandle, ProbeSpec
from conformance.providers.local import LocalProvider
from conformance.providers.local.envoy import DRAIN_TIME_S

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Row:
    name: str
    policy: dict[str, Any] | None
    """PeerAuthentication spec in the namespace (None: no policy)."""
    port: int
    caller: str
    """"mesh" (a sidecar, mTLS by auto-mTLS) or "plaintext" (out of the mesh)."""
    outcome: Outcome
    identity: bool
    """The server sees the caller's SPIFFE identity in XFCC."""


WORKLOAD = {"selector": {"matchLabels": {"app": "server"}}}
MATRIX = [
    Row("no-policy-mesh", None, 8080, "mesh", Outcome.OK, True),
    Row("no-policy-plaintext", None, 8080, "plaintext", Outcome.OK, False),
    Row("strict-mesh", {"mtls": {"mode": "STRICT"}}, 8080, "mesh", Outcome.OK, True),
    Row("strict-plaintext", {"mtls": {"mode": "STRICT"}}, 8080, "plaintext", Outcome.REFUSED, False),
    Row("permissive-mesh", {"mtls": {"mode": "PERMISSIVE"}}, 8080, "mesh", Outcome.OK, True),
    Row("permissive-plaintext", {"mtls": {"mode": "PERMISSIVE"}}, 8080, "plaintext", Outcome.OK, False),
    Row("disable-mesh", {"mtls": {"mode": "DISABLE"}}, 8080, "mesh", Outcome.OK, False),
    Row("disable-plaintext", {"mtls": {"mode": "DISABLE"}}, 8080, "plaintext", Outcome.OK, False),
    Row("port-level-disable-plaintext",
        {**WORKLOAD, "mtls": {"mode": "STRICT"}, "portLevelMtls": {"9090": {"mode": "DISABLE"}}},
        9090, "plaintext", Outcome.OK, False),
    Row("port-level-other-port-strict",
        {**WORKLOAD, "mtls": {"mode": "STRICT"}, "portLevelMtls": {"9090": {"mode": "DISABLE"}}},
        8080, "plaintext", Outcome.REFUSED, False),
    Row("port-level-disable-mesh-is-plaintext",
        {**WORKLOAD, "mtls": {"mode": "STRICT"}, "portLevelMtls": {"9090": {"mode": "DISABLE"}}},
        9090, "mesh", Outcome.OK, False),
]


@dataclass
class Workloads:
    namespace: str
    server: ProbeHandle
    mesh: ProbeHandle
    plaintext: ProbeHandle


@pytest.fixture(scope="module")
def workloads(local_mesh: LocalProvider) -> Iterator[Workloads]:
    namespace = f"pa-{secrets.token_hex(3)}"
    server = local_mesh.deploy_probe(ProbeSpec("server", namespace, "cluster1", ports=(8080, 9090)))
    mesh = local_mesh.deploy_probe(ProbeSpec("client", namespace, "cluster2", service_account="frontend"))
    plaintext = local_mesh.deploy_probe(ProbeSpec("outsider", namespace, "cluster1", in_mesh=False))
    yield Workloads(namespace, server, mesh, plaintext)
    local_mesh.delete_namespace(namespace)


def _policy(namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "policy", "namespace": namespace}, "spec": spec}


def _matches(result: CallResult, outcome: Outcome) -> bool:
    if outcome is Outcome.OK:
        return all(r.ok and r.echo for r in result.responses)
    return all(r.status == 0 for r in result.responses)


@pytest.mark.parametrize("row", MATRIX, ids=[r.name for r in MATRIX])
def test_matrix(local_mesh: LocalProvider, workloads: Workloads, row: Row) -> None:
    clusters = ["cluster1", "cluster2"]
    doc = _policy(workloads.namespace, row.policy) if row.policy else None
    if doc:
        local_mesh.apply([doc], clusters)
    try:
        caller = workloads.mesh if row.caller == "mesh" else workloads.plaintext
        expected = [f"spiffe://cluster.local/ns/{workloads.namespace}/sa/frontend"] if row.identity else []

        def holds(result: CallResult) -> bool:
            if not _matches(result, row.outcome):
                return False
            return row.outcome is not Outcome.OK or {tuple(r.client_cert_uris) for r in result.responses} == {
                tuple(expected)}

        deadline = time.monotonic() + DRAIN_TIME_S + 1.0
        result = ProbeClient(local_mesh, 2, 30).call(caller, workloads.server.url(port=row.port), count=4)
        while not holds(result) and time.monotonic() < deadline:
            time.sleep(0.1)
            result = ProbeClient(local_mesh, 2, 30).call(caller, workloads.server.url(port=row.port), count=4)
        assert holds(result), result.summary()
    finally:
        if doc:
            local_mesh.delete([doc], clusters)


def test_invalid_and_unsupported_config_is_refused_by_name(local_mesh: LocalProvider, workloads: Workloads) -> None:
    typo = _policy(workloads.namespace, {"mtls": {"mdoe": "STRICT"}})
    with pytest.raises(ManifestError, match=r"unknown field 'spec.mtls.mdoe'"):
        local_mesh.apply([typo], ["cluster1"])
    unsupported = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                   "metadata": {"name": "d", "namespace": workloads.namespace},
                   "spec": {"host": "server", "trafficPolicy": {"tls": {"mode": "SIMPLE"}}}}
    with pytest.raises(UnsupportedError, match="supported by Istio, not by the local mesh"):
        local_mesh.apply([unsupported], ["cluster1"])


def test_destination_rule_tls_overrides_auto_mtls(local_mesh: LocalProvider, workloads: Workloads) -> None:
    """DestinationRule DISABLE sends plaintext to a STRICT server: refused (Istio: the DR wins on the client)."""
    strict = _policy(workloads.namespace, {"mtls": {"mode": "STRICT"}})
    plain = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
             "metadata": {"name": "server", "namespace": workloads.namespace},
             "spec": {"host": "server", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}}
    local_mesh.apply([strict, plain], ["cluster1", "cluster2"])
    try:
        deadline = time.monotonic() + DRAIN_TIME_S + 1.0
        result = ProbeClient(local_mesh, 2, 30).call(workloads.mesh, workloads.server.url(), count=3)
        while any(r.status != 503 for r in result.responses) and time.monotonic() < deadline:
            result = ProbeClient(local_mesh, 2, 30).call(workloads.mesh, workloads.server.url(), count=3)
        assert all(r.status == 503 for r in result.responses), result.summary()
    finally:
        local_mesh.delete([strict, plain], ["cluster1", "cluster2"])
