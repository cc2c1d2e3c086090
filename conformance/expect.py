"""expect_*: the only place a check's pass/fail is decided.

Each helper raises AssertionError (Allure: *failed*, the mesh does not conform) with a message that says
what was expected, what happened, which clusters answered and a few sample responses. Nothing here raises
anything else, and nothing else in meshconf raises AssertionError.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING

from conformance.probe import CallResult, Response

if TYPE_CHECKING:
    from conformance.load.result import LoadResult

__all__ = [
    "Outcome",
    "expect_all",
    "expect_all_forbidden",
    "expect_all_ok",
    "expect_all_refused",
    "expect_answered_by",
    "expect_error_rate_within",
    "expect_latency_within",
    "expect_no_peer_identity",
    "expect_overhead_within",
    "expect_peer_identity",
    "expect_within_budget",
]


class Outcome(StrEnum):
    """What a caller should see. Each value has a one-line meaning in :data:`OUTCOME_MEANING`."""

    OK = "ok"
    REFUSED = "refused"
    FORBIDDEN = "forbidden"
    UNAVAILABLE = "unavailable"


OUTCOME_MEANING = {
    Outcome.OK: "a 2xx answer from the destination workload",
    Outcome.REFUSED: "no HTTP answer from the destination (connection refused, reset or closed)",
    Outcome.FORBIDDEN: "403 with body 'RBAC: access denied' from the destination's sidecar",
    Outcome.UNAVAILABLE: "a 5xx from a proxy, or no answer: the destination could not be reached",
}


def _matches(response: Response, outcome: Outcome) -> bool:
    if outcome is Outcome.OK:
        return response.ok and bool(response.echo)
    if outcome is Outcome.REFUSED:
        return response.status == 0
    if outcome is Outcome.FORBIDDEN:
        return response.status == 403 and response.body.strip() == "RBAC: access denied"
    return response.status == 0 or response.status >= 500


def expect_all(result: CallResult, outcome: Outcome) -> None:
    """Every call had ``outcome``."""
    __tracebackhide__ = True
    if not result.responses:
        raise AssertionError(f"expected {outcome} ({OUTCOME_MEANING[outcome]}) but no call was made\n"
                             f"{result.summary()}")
    wrong = [r for r in result.responses if not _matches(r, outcome)]
    if wrong:
        raise AssertionError(
            f"expected every call to be {outcome.value} ({OUTCOME_MEANING[outcome]}); "
            f"{len(wrong)} of {len(result)} were not, e.g. {wrong[0].describe()}\n{result.summary()}"
        )


def expect_all_ok(result: CallResult) -> None:
    """Every call got a 2xx answer from the destination workload."""
    __tracebackhide__ = True
    expect_all(result, Outcome.OK)


def expect_all_refused(result: CallResult) -> None:
    """No call got an HTTP answer (the destination refused, reset or closed the connection)."""
    __tracebackhide__ = True
    expect_all(result, Outcome.REFUSED)


def expect_all_forbidden(result: CallResult) -> None:
    """Every call was denied by authorization policy: 403 ``RBAC: access denied``."""
    __tracebackhide__ = True
    expect_all(result, Outcome.FORBIDDEN)


def expect_peer_identity(result: CallResult, spiffe_id: str) -> None:
    """Every call reached the app with exactly ``spiffe_id`` as the verified peer (XFCC ``URI=``)."""
    __tracebackhide__ = True
    expect_all(result, Outcome.OK)
    wrong = [r for r in result.responses if r.client_cert_uris[-1:] != [spiffe_id]]
    if wrong:
        seen = wrong[0].client_cert_uris or "no x-forwarded-client-cert"
        raise AssertionError(
            f"expected the server to see peer identity {spiffe_id}; {len(wrong)} of {len(result)} calls "
            f"showed {seen}\n{result.summary()}"
        )


def expect_no_peer_identity(result: CallResult) -> None:
    """Every call reached the app without any peer identity (plaintext: no x-forwarded-client-cert)."""
    __tracebackhide__ = True
    expect_all(result, Outcome.OK)
    carrying = [r for r in result.responses if "x-forwarded-client-cert" in r.request_headers]
    if carrying:
        raise AssertionError(
            f"expected plaintext calls with no peer identity; {len(carrying)} of {len(result)} carried "
            f"x-forwarded-client-cert {carrying[0].request_headers['x-forwarded-client-cert']!r}\n{result.summary()}"
        )


def expect_answered_by(result: CallResult, clusters: Iterable[str]) -> None:
    """Every call was answered by a workload in one of ``clusters``."""
    __tracebackhide__ = True
    allowed = set(clusters)
    expect_all(result, Outcome.OK)
    wrong = [r for r in result.responses if r.cluster not in allowed]
    if wrong:
        raise AssertionError(
            f"expected answers only from {', '.join(sorted(allowed))}; {len(wrong)} of {len(result)} came "
            f"from {wrong[0].cluster}\n{result.summary()}"
        )


def expect_within_budget(name: str, measured: float, limit: float, unit: str) -> None:
    """``measured`` <= ``limit``."""
    __tracebackhide__ = True
    if measured > limit:
        raise AssertionError(f"{name} was {measured:g} {unit}, over its budget of {limit:g} {unit}")


def _worst_seconds(result: LoadResult, count: int = 3) -> str:
    worst = sorted((s for s in result.timeline if s.requests), key=lambda s: s.p99_us, reverse=True)[:count]
    return ", ".join(f"t={s.at_s}s p99 {s.p99_us / 1000:.3f} ms ({s.errors} errors)" for s in worst) or "none"


def expect_latency_within(result: LoadResult, percentile: str, budget_ms: float) -> None:
    """The ``percentile`` (``p50`` ... ``p99.9``, ``max``) latency of a load run is at most ``budget_ms``."""
    __tracebackhide__ = True
    measured = result.percentile_ms(percentile)
    if measured > budget_ms:
        raise AssertionError(
            f"{percentile} latency of {result.label} under {result.target_rps:g} rps was {measured:.3f} ms, "
            f"over its budget of {budget_ms:g} ms\n  {result.summary()}\n  slowest seconds: {_worst_seconds(result)}")


def expect_error_rate_within(result: LoadResult, budget_pct: float) -> None:
    """At most ``budget_pct`` % of a load run's requests failed (non-2xx/3xx, or no answer)."""
    __tracebackhide__ = True
    if result.error_rate_pct > budget_pct:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(result.error_kinds.items(), key=lambda kv: -kv[1])[:3])
        raise AssertionError(
            f"{result.errors} of {result.requests} requests of {result.label} failed "
            f"({result.error_rate_pct:.3f}%, budget {budget_pct:g}%): {kinds or 'no detail'}\n  {result.summary()}")


def expect_overhead_within(mesh: LoadResult, direct: LoadResult, percentile: str, budget_ms: float) -> None:
    """The mesh path's ``percentile`` latency exceeds the direct path's by at most ``budget_ms``."""
    __tracebackhide__ = True
    overhead = mesh.percentile_ms(percentile) - direct.percentile_ms(percentile)
    if overhead > budget_ms:
        raise AssertionError(
            f"the mesh added {overhead:.3f} ms at {percentile} ({mesh.percentile_ms(percentile):.3f} ms through "
            f"the mesh, {direct.percentile_ms(percentile):.3f} ms direct), over its budget of {budget_ms:g} ms"
            f"\n  {mesh.summary()}\n  {direct.summary()}")
