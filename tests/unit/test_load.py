"""The pure parts of conformance.load: histograms, percentiles, LoadResult, shortfall, profiles, plots."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.errors import EnvironmentBroken, UsageError
from conformance.expect import expect_error_rate_within, expect_latency_within, expect_overhead_within
from conformance.load import HttpTarget, LoadEvent, LoadProfile, LoadResult, LoadShortfall
from conformance.load.forward import result_of_forward
from conformance.load.result import (
    decode_histogram,
    encode_histogram,
    histogram_of,
    merge_histograms,
    new_histogram,
    timeline_of,
)
from conformance.providers import build_config

UNIFORM = range(1, 100_001)
"""Every latency from 1 µs to 100 ms once: the exact p-th percentile is p * 1000 µs."""


def result_of(latencies_us: list[int] | range, *, errors: int = 0, target_rps: float = 100.0, users: int = 10,
              window_s: float = 10.0, cpu: float = 10.0, label: str = "path") -> LoadResult:
    return LoadResult.from_histogram(
        histogram_of(latencies_us), label=label, generator="locust", target="http://127.0.0.1:1/",
        target_rps=target_rps, users=users, warmup_s=1.0, window_s=window_s, errors=errors, generator_cpu_pct=cpu)


@pytest.mark.parametrize(("percentile", "exact_us"), [(50.0, 50_000), (90.0, 90_000), (99.0, 99_000),
                                                      (99.9, 99_900), (100.0, 100_000)])
def test_percentiles_are_exact_to_a_tenth_of_a_percent(percentile: float, exact_us: int) -> None:
    histogram = histogram_of(UNIFORM)
    assert histogram.get_total_count() == 100_000
    assert abs(histogram.get_value_at_percentile(percentile) - exact_us) <= exact_us * 0.001


def test_merged_histograms_equal_the_whole() -> None:
    values = list(UNIFORM)
    parts = [encode_histogram(histogram_of(values[i::3])) for i in range(3)]
    merged = merge_histograms(parts)
    whole = histogram_of(values)
    assert merged.get_total_count() == whole.get_total_count()
    for percentile in (50.0, 90.0, 99.0, 99.9):
        assert merged.get_value_at_percentile(percentile) == whole.get_value_at_percentile(percentile)
    assert all(len(p) < 20_000 for p in parts)  # encoded: a few KB
    assert decode_histogram("").get_total_count() == 0


def test_values_are_clamped_to_the_histogram_range() -> None:
    histogram = histogram_of([0, -5, 120_000_000])
    assert histogram.get_min_value() == 1
    assert histogram.get_max_value() >= 60_000_000 * 0.999


def test_load_result_figures_and_json_round_trip() -> None:
    result = result_of(UNIFORM, errors=50, target_rps=10_000).with_events([LoadEvent(3.0, "failover")])
    assert result.requests == 100_000
    assert abs(result.p50_us - 50_000) <= 50 and abs(result.p999_us - 99_900) <= 100
    assert result.percentile_ms("p99") == pytest.approx(99.0, rel=0.001)
    assert result.achieved_rps == 10_000 and result.rate_pct == 100.0
    assert result.error_rate_pct == 0.05
    assert result.min_us == 1 and result.max_us >= 99_900
    again = LoadResult.from_dict(json.loads(result.to_json()))
    assert again == result
    assert again.events == (LoadEvent(3.0, "failover"),)
    assert "p99 99.0" in result.summary()
    with pytest.raises(KeyError, match="known"):
        result.percentile_us("p42")


def test_timeline_fills_seconds_without_requests() -> None:
    first, third = new_histogram(), new_histogram()
    for value in (100, 200, 300):
        first.record_value(value)
    third.record_value(5_000)
    timeline = timeline_of({0: (3, 1, first), 2: (1, 0, third)}, window_s=4.0)
    assert [(s.at_s, s.requests, s.errors) for s in timeline] == [(0, 3, 1), (1, 0, 0), (2, 1, 0), (3, 0, 0)]
    assert timeline[0].p50_us == 200 and timeline[1].p99_us == 0
    assert 4_995 <= timeline[2].p99_us <= 5_005


@pytest.mark.parametrize(
    ("requests", "cpu", "message"),
    [
        (1000, 10.0, None),                  # 100%
        (990, 10.0, None),                   # 99%: within 2% of the target
        (975, 10.0, None),                   # 97.5%, but 10 users may each lose one call to the window edges
        (960, 10.0, r"reached 96.0 rps of the 100 rps asked \(96.0%, below 98%\)"),
        (1000, 95.0, r"CPU-bound: 95% of a core \(above 90%\)"),
        (0, 10.0, "made no request"),
    ],
)
def test_shortfall(requests: int, cpu: float, message: str | None) -> None:
    result = result_of([500] * requests, target_rps=100, cpu=cpu)
    reason = result.shortfall(min_rate_pct=98.0, max_generator_cpu_pct=90.0)
    if message is None:
        assert reason is None
    else:
        assert reason is not None
        assert re.search(message, reason), reason


def test_shortfall_says_when_users_waited_on_slow_answers() -> None:
    slow = result_of([80_000] * 500, target_rps=100, users=10)  # 80 ms answers, 100 ms between a user's calls
    reason = slow.shortfall(98.0, 90.0)
    assert reason is not None and "waiting on slow answers" in reason and "raise --load users" in reason


def test_require_rate_raises_load_shortfall_with_the_result() -> None:
    profile = LoadProfile.from_config(build_config(), rate_rps=100, duration_s=10)
    short = result_of([500] * 500, target_rps=100)
    with pytest.raises(LoadShortfall, match="no latency verdict") as caught:
        profile.require_rate(short)
    assert isinstance(caught.value, EnvironmentBroken)  # broken, never failed or passed
    assert caught.value.result is short
    profile.require_rate(result_of([500] * 1000, target_rps=100))


def test_profile_defaults_come_from_the_run_config_and_can_be_overridden() -> None:
    config = build_config(load_overrides=["rate_rps=300", "users=6"], timeout_overrides=["call_timeout_s=1.5"])
    profile = LoadProfile.from_config(config)
    assert (profile.rate_rps, profile.users, profile.timeout_s) == (300.0, 6, 1.5)
    assert profile.per_user_rps == 50.0
    assert LoadProfile.from_config(config, rate_rps=20, users=None).rate_rps == 20  # None: keep the setting
    with pytest.raises(UsageError, match="unknown load profile field 'rps'"):
        LoadProfile.from_config(config, rps=5)
    with pytest.raises(UsageError, match="users >= 1"):
        profile.but(users=0)


def test_http_target() -> None:
    target = HttpTarget("127.11.128.3", 15001, host="server.ns.svc.cluster.local:8080", path="/x")
    assert target.base_url == "http://127.11.128.3:15001"
    assert str(target) == "http://127.11.128.3:15001/x Host: server.ns.svc.cluster.local:8080"
    with pytest.raises(UsageError, match="path must start"):
        HttpTarget("127.0.0.1", 80, path="x")


def test_result_of_a_probe_forward_summary() -> None:
    profile = LoadProfile.from_config(build_config(), rate_rps=4, users=1, duration_s=2, warmup_s=0)
    answer = {"latenciesUs": [100, 200, 300, 40_000, 500], "startedUs": [0, 250_000, 500_000, 1_000_000, 1_999_999],
              "callStatuses": [200, 200, 503, 0, 200], "statuses": {"200": 3, "503": 1, "0": 1},
              "errors": {"timeout": 1}, "durationUs": 2_000_000, "cpuUs": 100_000, "truncated": False}
    result = result_of_forward(answer, profile, label="client -> server", target="url")
    assert (result.requests, result.errors, result.generator) == (5, 2, "probe-forward")
    assert dict(result.error_kinds) == {"HTTP 503": 1, "timeout": 1}
    assert result.generator_cpu_pct == 5.0
    assert [(s.requests, s.errors) for s in result.timeline] == [(3, 1), (2, 1)]
    with pytest.raises(EnvironmentBroken, match="callStatuses"):
        result_of_forward({"latenciesUs": [1]}, profile, label="x", target="y")


def test_expect_helpers_decide_with_assertion_errors_only() -> None:
    direct = result_of([100] * 1000, label="direct")
    mesh = result_of([600] * 980 + [9_000] * 20, label="mesh", errors=1)
    expect_latency_within(mesh, "p50", 1.0)
    expect_overhead_within(mesh, direct, "p50", 1.0)
    with pytest.raises(AssertionError, match=r"p99 latency of mesh under 100 rps was 9\.0\d+ ms, over its budget"):
        expect_latency_within(mesh, "p99", 5.0)
    with pytest.raises(AssertionError, match=r"the mesh added 8\.9\d+ ms at p99"):
        expect_overhead_within(mesh, direct, "p99", 5.0)
    with pytest.raises(AssertionError, match=r"1 of 1000 requests of mesh failed \(0\.100%, budget 0%\)"):
        expect_error_rate_within(mesh, 0.0)
    expect_error_rate_within(mesh, 0.1)


def test_plots_are_pngs(tmp_path: Path) -> None:
    from conformance.load.plots import plot_histogram, plot_timeline

    first = new_histogram()
    first.record_value(400)
    timeline = timeline_of({0: (1, 0, first), 1: (1, 1, first)}, 2.0)
    mesh = LoadResult.from_histogram(histogram_of([400, 500, 900]), label="mesh", generator="locust", target="t",
                                     target_rps=1, users=1, warmup_s=0, window_s=2, errors=1, generator_cpu_pct=1,
                                     timeline=timeline, events=(LoadEvent(1.2, "failover"),))
    for path in (plot_histogram([mesh, result_of([100, 200], label="direct")], tmp_path / "h.png"),
                 plot_timeline([mesh], tmp_path / "t.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_importing_conformance_loads_neither_locust_nor_matplotlib() -> None:
    code = ("import sys, conformance, conformance.load, conformance.scenario; "
            "print(sorted(m for m in ('locust', 'gevent', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


def test_a_cpu_bound_generator_is_named_as_the_cause() -> None:
    saturated = result_of([80_000] * 500, target_rps=100, users=10, cpu=99.0)
    reason = saturated.shortfall(98.0, 90.0)
    assert reason is not None and "CPU-bound: 99% of a core" in reason and "reached 50.0 rps" in reason
    assert "raise --load users" not in reason  # its users wait on the generator itself
