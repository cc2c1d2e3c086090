"""The translator's pure parts: locality priorities, retry policies, route matches, traffic policy."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.providers.local.defects import Defect
from conformance.providers.local.translate.destination import apply_traffic_policy, duration
from conformance.providers.local.translate.endpoints import Endpoint, Locality, load_assignment
from conformance.providers.local.translate.routes import DEFAULT_RETRY_POLICY, retry_policy

HERE = Locality("region1", "zone1", "c1", "net1")


def _endpoint(region: str, zone: str, labels: dict[str, str] | None = None) -> Endpoint:
    return Endpoint(f"127.0.0.{len(region) + len(zone)}", 8080, Locality(region, zone, "c", "net1", labels or {}),
                    mtls=True)


def _priorities(setting: dict[str, Any] | None, *endpoints: Endpoint) -> dict[str, int | None]:
    assignment = load_assignment("c", endpoints, HERE, setting)
    return {f"{g['locality']['region']}/{g['locality']['zone']}": g.get("priority") for g in assignment["endpoints"]}


def test_priorities_follow_zone_region_other() -> None:
    found = _priorities({}, _endpoint("region1", "zone1"), _endpoint("region1", "zone9"), _endpoint("region2", "z"))
    assert found == {"region1/zone1": 0, "region1/zone9": 1, "region2/z": 2}


def test_priorities_are_contiguous() -> None:
    assert _priorities({}, _endpoint("region2", "z")) == {"region2/z": 0}


def test_failover_from_to_orders_regions() -> None:
    setting = {"failover": [{"from": "region1", "to": "region3"}]}
    found = _priorities(setting, _endpoint("region2", "a"), _endpoint("region3", "b"))
    assert found == {"region2/a": 1, "region3/b": 0}


def test_failover_priority_labels() -> None:
    setting = {"failoverPriority": ["topology.istio.io/network", "version=v2"]}
    found = _priorities(setting, _endpoint("region2", "a", {"version": "v2"}), _endpoint("region3", "b"))
    assert found == {"region2/a": 0, "region3/b": 1}


def test_no_setting_means_one_priority() -> None:
    assert set(_priorities(None, _endpoint("region1", "zone1"), _endpoint("region2", "z")).values()) == {None}


def test_distribute_sets_weights_and_drops_unlisted_localities() -> None:
    setting = {"distribute": [{"from": "region1/*", "to": {"region1/*": 80, "region2/*": 20}}]}
    assignment = load_assignment("c", [_endpoint("region1", "zone1"), _endpoint("region2", "a"),
                                       _endpoint("region3", "b")], HERE, setting)
    weights = {g["locality"]["region"]: g["load_balancing_weight"] for g in assignment["endpoints"]}
    assert weights == {"region1": 80, "region2": 20}


@pytest.mark.parametrize(
    ("retries", "expected"),
    [
        (None, DEFAULT_RETRY_POLICY),
        ({"attempts": 0}, {"num_retries": 0}),
        ({"attempts": 3, "retryOn": "5xx,503", "perTryTimeout": "2s"},
         {"num_retries": 3, "retry_on": "5xx,retriable-status-codes", "retriable_status_codes": [503],
          "per_try_timeout": "2s"}),
    ],
)
def test_retry_policy(retries: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    policy = retry_policy(retries, frozenset())
    assert {k: policy.get(k) for k in expected} == expected


def test_retry_remote_localities_adds_previous_priorities() -> None:
    policy = retry_policy({"attempts": 2, "retryRemoteLocalities": True}, frozenset())
    assert policy["retry_priority"]["name"] == "envoy.retry_priorities.previous_priorities"


def test_retries_disabled_defect() -> None:
    assert retry_policy(None, frozenset({Defect.RETRIES_DISABLED})) == {"num_retries": 0}


def test_traffic_policy_on_a_cluster() -> None:
    cluster: dict[str, Any] = {"circuit_breakers": {"thresholds": [{}]}, "common_lb_config": {}}
    policy = {"loadBalancer": {"simple": "ROUND_ROBIN"},
              "connectionPool": {"tcp": {"maxConnections": 7}, "http": {"http1MaxPendingRequests": 3}},
              "outlierDetection": {"consecutive5xxErrors": 3, "interval": "1s", "baseEjectionTime": "30s"}}
    apply_traffic_policy(cluster, policy, frozenset())
    assert cluster["lb_policy"] == "ROUND_ROBIN"
    assert cluster["circuit_breakers"]["thresholds"][0] == {"max_connections": 7, "max_pending_requests": 3}
    assert cluster["outlier_detection"]["consecutive_5xx"] == 3
    assert cluster["outlier_detection"]["enforcing_consecutive_5xx"] == 100
    assert cluster["common_lb_config"]["healthy_panic_threshold"] == {"value": 0.0}
    plain: dict[str, Any] = {"circuit_breakers": {"thresholds": [{}]}, "common_lb_config": {}}
    apply_traffic_policy(plain, policy, frozenset({Defect.NO_OUTLIER_DETECTION}))
    assert "outlier_detection" not in plain


def _requests_per_connection(cluster: dict[str, Any]) -> int | None:
    options = cluster.get("typed_extension_protocol_options", {})
    http = options.get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {})
    limit: int | None = http.get("common_http_protocol_options", {}).get("max_requests_per_connection")
    return limit


def test_max_requests_per_connection_and_the_no_reuse_defect() -> None:
    policy = {"connectionPool": {"http": {"maxRequestsPerConnection": 5}}}
    for defects, expected in ((frozenset(), 5), (frozenset({Defect.NO_CONNECTION_REUSE}), 1)):
        cluster: dict[str, Any] = {"circuit_breakers": {"thresholds": [{}]}, "common_lb_config": {}}
        apply_traffic_policy(cluster, policy, defects)
        assert _requests_per_connection(cluster) == expected
    untouched: dict[str, Any] = {"circuit_breakers": {"thresholds": [{}]}, "common_lb_config": {}}
    apply_traffic_policy(untouched, {}, frozenset())
    assert _requests_per_connection(untouched) is None


@pytest.mark.parametrize(("istio", "envoy"), [("1s", "1s"), ("500ms", "0.5s"), ("1m", "60s"), ("1.5s", "1.5s")])
def test_durations(istio: str, envoy: str) -> None:
    assert duration(istio, 0) == envoy
