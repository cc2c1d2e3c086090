"""LoadResult: what one load run measured, whatever generated it (Locust, or a probe's paced forward).

Latencies are exact to 0.1%: every request's own timing, in microseconds, recorded into an HDR histogram
with 3 significant digits (never Locust's rounded statistics, which cannot resolve sub-millisecond figures).
The histogram travels encoded (a few KB), so the results of several generator processes merge exactly.
Only requests that *started* inside the measured window count; the warm-up before it is excluded.
Percentiles cover every request of the window, failed ones included (a timeout is a slow request too).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from hdrh.histogram import HdrHistogram

from conformance.errors import EnvironmentBroken

__all__ = [
    "PERCENTILES",
    "LoadEvent",
    "LoadResult",
    "LoadShortfall",
    "Second",
    "decode_histogram",
    "encode_histogram",
    "histogram_of",
    "merge_histograms",
    "new_histogram",
    "timeline_of",
]

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p99.9", 99.9))
"""The percentiles every LoadResult carries: (name, percentile)."""


def new_histogram() -> HdrHistogram:
    """An empty histogram: 1 µs to 60 s, 3 significant digits (the same in the locustfile)."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def histogram_of(latencies_us: Iterable[int]) -> HdrHistogram:
    """A histogram of raw latencies in microseconds (clamped to 1 µs .. 60 s)."""
    histogram = new_histogram()
    for value in latencies_us:
        histogram.record_value(min(max(int(value), LOWEST_US), HIGHEST_US))
    return histogram


def encode_histogram(histogram: HdrHistogram) -> str:
    """The HDR histogram's standard compressed, base64 encoding."""
    encoded: bytes = histogram.encode()
    return encoded.decode("ascii")


def decode_histogram(encoded: str) -> HdrHistogram:
    histogram = new_histogram()
    if encoded:
        histogram.decode_and_add(encoded)
    return histogram


def merge_histograms(encoded: Iterable[str]) -> HdrHistogram:
    """One histogram holding every value of several encoded ones (e.g. one per generator process)."""
    merged = new_histogram()
    for item in encoded:
        if item:
            merged.decode_and_add(item)
    return merged


@dataclass(frozen=True)
class Second:
    """One second of the measured window (``at_s`` from its start): requests started in it, and their latency."""

    at_s: int
    requests: int
    errors: int
    p50_us: int
    p99_us: int


@dataclass(frozen=True)
class LoadEvent:
    """Something that happened during a run (a fault, a failover), on the window's time axis."""

    at_s: float
    label: str


def timeline_of(seconds: Mapping[int, tuple[int, int, HdrHistogram]], window_s: float) -> tuple[Second, ...]:
    """Per-second figures from ``{second: (requests, errors, histogram)}``; seconds without requests show 0."""
    count = max(math.ceil(window_s - 1e-9), max(seconds, default=-1) + 1)
    timeline = []
    for at in range(count):
        requests, errors, histogram = seconds.get(at, (0, 0, None))
        p50 = int(histogram.get_value_at_percentile(50.0)) if histogram is not None and requests else 0
        p99 = int(histogram.get_value_at_percentile(99.0)) if histogram is not None and requests else 0
        timeline.append(Second(at, requests, errors, p50, p99))
    return tuple(timeline)


