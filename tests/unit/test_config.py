from pathlib import Path

import pytest

from conformance.config import RunConfig, parse_overrides
from conformance.errors import UsageError
from conformance.providers import build_config, provider_settings


def test_defaults() -> None:
    config = build_config()
    assert config.provider == "local"
    assert config.topology == "multi-primary"
    assert config.timeouts.consistency_s == 30.0
    assert config.budgets.authz_propagation_s == 10.0


def test_flags_override_profile_override_defaults(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("topology: multi-network\nbudgets: {in_cluster_p99_ms: 7}\ntimeouts: {consistency_s: 5}\n")
    config = build_config(profile=profile, budget_overrides=["in-cluster-p99-ms=12"], topology=None)
    assert config.topology == "multi-network"  # from the profile
    assert config.budgets.in_cluster_p99_ms == 12.0  # flag beats profile
    assert config.timeouts.consistency_s == 5.0
    assert build_config(profile=profile, topology="multi-primary").topology == "multi-primary"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"provider": "minikube"}, "unknown provider 'minikube'"),
        ({"budget_overrides": ["nope_ms=1"]}, "unknown budget 'nope_ms'"),
        ({"budget_overrides": ["in_cluster_p99_ms=fast"]}, "must be a number"),
        ({"timeout_overrides": ["consistency_s=-1"]}, "must not be negative"),
        ({"budget_overrides": ["in_cluster_p99_ms"]}, "must look like NAME=VALUE"),
        ({"provider": "kind", "defects": ["ignore-peer-authentication"]}, "--defect is for --provider local"),
        ({"revision": "1-28-0"}, "--revision is for --provider existing, not local"),
        ({"provider": "k3s", "istio_version": "1.28.0", "reuse": True}, "--reuse is for --provider kind, not k3s"),
        ({"provider": "kind", "image_hub": "https://mirror.gcr.io"}, "--image-hub 'https://mirror.gcr.io' must be"),
        ({"envoy_binary": "/nonexistent/envoy"}, "--envoy-binary /nonexistent/envoy is not an executable file"),
        ({"provider": "existing"}, "needs at least one --context"),
        ({"colour": "blue"}, "unknown setting 'colour'"),
    ],
)
def test_bad_values_are_usage_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_config(**kwargs)  # type: ignore[arg-type]


def test_profile_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        build_config(profile=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(UsageError, match="must be a YAML mapping"):
        build_config(profile=bad)


def test_round_trip_through_dict() -> None:
    config = build_config(topology="multi-network", defects=["slow-sidecar"], budget_overrides=["failover_errors=2"])
    again = RunConfig.from_dict(config.as_dict(), provider_settings())
    assert again == config
    assert again.budgets.failover_errors == 2 and isinstance(again.budgets.failover_errors, int)


def test_parse_overrides() -> None:
    assert parse_overrides(["a=1", " b-c = 2 "], "--budget") == {"a": "1", "b_c": "2"}


def test_load_settings_from_profile_and_flags(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("load: {rate_rps: 300, users: 4}\n")
    config = build_config(profile=profile, load_overrides=["rate-rps=500"])
    assert config.load.rate_rps == 500.0  # flag beats profile
    assert config.load.users == 4 and isinstance(config.load.users, int)
    assert config.load.min_rate_pct == 98.0
    assert RunConfig.from_dict(config.as_dict(), provider_settings()) == config


@pytest.mark.parametrize(
    ("override", "message"),
    [("rps=5", "unknown load setting 'rps'"), ("users=0", "users >= 1"), ("rate_rps=0", "rate_rps > 0")],
)
def test_bad_load_settings_are_usage_errors(override: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_config(load_overrides=[override])


def test_users_for_a_budget_leave_room_for_twice_its_latency() -> None:
    load = build_config(load_overrides=["rate_rps=200", "users=10"]).load  # one call per user every 50 ms
    assert load.users_for(10) == 10  # a 10 ms budget fits the default users
    assert load.users_for(50) == 20  # 100 ms answers at 200 rps need 20 in flight
    users = load.users_for(50)
    assert users / load.rate_rps >= 2 * 50 / 1000


def test_fail_fast_must_stay_below_the_probes_call_timeout() -> None:
    with pytest.raises(UsageError, match=r"budget fail_fast_s \(2\) must be below timeout call_timeout_s \(2\)"):
        build_config(budget_overrides=["fail_fast_s=2"])
    assert build_config(budget_overrides=["fail_fast_s=2"], timeout_overrides=["call_timeout_s=5"])


def test_failback_allows_for_envoys_ejection_backoff() -> None:
    budgets = build_config().budgets
    assert budgets.failback_allowed(1, 3.0) == budgets.failback_s  # ejected once: baseEjectionTime + interval
    assert budgets.failback_allowed(3, 3.0) == budgets.failback_s + 6.0  # the third ejection lasts 3 x 3 s
