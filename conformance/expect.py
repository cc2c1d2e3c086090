"""expect_*: the only place a check's pass/fail is decided.

Each helper raises :class:`Nonconformance` (an AssertionError; Allure: *failed*, the mesh does not conform)
with a message that says what was expected, what happened, which clusters answered and a few sample
responses. The error names the ``expect_*`` that decided it (the outermost one, when one calls another), so
reports and self-validation can tell *which* property failed. Nothing here raises anything else, and
nothing else in meshconf raises AssertionError.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conformance.certs import TrustRoots
from conformance.connections import HeldConnections
from conformance.identity import ServedIdentity
from conformance.probe import CallResult, Response
from conformance.provider import ControlPlaneStatus
from conformance.traffic import Timeline

if TYPE_CHECKING:
    from conformance.load.result import LoadResult

__all__ = [
    "Nonconformance",
    "Outcome",
    "expect_all",
    "expect_all_blocked",
    "expect_all_forbidden",
    "expect_all_ok",
    "expect_all_refused",
    "expect_all_status",
    "expect_all_unauthenticated",
    "expect_all_unavailable",
    "expect_answered_by",
    "expect_answered_by_version",
    "expect_both_roots_trusted",
    "expect_chain_moved_to_new_root",
    "expect_connections_kept",
    "expect_control_plane_ready",
    "expect_counted",
    "expect_endpoints_kept",
    "expect_error_rate_within",
    "expect_failover",
    "expect_fails_fast",
    "expect_latency_saving",
    "expect_latency_within",
    "expect_new_certificate",
    "expect_new_certificate_on_the_wire",
    "expect_no_failed_calls",
    "expect_no_peer_identity",
    "expect_overhead_within",
    "expect_peer_identity",
    "expect_reached_clusters",
    "expect_remote_cluster_synced",
    "expect_remote_cluster_unsynced",
    "expect_request_header",
    "expect_share",
    "expect_within_budget",
    "expect_workload_certificate",
]


P = ParamSpec("P")
R = TypeVar("R")


class Nonconformance(AssertionError):
    """The mesh does not conform. ``expectation`` names the ``expect_*`` that decided it; ``precondition`` is
    True when it failed while a check was establishing the state it starts from (``Scenario.baseline``), not
    on the property the check is named for."""

    def __init__(self, message: str, expectation: str | None = None, precondition: bool = False) -> None:
        super().__init__(message)
        self.expectation = expectation
        self.precondition = precondition


def expectation(func: Callable[P, R]) -> Callable[P, R]:
    """Mark an ``expect_*`` helper: a failure inside it is a Nonconformance named after it."""

    @functools.wraps(func)
    def decide(*args: P.args, **kwargs: P.kwargs) -> R:
        __tracebackhide__ = True
        try:
            return func(*args, **kwargs)
        except AssertionError as failure:
            raise Nonconformance(str(failure), func.__name__) from None

    return decide


class Outcome(StrEnum):
    """What a caller should see. Each value has a one-line meaning in :data:`OUTCOME_MEANING`."""

    OK = "ok"
    REFUSED = "refused"
    FORBIDDEN = "forbidden"
    UNAUTHENTICATED = "unauthenticated"
    UNAVAILABLE = "unavailable"
    BLOCKED = "blocked"


OUTCOME_MEANING = {
    Outcome.OK: "a 2xx answer from the destination workload",
    Outcome.REFUSED: "no HTTP answer from the destination (connection refused, reset or closed)",
    Outcome.FORBIDDEN: "403 with body 'RBAC: access denied' from the destination's sidecar",
    Outcome.UNAUTHENTICATED: "401 from a proxy's JWT authentication (the token failed verification), not from the app",
    Outcome.UNAVAILABLE: "a 5xx from a proxy, or no answer: the destination could not be reached",
    Outcome.BLOCKED: "the destination never answered: 502 from the caller's sidecar, or no answer at all (the name "
                     "did not resolve, or the connection failed)",
}


def _matches(response: Response, outcome: Outcome) -> bool:
    if outcome is Outcome.OK:
        return response.ok and bool(response.echo)
    if outcome is Outcome.REFUSED:
        return response.status == 0
    if outcome is Outcome.FORBIDDEN:
        return response.status == 403 and response.body.strip() == "RBAC: access denied"
    if outcome is Outcome.BLOCKED:  # Istio's REGISTRY_ONLY route answers 502; DNS proxying fails the lookup
        return response.status == 0 or (response.status == 502 and not response.echo)
    if outcome is Outcome.UNAUTHENTICATED:
        return response.status == 401 and not response.echo
    return response.status == 0 or response.status >= 500


@expectation
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


@expectation
def expect_all_ok(result: CallResult) -> None:
    """Every call got a 2xx answer from the destination workload."""
    __tracebackhide__ = True
    expect_all(result, Outcome.OK)


@expectation
def expect_all_refused(result: CallResult) -> None:
    """No call got an HTTP answer (the destination refused, reset or closed the connection)."""
    __tracebackhide__ = True
    expect_all(result, Outcome.REFUSED)


@expectation
def expect_all_forbidden(result: CallResult) -> None:
    """Every call was denied by authorization policy: 403 ``RBAC: access denied``."""
    __tracebackhide__ = True
    expect_all(result, Outcome.FORBIDDEN)


@expectation
def expect_all_unavailable(result: CallResult) -> None:
    """Every call failed to reach the destination: a 5xx from a proxy, or no answer."""
    __tracebackhide__ = True
    expect_all(result, Outcome.UNAVAILABLE)


@expectation
def expect_all_blocked(result: CallResult) -> None:
    """No call reached the destination: the caller's sidecar answered 502, or the call got no answer at all
    (Istio: REGISTRY_ONLY's BlackHole route, or DNS proxying that does not resolve an unknown name)."""
    __tracebackhide__ = True
    expect_all(result, Outcome.BLOCKED)


@expectation
def expect_all_unauthenticated(result: CallResult) -> None:
    """Every call was rejected by RequestAuthentication: 401 from a proxy, the app never saw it."""
    __tracebackhide__ = True
    expect_all(result, Outcome.UNAUTHENTICATED)


@expectation
def expect_request_header(result: CallResult, name: str) -> None:
    """Every call reached the app, and the app received header ``name`` (set by a proxy on the way)."""
    __tracebackhide__ = True
    expect_all(result, Outcome.OK)
    missing = [r for r in result.responses if name.lower() not in r.request_headers]
    if missing:
        raise AssertionError(f"expected the app to receive header {name}; {len(missing)} of {len(result)} calls "
                             f"arrived without it\n{result.summary()}")


@expectation
def expect_counted(what: str, counted: int, expected: int) -> None:
    """A counter (an Envoy stat) moved by exactly ``expected``."""
    __tracebackhide__ = True
    if counted != expected:
        raise AssertionError(f"expected {what} to count {expected}, it counted {counted}")


@expectation
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


@expectation
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


@expectation
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


@expectation
def expect_answered_by_version(result: CallResult, versions: Iterable[str]) -> None:
    """Every call was answered by a workload of one of ``versions`` (its ``version`` label)."""
    __tracebackhide__ = True
    allowed = set(versions)
    expect_all(result, Outcome.OK)
    wrong = [r for r in result.responses if r.version not in allowed]
    if wrong:
        raise AssertionError(
            f"expected answers only from version {', '.join(sorted(allowed))}; {len(wrong)} of {len(result)} "
            f"came from {wrong[0].version} in {wrong[0].cluster}\n{result.summary()}"
        )


@expectation
def expect_within_budget(name: str, measured: float, limit: float, unit: str) -> None:
    """``measured`` <= ``limit``."""
    __tracebackhide__ = True
    if measured > limit:
        raise AssertionError(f"{name} was {measured:g} {unit}, over its budget of {limit:g} {unit}")


@expectation
def expect_share(result: CallResult, clusters: Iterable[str], at_least_pct: float) -> float:
    """At least ``at_least_pct`` % of the calls were answered (2xx) by ``clusters``; returns the share."""
    __tracebackhide__ = True
    wanted = set(clusters)
    served = sum(1 for r in result.responses if r.ok and r.cluster in wanted)
    share = 100.0 * served / max(1, len(result))
    if share < at_least_pct:
        raise AssertionError(
            f"expected at least {at_least_pct:g}% of calls answered by {', '.join(sorted(wanted))}; "
            f"got {share:.1f}%\n{result.summary()}"
        )
    return share


@expectation
def expect_workload_certificate(identity: ServedIdentity, spiffe_id: str, max_ttl_s: float) -> None:
    """The sidecar's certificate is an Istio workload identity: exactly one URI SAN ``spiffe_id``, a chain
    through an intermediate to a trusted root, validity within ``max_ttl_s``, and a strong key."""
    __tracebackhide__ = True
    leaf = identity.leaf
    if identity.uris != [spiffe_id]:
        raise AssertionError(f"expected exactly one URI SAN {spiffe_id}; the certificate has {identity.uris}")
    if len(identity.chain) < 2:
        raise AssertionError("expected the certificate to be issued by an intermediate CA, but the chain has only "
                             "the workload certificate")
    for child, parent in itertools.pairwise(identity.chain):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise AssertionError(f"certificate chain is broken: {child.subject} not issued by {parent.subject}: "
                                 f"{exc}") from None
    last = identity.chain[-1]
    if not any(_issued_by(last, root) for root in identity.roots):
        raise AssertionError(f"the chain ends at {last.issuer.rfc4514_string()!r}, which is not a trusted mesh root")
    ttl = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds()
    if ttl > max_ttl_s:
        raise AssertionError(f"workload certificate is valid for {ttl:g} s, over the {max_ttl_s:g} s budget")
    key = leaf.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise AssertionError(f"RSA key of {key.key_size} bits; at least 2048 expected")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 256:
        raise AssertionError(f"EC key of {key.curve.key_size} bits; at least 256 expected")
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise AssertionError(f"unexpected key type {type(key).__name__}; RSA >= 2048 or EC >= 256 expected")


def _issued_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    if cert == root:
        return True
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@expectation
def expect_no_failed_calls(timeline: Timeline, across: str) -> None:
    """Every call of continuous traffic succeeded, and calls kept flowing after the event ``across``."""
    __tracebackhide__ = True
    after = timeline.responses(after=timeline.events[across])
    if not after:
        raise AssertionError(f"no call was made after {across}: the traffic stopped, nothing was proven")
    failed = timeline.failures()
    if failed:
        raise AssertionError(
            f"{len(failed)} of {len(timeline)} calls failed across {across}, e.g. {failed[0].describe()}"
        )


@expectation
def expect_new_certificate(before_serial: int, after_serial: int) -> None:
    """A rotation replaced the certificate a sidecar serves."""
    __tracebackhide__ = True
    if before_serial == after_serial:
        raise AssertionError(f"the sidecar still serves certificate serial {before_serial:x} after the rotation")


@expectation
def expect_new_certificate_on_the_wire(timeline: Timeline, after: str, fingerprint: str, min_calls: int = 5) -> None:
    """Every call made after the event ``after`` (at least ``min_calls``) reached the server over a handshake
    with the client certificate whose SHA-256 is ``fingerprint``: the ``Hash`` of the current element of the
    x-forwarded-client-cert the server's app received (Envoy: the SHA-256 of the peer certificate's DER)."""
    __tracebackhide__ = True
    calls = timeline.responses(after=timeline.events[after])
    if len(calls) < min_calls:
        raise AssertionError(f"only {len(calls)} calls were made after {after}; at least {min_calls} expected")
    wrong = [r for r in calls if not r.ok or _xfcc_values(r, "hash")[-1:] != [fingerprint.lower()]]
    if wrong:
        seen = _xfcc_values(wrong[0], "hash") or wrong[0].describe()
        raise AssertionError(f"{len(wrong)} of {len(calls)} calls after {after} did not use the new client "
                             f"certificate (sha256 {fingerprint.lower()}) on the wire; e.g. the server saw {seen}")


def _xfcc_values(response: Response, key: str) -> list[str]:
    """The values of ``key`` (e.g. ``hash``, ``uri``) in each element of the x-forwarded-client-cert the
    answering app received, oldest first; the last is the hop that reached it. Quoted values may hold ``,``
    and ``;`` (Envoy's XFCC grammar)."""
    found = []
    for element in _split_quoted(response.request_headers.get("x-forwarded-client-cert", ""), ","):
        for pair in _split_quoted(element, ";"):
            name, _, value = pair.partition("=")
            if name.strip().lower() == key:
                found.append(value.strip().strip('"').lower() if key == "hash" else value.strip().strip('"'))
    return found


def _split_quoted(text: str, separator: str) -> list[str]:
    parts, current, quoted, escaped = [], "", False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(current)
            current = ""
            continue
        current += char
    return [p for p in (*parts, current) if p.strip()]


@expectation
def expect_reached_clusters(result: CallResult, clusters: Iterable[str]) -> None:
    """Every call succeeded and every one of ``clusters`` answered at least one (Istio's ReachedClusters)."""
    __tracebackhide__ = True
    expect_all(result, Outcome.OK)
    missing = sorted(set(clusters) - set(result.clusters()))
    if missing:
        raise AssertionError(f"no call reached {', '.join(missing)}; answered by {dict(result.clusters())}\n"
                             f"{result.summary()}")


@expectation
def expect_failover(timeline: Timeline, event: str, to_cluster: str, max_errors: int, max_shift_s: float,
                    max_relapse_s: float | None = None, settle: int = 5) -> None:
    """After ``event``, traffic moved to ``to_cluster`` within ``max_shift_s`` (the first of ``settle`` calls in
    a row answered there) with at most ``max_errors`` failed calls on the way, and the window ended with calls
    answered there.

    Later failures are a pod that keeps failing, re-admitted after its ejection time and ejected again. With
    ``max_relapse_s`` each such run of failed calls may last that long (``Budgets.readmission_failing_s``);
    without it every later failure counts against ``max_errors`` too."""
    __tracebackhide__ = True
    since = timeline.events[event]
    after = timeline.responses(after=since)
    shift = timeline.reached(event, to_cluster, settle)
    if shift is None:
        served = {r.cluster for r in after[-10:]}
        raise AssertionError(f"traffic never moved to {to_cluster} after {event}: the last calls were answered by "
                             f"{served or 'nobody'} ({sum(not r.ok for r in after)} of {len(after)} calls failed)")
    if shift > max_shift_s:
        raise AssertionError(f"traffic moved to {to_cluster} {shift:.2f} s after {event}, over the "
                             f"{max_shift_s:g} s budget")
    relapses = [(a, b) for a, b in timeline.failing_spells(event) if a >= since + shift]
    errors = sum(1 for r in timeline.responses(after=since, before=since + shift) if not r.ok)
    if max_relapse_s is None:
        errors += sum(1 for r in timeline.responses(after=since + shift) if not r.ok)
    if errors > max_errors:
        raise AssertionError(f"{errors} calls failed after {event}, over the budget of {max_errors}")
    longest = max(relapses, key=lambda spell: spell[1] - spell[0], default=None)
    if max_relapse_s is not None and longest is not None and longest[1] - longest[0] > max_relapse_s:
        raise AssertionError(f"after traffic had moved to {to_cluster}, calls failed again for "
                             f"{longest[1] - longest[0]:.2f} s from {longest[0] - since:.2f} s after {event}, over "
                             f"the {max_relapse_s:g} s budget")
    last = after[-settle:]
    if not all(r.ok and r.cluster == to_cluster for r in last):
        raise AssertionError(f"traffic did not stay in {to_cluster} after {event}: the last calls were "
                             f"{', '.join(r.describe() for r in last)}")


@expectation
def expect_fails_fast(result: CallResult, within_s: float) -> None:
    """Every call failed (the destination is unreachable), and none took longer than ``within_s``: no hang."""
    __tracebackhide__ = True
    expect_all(result, Outcome.UNAVAILABLE)
    slowest = max(r.latency_us for r in result.responses) / 1e6
    hung = [r for r in result.responses if r.error == "timeout"]
    if hung:
        raise AssertionError(f"{len(hung)} of {len(result)} calls to an unreachable destination hung until the "
                             f"caller gave up after {slowest:.2f} s: the mesh did not fail them")
    if slowest > within_s:
        raise AssertionError(f"calls to an unreachable destination took up to {slowest:.2f} s to fail, "
                             f"over the {within_s:g} s budget: they hang instead of failing fast")


@expectation
def expect_all_status(result: CallResult, status: int) -> None:
    """Every call got HTTP ``status`` (from a proxy or the destination)."""
    __tracebackhide__ = True
    wrong = [r for r in result.responses if r.status != status]
    if not result.responses or wrong:
        example = wrong[0].describe() if wrong else "no call was made"
        raise AssertionError(f"expected every call to get {status}; {len(wrong)} of {len(result)} did not, "
                             f"e.g. {example}\n{result.summary()}")


def _worst_seconds(result: LoadResult, count: int = 3) -> str:
    worst = sorted((s for s in result.timeline if s.requests), key=lambda s: s.p99_us, reverse=True)[:count]
    return ", ".join(f"t={s.at_s}s p99 {s.p99_us / 1000:.3f} ms ({s.errors} errors)" for s in worst) or "none"


@expectation
def expect_latency_within(result: LoadResult, percentile: str, budget_ms: float) -> None:
    """The ``percentile`` (``p50`` ... ``p99.9``, ``max``) latency of a load run is at most ``budget_ms``."""
    __tracebackhide__ = True
    measured = result.percentile_ms(percentile)
    if measured > budget_ms:
        raise AssertionError(
            f"{percentile} latency of {result.label} under {result.target_rps:g} rps was {measured:.3f} ms, "
            f"over its budget of {budget_ms:g} ms\n  {result.summary()}\n  slowest seconds: {_worst_seconds(result)}")


@expectation
def expect_error_rate_within(result: LoadResult, budget_pct: float) -> None:
    """At most ``budget_pct`` % of a load run's requests failed (non-2xx/3xx, or no answer)."""
    __tracebackhide__ = True
    if result.error_rate_pct > budget_pct:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(result.error_kinds.items(), key=lambda kv: -kv[1])[:3])
        raise AssertionError(
            f"{result.errors} of {result.requests} requests of {result.label} failed "
            f"({result.error_rate_pct:.3f}%, budget {budget_pct:g}%): {kinds or 'no detail'}\n  {result.summary()}")