@dataclass(frozen=True)
class LoadResult:
    """One load run's measured window: exact percentiles (µs), rate, errors, a per-second timeline."""

    label: str
    """What was loaded, in words, e.g. ``mesh path: client sidecar -> server``."""
    generator: str
    """``locust`` or ``probe-forward``."""
    target: str
    """Where requests went, e.g. ``http://127.11.128.3:15001 Host: server.ns.svc.cluster.local:8080``."""
    target_rps: float
    users: int
    warmup_s: float
    window_s: float
    """Length of the measured window."""
    requests: int
    """Requests started in the window (answered, failed or timed out)."""
    errors: int
    """Requests without a 2xx/3xx answer."""
    p50_us: int
    p90_us: int
    p95_us: int
    p99_us: int
    p999_us: int
    max_us: int
    min_us: int
    mean_us: float
    histogram: str
    """The encoded HDR histogram of every request in the window."""
    generator_cpu_pct: float
    """The busiest generator process's CPU time over the window, in % of one core."""
    error_kinds: Mapping[str, int] = field(default_factory=dict)
    timeline: tuple[Second, ...] = ()
    events: tuple[LoadEvent, ...] = ()
    artifacts: Mapping[str, str] = field(default_factory=dict)
    """Files this run left: ``{"locust-html": path, "latency-histogram": path.png, ...}``."""

    @classmethod
    def from_histogram(
        cls, histogram: HdrHistogram, *, label: str, generator: str, target: str, target_rps: float,
        users: int, warmup_s: float, window_s: float, errors: int, generator_cpu_pct: float,
        error_kinds: Mapping[str, int] | None = None, timeline: tuple[Second, ...] = (),
        events: tuple[LoadEvent, ...] = (), artifacts: Mapping[str, str] | None = None,
    ) -> LoadResult:
        requests = int(histogram.get_total_count())
        figures = {name: int(histogram.get_value_at_percentile(p)) if requests else 0 for name, p in PERCENTILES}
        return cls(
            label=label, generator=generator, target=target, target_rps=target_rps, users=users,
            warmup_s=warmup_s, window_s=window_s, requests=requests, errors=errors,
            p50_us=figures["p50"], p90_us=figures["p90"], p95_us=figures["p95"], p99_us=figures["p99"],
            p999_us=figures["p99.9"], max_us=int(histogram.get_max_value()) if requests else 0,
            min_us=int(histogram.get_min_value()) if requests else 0,
            mean_us=float(histogram.get_mean_value()) if requests else 0.0,
            histogram=encode_histogram(histogram), generator_cpu_pct=round(generator_cpu_pct, 1),
            error_kinds=dict(error_kinds or {}), timeline=timeline, events=events, artifacts=dict(artifacts or {}),
        )

    # -- figures ---------------------------------------------------------------------------------------------

    @property
    def achieved_rps(self) -> float:
        return self.requests / self.window_s if self.window_s > 0 else 0.0

    @property
    def rate_pct(self) -> float:
        """Achieved rate as a percentage of the target."""
        return 100.0 * self.achieved_rps / self.target_rps if self.target_rps > 0 else 0.0

    @property
    def edge_allowance_pct(self) -> float:
        """How much of the rate the window's edges can hide: each paced user may lose one call to them."""
        return 100.0 * self.users / (self.target_rps * self.window_s) if self.target_rps and self.window_s else 0.0

    @property
    def error_rate_pct(self) -> float:
        return 100.0 * self.errors / self.requests if self.requests else 0.0

    def percentile_us(self, name: str) -> int:
        """A figure by name: ``p50`` ``p90`` ``p95`` ``p99`` ``p99.9`` ``max`` ``min``."""
        figures = {"p50": self.p50_us, "p90": self.p90_us, "p95": self.p95_us, "p99": self.p99_us,
                   "p99.9": self.p999_us, "max": self.max_us, "min": self.min_us}
        if name not in figures:
            raise KeyError(f"no figure {name!r}; known: {', '.join(figures)}")
        return figures[name]

    def percentile_ms(self, name: str) -> float:
        return self.percentile_us(name) / 1000

    def decoded_histogram(self) -> HdrHistogram:
        return decode_histogram(self.histogram)

    def shortfall(self, min_rate_pct: float, max_generator_cpu_pct: float) -> str | None:
        """Why this run cannot stand for the rate that was asked, or None when it can."""
        if self.requests == 0:
            return f"the load generator made no request in the {self.window_s:g} s window"
        reasons = []
        cpu_bound = self.generator_cpu_pct > max_generator_cpu_pct
        if self.rate_pct + self.edge_allowance_pct < min_rate_pct:
            reasons.append(f"the load generator reached {self.achieved_rps:.1f} rps of the {self.target_rps:g} rps "
                           f"asked ({self.rate_pct:.1f}%, below {min_rate_pct:g}%)")
            period_ms = 1000 * self.users / self.target_rps
            # each user waits for its answer before its next call (unless the generator itself is the queue)
            if self.mean_us / 1000 > period_ms / 2 and not cpu_bound:
                reasons.append(f"its {self.users} users were waiting on slow answers (mean "
                               f"{self.mean_us / 1000:.1f} ms against {period_ms:.1f} ms between one user's calls): "
                               f"raise --load users")
        if cpu_bound:
            reasons.append(f"the load generator was CPU-bound: {self.generator_cpu_pct:.0f}% of a core "
                           f"(above {max_generator_cpu_pct:g}%), so its timings include its own queueing")
        return "; ".join(reasons) or None

    # -- records ---------------------------------------------------------------------------------------------

    def with_events(self, events: Iterable[LoadEvent]) -> LoadResult:
        return replace(self, events=tuple(sorted((*self.events, *events), key=lambda e: e.at_s)))

    def with_artifacts(self, **paths: str) -> LoadResult:
        return replace(self, artifacts={**self.artifacts, **{k.replace("_", "-"): v for k, v in paths.items()}})

    def summary(self) -> str:
        """One line of every figure, for messages and logs."""
        figures = ", ".join(f"{name} {self.percentile_ms(name):.3f} ms" for name, _ in PERCENTILES)
        return (f"{self.label}: {self.requests} requests in {self.window_s:.1f} s = {self.achieved_rps:.1f} rps "
                f"({self.rate_pct:.1f}% of {self.target_rps:g}), errors {self.errors} ({self.error_rate_pct:.2f}%), "
                f"{figures}, max {self.max_us / 1000:.3f} ms; generator {self.generator} "
                f"at {self.generator_cpu_pct:.0f}% of a core")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["achieved_rps"] = round(self.achieved_rps, 2)
        data["error_rate_pct"] = round(self.error_rate_pct, 4)
        return data

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadResult:
        values = {k: v for k, v in data.items() if k not in ("achieved_rps", "error_rate_pct")}
        values["timeline"] = tuple(Second(**s) for s in values.get("timeline", ()))
        values["events"] = tuple(LoadEvent(**e) for e in values.get("events", ()))
        return cls(**values)


class LoadShortfall(EnvironmentBroken):
    """A load run did not reach its target rate (or its generator was CPU-bound): its latencies are those of
    another load than the one asked, so no verdict. ``result`` holds what was measured anyway."""

    def __init__(self, message: str, result: LoadResult | None = None) -> None:
        super().__init__(message)
        self.result = result
