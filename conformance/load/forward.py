"""East-west load from inside the mesh: a probe's ``/forward`` in rate mode, through the provider.

The calls leave from a real workload (its sidecar, identity and locality), paced by the probe at
``rate_rps`` over ``users`` connections. The warm-up is a forward of its own before the measured one, so
nothing of it reaches the measurement; the measured forward answers with every call's latency, start and
status (``summary: true``), which become the same LoadResult a Locust run gives.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from conformance.errors import ProviderError, UsageError
from conformance.load.profile import ForwardTarget, LoadProfile
from conformance.load.result import LoadResult, histogram_of, new_histogram, timeline_of
from conformance.provider import Provider

__all__ = ["run_forward_load"]

MAX_CALLS = 100_000
"""The probe's limit for one forward."""


def run_forward_load(mesh: Provider, target: ForwardTarget, profile: LoadProfile,
                     on_window_open: Callable[[], None] | None = None) -> LoadResult:
    """Load ``target.url`` from ``target.source`` at ``profile``'s rate; the measured window's result.
    ``on_window_open`` is called just before the measured forward is sent (after the warm-up).

    Raises LoadShortfall (carrying the result) when the probe could not produce the rate, ProviderError
    when the probe's answer is not a rate-mode summary, UsageError when the run needs too many calls.
    """
    if profile.rate_rps * profile.duration_s > MAX_CALLS:
        raise UsageError(f"a forward load run makes at most {MAX_CALLS} calls; {profile.rate_rps:g} rps for "
                         f"{profile.duration_s:g} s is more (shorten duration_s)")
    request: dict[str, Any] = {
        "url": target.url, "headers": dict(target.headers), "rate": profile.rate_rps,
        "concurrency": profile.users, "timeout_ms": profile.timeout_s * 1000, "summary": True, "body_limit": 200,
    }
    if profile.warmup_s > 0:
        mesh.forward(target.source, {**request, "duration_ms": profile.warmup_s * 1000,
                                     "max_duration_ms": (profile.warmup_s + profile.timeout_s + 5) * 1000})
    if on_window_open is not None:
        on_window_open()
    answer = mesh.forward(target.source, {**request, "duration_ms": profile.duration_s * 1000,
                                          "max_duration_ms": (profile.duration_s + profile.timeout_s + 5) * 1000})
    result = result_of_forward(answer, profile, label=target.label or f"{target.source.service} -> {target.url}",
                               target=str(target))
    profile.require_rate(result)
    return result


def result_of_forward(answer: Any, profile: LoadProfile, *, label: str, target: str) -> LoadResult:
    """A LoadResult from a probe's rate-mode summary answer (every call started inside the window)."""
    try:
        latencies = [int(v) for v in answer["latenciesUs"]]
        started = [int(v) for v in answer["startedUs"]]
        statuses = [int(v) for v in answer["callStatuses"]]
        duration_us = int(answer["durationUs"])
    except (KeyError, TypeError, ValueError):
        raise ProviderError(f"the probe's forward answer is not a rate-mode summary with callStatuses "
                            f"(an older probe?): {str(answer)[:200]}") from None
    if not len(latencies) == len(started) == len(statuses):
        raise ProviderError("the probe's forward summary lists differ in length")
    window_s = profile.duration_s
    seconds: dict[int, list[Any]] = {}
    errors = 0
    kinds: Counter[str] = Counter()
    for latency, start, status in zip(latencies, started, statuses, strict=True):
        second = seconds.setdefault(min(int(start // 1_000_000), math.ceil(window_s) - 1), [0, 0, new_histogram()])
        second[0] += 1
        second[2].record_value(max(1, latency))
        if status == 0 or status >= 400:
            errors += 1
            second[1] += 1
            if status:
                kinds[f"HTTP {status}"] += 1
    kinds.update({str(k): int(v) for k, v in (answer.get("errors") or {}).items()})
    cpu_pct = 100.0 * int(answer.get("cpuUs") or 0) / max(duration_us, 1)
    return LoadResult.from_histogram(
        histogram_of(latencies), label=label, generator="probe-forward", target=target,
        target_rps=profile.rate_rps, users=profile.users, warmup_s=profile.warmup_s, window_s=window_s,
        errors=errors, generator_cpu_pct=cpu_pct, error_kinds=kinds,
        timeline=timeline_of({k: (v[0], v[1], v[2]) for k, v in seconds.items()}, window_s),
    )