@expectation
def expect_overhead_within(mesh: LoadResult, direct: LoadResult, percentile: str, budget_ms: float) -> None:
    """The mesh path's ``percentile`` latency exceeds the direct path's by at most ``budget_ms``."""
    __tracebackhide__ = True
    overhead = mesh.percentile_ms(percentile) - direct.percentile_ms(percentile)
    if overhead > budget_ms:
        raise AssertionError(
            f"the mesh added {overhead:.3f} ms at {percentile} ({mesh.percentile_ms(percentile):.3f} ms through "
            f"the mesh, {direct.percentile_ms(percentile):.3f} ms direct), over its budget of {budget_ms:g} ms"
            f"\n  {mesh.summary()}\n  {direct.summary()}")


@expectation
def expect_latency_saving(faster: LoadResult, slower: LoadResult, percentile: str, at_least_ms: float) -> None:
    """``faster``'s ``percentile`` latency is below ``slower``'s by at least ``at_least_ms``."""
    __tracebackhide__ = True
    saving = slower.percentile_ms(percentile) - faster.percentile_ms(percentile)
    if saving < at_least_ms:
        raise AssertionError(
            f"{faster.label} saved {saving:.3f} ms at {percentile} against {slower.label} "
            f"({faster.percentile_ms(percentile):.3f} ms vs {slower.percentile_ms(percentile):.3f} ms); "
            f"at least {at_least_ms:g} ms expected"
        )


