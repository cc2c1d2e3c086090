"""Checks hold on a mesh whose owner made mTLS STRICT mesh-wide, and never touch the owner's policy.

No check may assume Istio's PERMISSIVE default: a namespace policy decides for its namespace whatever the
root namespace says (Istio: the most specific PeerAuthentication wins). The mesh-wide check cannot show its
property on such a mesh (Istio applies the oldest mesh-wide policy only): it must say so as a failed
precondition, not as a non-conformance, and leave the owner's policy alone.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.provider import ProbeSpec
from conformance.providers.local.provider import LocalProvider
from tests.conftest import run_meshconf
from tests.integration.mesh import CLUSTERS, call, doc

pytestmark = pytest.mark.integration

OWNERS_POLICY = doc("PeerAuthentication", "default", "istio-system", {"mtls": {"mode": "STRICT"}})


@pytest.fixture(scope="module")
def strict_mesh(local_mesh: LocalProvider) -> Iterator[LocalProvider]:
    local_mesh.apply([OWNERS_POLICY], CLUSTERS)
    try:
        yield local_mesh
    finally:
        local_mesh.delete([OWNERS_POLICY], CLUSTERS)


def _run(mesh: LocalProvider, out: Path, *checks: str, flags: tuple[str, ...] = ()) -> dict[str, dict[str, object]]:
    selection = " or ".join(f"test_{c.replace('-', '_')}" for c in checks)
    result = run_meshconf("run", "--attach", str(mesh.run_dir), "--out", str(out), "-k", selection, *flags)
    report = out / "conformance-report.json"
    assert report.exists(), result.stdout[-3000:] + result.stderr[-2000:]
    return {c["id"]: c for c in json.loads(report.read_text())["checks"]}


def _plaintext_is_refused(mesh: LocalProvider) -> bool:
    ns = f"owner-{secrets.token_hex(3)}"
    server = mesh.deploy_probe(ProbeSpec("server", ns, "cluster1"))
    outsider = mesh.deploy_probe(ProbeSpec("outsider", ns, "cluster1", in_mesh=False))
    try:
        return call(mesh, outsider, server.url(), 3).statuses() == {0: 3}
    finally:
        mesh.delete_namespace(ns)


def test_namespace_checks_hold_on_a_mesh_wide_strict_mesh(strict_mesh: LocalProvider, tmp_path: Path) -> None:
    assert _plaintext_is_refused(strict_mesh)  # the owner's policy is in effect
    checks = _run(strict_mesh, tmp_path / "out", "mtls-strict-rejects-plaintext", "authz-plaintext-has-no-principal")
    assert {c: v["status"] for c, v in checks.items()} == {"mtls-strict-rejects-plaintext": "passed",
                                                           "authz-plaintext-has-no-principal": "passed"}, checks


def test_the_mesh_wide_check_leaves_the_owners_policy_alone(strict_mesh: LocalProvider, tmp_path: Path) -> None:
    # the precondition can never be met on this mesh: wait 5 s for it, not the shipped 30 s consistency budget
    check = _run(strict_mesh, tmp_path / "out", "mtls-mesh-wide-strict",
                 flags=("--timeout", "consistency_s=5"))["mtls-mesh-wide-strict"]
    # it cannot show its property here, and says so as a precondition, never as a non-conformance
    assert check["status"] == "failed" and check["failedOn"] == {"expectation": "expect_all_ok",
                                                                 "precondition": True}, check
    assert _plaintext_is_refused(strict_mesh)  # the owner's mesh-wide STRICT policy is still there
