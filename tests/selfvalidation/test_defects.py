"""Self-validation: every check can fail. The suite runs against a mesh with each deliberate defect, and
the checks meant to catch that defect must fail (and no check may break). Without defects, all pass.

``CATCHES`` is the one table of which check catches which defect; ``tests/selfvalidation/report.py``
prints the kill rate from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.providers.local.defects import Defect
from tests.conftest import run_meshconf

pytestmark = pytest.mark.slow

CATCHES: dict[Defect, set[str]] = {
    Defect.IGNORE_PEER_AUTHENTICATION: {"mtls-strict-rejects-plaintext"},
    Defect.PERMISSIVE_AS_STRICT: {"mtls-permissive-accepts-both"},
    Defect.WRONG_SPIFFE_IDENTITY: {"mtls-strict-peer-identity", "mtls-cross-cluster-identity"},
    Defect.NO_CLIENT_CERT_FORWARDING: {"mtls-strict-peer-identity", "mtls-permissive-accepts-both"},
    Defect.NO_CROSS_CLUSTER_ENDPOINTS: {"mtls-cross-cluster-identity"},
    Defect.ALWAYS_PLAINTEXT: {"mtls-strict-peer-identity", "mtls-disable-plaintext"},
    Defect.IGNORE_AUTHZ_DENY: {"authz-deny-path-method", "authz-deny-overrides-allow", "authz-propagation-time"},
    Defect.IGNORE_AUTHZ_ALLOW: {"authz-allow-nothing-denies-all", "authz-allow-principal", "authz-allow-namespace",
                                "authz-header-condition", "authz-cross-cluster-principal",
                                "authz-plaintext-has-no-principal"},
    Defect.ALLOW_NOTHING_ALLOWS: {"authz-allow-nothing-denies-all"},
    Defect.IGNORE_PRINCIPAL_RULES: {"authz-allow-principal", "authz-cross-cluster-principal",
                                    "authz-plaintext-has-no-principal"},
}
"""Defect -> checks that must fail against it. Others may fail too (defects are not surgical)."""

NOT_YET_CAUGHT: set[Defect] = {
    Defect.NO_OUTLIER_DETECTION, Defect.NO_LOCALITY_PRIORITY, Defect.LOCALITY_IGNORED_IN_FAILOVER,
    Defect.RETRIES_DISABLED, Defect.PLAINTEXT_CROSS_NETWORK, Defect.REGISTRY_ONLY_IGNORED, Defect.SLOW_SIDECAR,
    Defect.NO_CERT_ROTATION, Defect.GATEWAY_ROUTES_EVERYTHING,
}
"""Defects no conformance check catches yet (their behaviour is shown by tests/integration). Must shrink."""

# Short budgets: a defect that is caught shows within seconds; no need to wait out the default 30 s.
FAST = ["--timeout", "consistency_s=4"]


def _run(out: Path, *args: str) -> dict[str, str]:
    result = run_meshconf("run", "--out", str(out), *FAST, *args)
    report = out / "conformance-report.json"
    assert report.exists(), f"no report; meshconf said:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    statuses = {c["id"]: c["status"] for c in json.loads(report.read_text())["checks"]}
    expected_exit = 1 if "failed" in statuses.values() else 3 if "broken" in statuses.values() else 0
    assert result.returncode == expected_exit, result.stdout[-3000:]
    return statuses


def test_every_defect_is_in_the_table() -> None:
    assert set(CATCHES) | NOT_YET_CAUGHT == set(Defect)
    assert not set(CATCHES) & NOT_YET_CAUGHT
    assert all(CATCHES.values())


def test_without_defects_every_check_passes(tmp_path: Path) -> None:
    statuses = _run(tmp_path / "out")
    assert statuses and set(statuses.values()) == {"passed"}, statuses


@pytest.mark.parametrize("defect", list(CATCHES), ids=[d.value for d in CATCHES])
def test_defect_is_caught(defect: Defect, tmp_path: Path) -> None:
    statuses = _run(tmp_path / "out", "--mesh-defect", defect.value, "-k", " or ".join(
        f"test_{c.replace('-', '_')}" for c in CATCHES[defect]))
    assert set(statuses) == CATCHES[defect]
    not_failed = {c: s for c, s in statuses.items() if s != "failed"}
    assert not not_failed, f"{defect.value} was not caught by {not_failed}"
