"""expect_* failures name the expectation that decided them; baseline failures are preconditions."""

from __future__ import annotations

import pytest

from conformance.convergence import await_convergence
from conformance.expect import (
    Nonconformance,
    expect_all_blocked,
    expect_all_ok,
    expect_answered_by_version,
    expect_failover,
    expect_fails_fast,
    expect_new_certificate_on_the_wire,
    expect_peer_identity,
    expect_within_budget,
)
from conformance.probe import CallResult, Response
from conformance.traffic import Timeline


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


def test_answered_by_version_names_the_wrong_version() -> None:
    def answered(*versions: str) -> CallResult:
        return CallResult("client", "http://server/", tuple(
            Response(status=200, latency_us=100, echo={"cluster": "cluster1", "version": v}) for v in versions))

    expect_answered_by_version(answered("v1", "v1"), ["v1"])
    with pytest.raises(Nonconformance, match="1 of 2 came from v2 in cluster1") as failure:
        expect_answered_by_version(answered("v1", "v2"), ["v1"])
    assert failure.value.expectation == "expect_answered_by_version"


def _timeline(*hashes: str, xfcc: str = 'By=spiffe://cluster.local/ns/a/sa/server;Hash={};Subject="";'
                                           'URI=spiffe://cluster.local/ns/b/sa/client') -> Timeline:
    calls = tuple((0.1 * i, Response(status=200, latency_us=100, echo={
        "cluster": "cluster1", "headers": {"x-forwarded-client-cert": xfcc.format(h)}})) for i, h in enumerate(hashes))
    return Timeline(calls, {"rotated": 0.05})


def test_new_certificate_on_the_wire_reads_the_hash_of_the_current_xfcc_element() -> None:
    expect_new_certificate_on_the_wire(_timeline("old", *["NEW"] * 5), "rotated", "new")
    forwarded = 'Hash=elsewhere;Subject="CN=a, O=b;c",By=x;Hash={};URI=y'  # quoted , and ; inside a value
    expect_new_certificate_on_the_wire(_timeline(*["new"] * 6, xfcc=forwarded), "rotated", "new")
    with pytest.raises(Nonconformance, match="3 of 5 calls after rotated did not use the new client certificate"):
        expect_new_certificate_on_the_wire(_timeline("new", "new", "old", "old", "new", "old"), "rotated", "new")
    with pytest.raises(Nonconformance, match="only 2 calls were made after rotated"):
        expect_new_certificate_on_the_wire(_timeline("new", "new", "new"), "rotated", "new")


def test_blocked_is_a_502_from_the_sidecar_or_no_answer() -> None:
    blocked = (Response(status=502, latency_us=1), Response(status=0, latency_us=1, error="unresolved host"))
    expect_all_blocked(CallResult("c", "http://x/", blocked))
    reached = Response(status=502, latency_us=1, echo={"cluster": "cluster1", "instance": "external-1"})
    with pytest.raises(Nonconformance, match="1 of 1 were not"):  # the destination itself answered
        expect_all_blocked(CallResult("c", "http://x/", (reached,)))


def test_a_call_that_hung_until_the_probe_gave_up_did_not_fail_fast() -> None:
    hung = CallResult("c", "http://x/", (Response(status=0, latency_us=900_000, error="timeout"),))
    with pytest.raises(Nonconformance, match="hung until the caller gave up"):
        expect_fails_fast(hung, within_s=1.0)  # within the budget, yet it never failed: the probe cut it
    expect_fails_fast(CallResult("c", "http://x/", (Response(status=503, latency_us=500_000),)), within_s=1.0)


def test_failover_measures_the_first_shift_and_errors_over_the_window() -> None:
    def at(t: float, cluster: str | None) -> tuple[float, Response]:
        return t, Response(status=200 if cluster else 503, latency_us=1, echo={"cluster": cluster} if cluster else {})

    # ejected at once, re-admitted 3 s later (still failing: 3 errors), ejected again
    calls = [at(0.0, "cluster1"), *[at(1.0 + 0.01 * i, None) for i in range(3)],
             *[at(1.1 + 0.1 * i, "cluster2") for i in range(30)], *[at(4.2 + 0.01 * i, None) for i in range(3)],
             *[at(4.3 + 0.1 * i, "cluster2") for i in range(10)]]
    timeline = Timeline(tuple(calls), {"failure": 1.0})
    assert timeline.reached("failure", "cluster2") == pytest.approx(0.1)
    assert timeline.failing_spells("failure") == [(1.0, 1.1), (4.2, 4.3)]
    expect_failover(timeline, "failure", "cluster2", max_errors=3, max_shift_s=1.0, max_relapse_s=0.5)
    with pytest.raises(Nonconformance, match="6 calls failed after failure, over the budget of 5"):
        expect_failover(timeline, "failure", "cluster2", max_errors=5, max_shift_s=1.0)  # relapses count as errors
    with pytest.raises(Nonconformance, match=r"calls failed again for 0\.10 s from 3\.20 s after failure"):
        expect_failover(timeline, "failure", "cluster2", max_errors=3, max_shift_s=1.0, max_relapse_s=0.05)
    with pytest.raises(Nonconformance, match="did not stay in cluster2"):
        expect_failover(Timeline((*calls, at(6.0, None)), {"failure": 1.0}), "failure", "cluster2", 10, 1.0)