# -- the control planes' lifecycle ----------------------------------------------------------------------------


@expectation
def expect_remote_cluster_synced(status: ControlPlaneStatus, cluster: str) -> None:
    """The control plane lists ``cluster`` as ``synced`` (``istioctl remote-clusters``)."""
    __tracebackhide__ = True
    found = status.status_of(cluster)
    if found != "synced":
        raise AssertionError(f"{cluster} is {found or 'not listed'}, not synced: {status.describe()}")


@expectation
def expect_remote_cluster_unsynced(status: ControlPlaneStatus, cluster: str) -> None:
    """The control plane no longer lists ``cluster`` as ``synced`` (its secret is broken: syncing, timeout)."""
    __tracebackhide__ = True
    if status.status_of(cluster) == "synced":
        raise AssertionError(f"{cluster} is still synced: {status.describe()}")


@expectation
def expect_control_plane_ready(status: ControlPlaneStatus) -> None:
    """The control plane is ready (serves its proxies)."""
    __tracebackhide__ = True
    if not status.ready:
        raise AssertionError(f"the control plane is not ready: {status.describe()}")


@expectation
def expect_endpoints_kept(samples: Sequence[tuple[float, int]], baseline: int, during: str) -> None:
    """A client's sidecar held at least ``baseline`` endpoints of the service at every read (``samples``:
    seconds, endpoints) made ``during`` something: no push left any of them out, even for a moment."""
    __tracebackhide__ = True
    if not samples:
        raise AssertionError(f"the client's endpoints were never read during {during}: nothing was proven")
    low = min(samples, key=lambda s: (s[1], s[0]))
    if low[1] < baseline:
        short = [s for s in samples if s[1] < baseline]
        raise AssertionError(f"during {during} the client's sidecar held {low[1]} of the service's {baseline} "
                             f"endpoints ({low[0]:.2f} s in; {len(short)} of {len(samples)} reads were short, "
                             f"from {short[0][0]:.2f} s to {short[-1][0]:.2f} s): a push left them out")


