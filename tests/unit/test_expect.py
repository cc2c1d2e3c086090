"""expect_* failures name the expectation that decided them; baseline failures are preconditions."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.convergence import await_convergence
from conformance.expect import (
    Nonconformance,
    expect_all_ok,
    expect_answered_by_version,
    expect_peer_identity,
    expect_within_budget,
)
from conformance.probe import CallResult, Response
from conformance.report.conformance import CheckResult, RunReport


def _result(status: int) -> CallResult:
    response = Response(status=status, latency_us=100, body="", echo={"cluster": "cluster1"} if status == 200 else {})
    return CallResult("client in ns on cluster1", "http://server/", (response,))


def test_a_failed_expectation_names_itself() -> None:
    with pytest.raises(Nonconformance) as failure:
        expect_within_budget("p99", 12.0, 10.0, "ms")
    assert failure.value.expectation == "expect_within_budget"
    assert not failure.value.precondition
    assert isinstance(failure.value, AssertionError)  # pytest and Allure still see a failure


def test_the_outermost_expectation_decides() -> None:
    # expect_peer_identity calls expect_all: the check asked for a peer identity, so that is what failed
    with pytest.raises(Nonconformance) as failure:
        expect_peer_identity(_result(503), "spiffe://cluster.local/ns/a/sa/b")
    assert failure.value.expectation == "expect_peer_identity"


def test_convergence_keeps_the_expectation() -> None:
    with pytest.raises(Nonconformance) as failure:
        await_convergence(lambda: _result(503), expect_all_ok, budget_s=0.05, interval_s=0.01, consecutive=1)
    assert failure.value.expectation == "expect_all_ok"
    assert "not converged within" in str(failure.value)


def test_a_passing_expectation_returns_its_value() -> None:
    expect_all_ok(_result(200))


def test_the_report_says_what_a_failed_check_failed_on(tmp_path: Path) -> None:
    failed = CheckResult("a-b", "mtls", "d", "failed", 1.0, "n", message="m", expectation="expect_all_ok",
                         precondition=True)
    passed = CheckResult("c-d", "mtls", "d", "passed", 1.0, "n2")
    report = RunReport({}, [failed, passed])
    checks = {c["id"]: c for c in report.as_dict()["checks"]}
    assert checks["a-b"]["failedOn"] == {"expectation": "expect_all_ok", "precondition": True}
    assert "failedOn" not in checks["c-d"]
    assert "failed on precondition `expect_all_ok`" in report.markdown()


def test_answered_by_version_names_the_wrong_version() -> None:
    def answered(*versions: str) -> CallResult:
        return CallResult("client", "http://server/", tuple(
            Response(status=200, latency_us=100, echo={"cluster": "cluster1", "version": v}) for v in versions))

    expect_answered_by_version(answered("v1", "v1"), ["v1"])
    with pytest.raises(Nonconformance, match="1 of 2 came from v2 in cluster1") as failure:
        expect_answered_by_version(answered("v1", "v2"), ["v1"])
    assert failure.value.expectation == "expect_answered_by_version"