@expectation
def expect_connections_kept(held: HeldConnections, during: str) -> None:
    """Every held keep-alive connection lasted through ``during``: none replaced, no call failed on one."""
    __tracebackhide__ = True
    if not held.calls:
        raise AssertionError(f"no call was made on the held connections during {during}: nothing was proven")
    if held.lost or held.failed_calls:
        raise AssertionError(f"keep-alive connections were lost during {during}: {held.opened} were opened for "
                             f"{held.held} held ({held.lost} replaced or failed), {held.failed_calls} of "
                             f"{len(held.calls)} calls failed; errors: {held.errors() or 'none'}")


@expectation
def expect_both_roots_trusted(identity: ServedIdentity, roots: TrustRoots, workload: str, step: str) -> None:
    """Before the step that removes it, ``workload``'s proxy still trusts the old root beside the new one: Istio's
    root migration keeps the combined root in ``root-cert.pem`` through the step that re-signs the workloads
    (tests/integration/security/cacert_rotation: ``root-cert-combined.pem``, then ``root-cert-combined-2.pem``),
    so peers whose certificates are not yet re-signed are still accepted."""
    __tracebackhide__ = True
    new = x509.load_pem_x509_certificate(roots.new_root)
    old = x509.load_pem_x509_certificate(roots.old_root)
    missing = [name for name, root in (("old", old), ("new", new)) if root not in identity.roots]
    if missing:
        raise AssertionError(f"after step {step} the proxy of {workload} does not trust the "
                             f"{' and the '.join(missing)} root ({len(identity.roots)} roots trusted): peers still "
                             f"holding certificates of the other root are refused until they are re-signed")


@expectation
def expect_chain_moved_to_new_root(identity: ServedIdentity, roots: TrustRoots, workload: str) -> None:
    """After a root migration ``workload``'s certificate chain ends at the new root, and the old root is no longer
    among the roots its proxy trusts."""
    __tracebackhide__ = True
    new = x509.load_pem_x509_certificate(roots.new_root)
    old = x509.load_pem_x509_certificate(roots.old_root)
    last = identity.chain[-1]
    if not _issued_by(last, new):
        raise AssertionError(f"{workload}'s certificate chain ends at {last.issuer.rfc4514_string()!r}, not at the "
                             f"new root {new.subject.rfc4514_string()!r}")
    if old in identity.roots:
        raise AssertionError(f"{workload}'s proxy still trusts the old root {old.subject.rfc4514_string()!r} "
                             f"({len(identity.roots)} roots trusted)")
    if new not in identity.roots:
        raise AssertionError(f"{workload}'s proxy does not trust the new root {new.subject.rfc4514_string()!r}")
