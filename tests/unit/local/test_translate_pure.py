"""The translator's pure parts: locality priorities, retry policies, route matches, traffic policy."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.providers.local.defects import Defect
from conformance.providers.local.translate.destination import apply_traffic_policy, duration
from conformance.providers.local.translate.endpoints import Endpoint, Locality, LocalityLb, load_assignment
from conformance.providers.local.translate.routes import DEFAULT_RETRY_POLICY, retry_policy

HERE = Locality("region1", "zone1", "c1", "net1", {"version": "v1"})


def _endpoint(region: str, zone: str, labels: dict[str, str] | None = None, name: str = "",
              cluster: str = "c") -> Endpoint:
    return Endpoint(f"127.0.0.{len(region) + len(zone)}", 8080, Locality(region, zone, cluster, "net1", labels or {}),
                    mtls=True, name=name)


def _groups(setting: dict[str, Any] | None, *endpoints: Endpoint, failover: bool = True) -> list[dict[str, Any]]:
    locality = None if setting is None else LocalityLb(setting, failover)
    groups: list[dict[str, Any]] = load_assignment("c", endpoints, HERE, locality)["endpoints"]
    return groups


def _priorities(setting: dict[str, Any] | None, *endpoints: Endpoint, failover: bool = True) -> dict[str, int]:
    return {f"{g['locality']['region']}/{g['locality']['zone']}": g["priority"]
            for g in _groups(setting, *endpoints, failover=failover)}


def _by_workload(setting: dict[str, Any], *endpoints: Endpoint) -> dict[str, int]:
    """Workload name -> priority (failoverPriority splits a locality by its endpoints' labels)."""
    return {e["metadata"]["filter_metadata"]["istio"]["workload"]: g["priority"]
            for g in _groups(setting, *endpoints) for e in g["lb_endpoints"]}


def test_priorities_follow_zone_region_other() -> None:
    found = _priorities({}, _endpoint("region1", "zone1"), _endpoint("region1", "zone9"), _endpoint("region2", "z"))
    assert found == {"region1/zone1": 0, "region1/zone9": 1, "region2/z": 2}


def test_priorities_are_contiguous() -> None:
    assert _priorities({}, _endpoint("region2", "z")) == {"region2/z": 0}


def test_failover_from_to_orders_regions() -> None:
    setting = {"failover": [{"from": "region1", "to": "region3"}]}
    found = _priorities(setting, _endpoint("region2", "a"), _endpoint("region3", "b"))
    assert found == {"region2/a": 1, "region3/b": 0}


def test_without_outlier_detection_there_is_no_failover() -> None:
    """loadbalancer.go ApplyLocalityLoadBalancer: priorities only when enableFailover (outlier detection)."""
    found = _priorities({"failover": [{"from": "region1", "to": "region3"}]}, _endpoint("region1", "zone1"),
                        _endpoint("region2", "a"), _endpoint("region3", "b"), failover=False)
    assert set(found.values()) == {0}


def test_failover_priority_labels() -> None:
    setting = {"failoverPriority": ["topology.istio.io/network", "version=v2"]}
    found = _priorities(setting, _endpoint("region2", "a", {"version": "v2"}), _endpoint("region3", "b"))
    assert found == {"region2/a": 0, "region3/b": 1}


def test_failover_priority_is_per_endpoint_within_a_locality() -> None:
    """applyFailoverPriorityPerLocality splits one locality's endpoints by their labels."""
    setting = {"failoverPriority": ["version"]}
    found = _by_workload(setting, _endpoint("region1", "zone1", {"version": "v2"}, "same-zone-v2"),
                         _endpoint("region1", "zone1", {"version": "v1"}, "same-zone-v1"),
                         _endpoint("region2", "a", {"version": "v1"}, "remote-v1"))
    assert found == {"same-zone-v1": 0, "remote-v1": 0, "same-zone-v2": 1}


def test_failover_priority_uses_the_topology_labels_istio_adds() -> None:
    setting = {"failoverPriority": ["topology.istio.io/cluster", "topology.kubernetes.io/zone"]}
    found = _by_workload(setting, _endpoint("region1", "zone1", name="same-cluster-same-zone", cluster="c1"),
                         _endpoint("region1", "zone9", name="same-cluster-other-zone", cluster="c1"),
                         _endpoint("region1", "zone1", name="other-cluster", cluster="c2"))
    assert found == {"same-cluster-same-zone": 0, "same-cluster-other-zone": 1, "other-cluster": 2}


def test_failover_priority_label_neither_has_matches() -> None:
    """The proxy's value of a label it lacks is "", equal to an endpoint's that lacks it too."""
    found = _by_workload({"failoverPriority": ["team"]}, _endpoint("region2", "a", name="no-team"),
                         _endpoint("region2", "a", {"team": "x"}, "team-x"))
    assert found == {"no-team": 0, "team-x": 1}


def test_failover_priority_combined_with_failover() -> None:
    """With both, priority = label priority * 5 + locality priority (failover ordering), renumbered."""
    setting = {"failoverPriority": ["version"], "failover": [{"from": "region1", "to": "region3"}]}
    found = _by_workload(setting, _endpoint("region1", "zone1", {"version": "v1"}, "local-v1"),
                         _endpoint("region2", "a", {"version": "v1"}, "region2-v1"),
                         _endpoint("region3", "b", {"version": "v1"}, "region3-v1"),
                         _endpoint("region1", "zone1", {"version": "v2"}, "local-v2"))
    assert found == {"local-v1": 0, "region3-v1": 1, "region2-v1": 2, "local-v2": 3}


def test_gateway_endpoint_carries_only_cluster_and_network_labels() -> None:
    gateway = Endpoint("127.0.0.9", 15443, Locality("region2", "a", "c2", "net2", {"version": "v1"}), True, 1,
                       "east-west-gateway.c2", {"topology.istio.io/cluster": "c2", "topology.istio.io/network": "net2"})
    assert _by_workload({"failoverPriority": ["version"]}, gateway) == {"east-west-gateway.c2": 0}
    assert _by_workload({"failoverPriority": ["version"]}, gateway,
                        _endpoint("region2", "a", {"version": "v1"}, "pod"))["east-west-gateway.c2"] == 1


def test_no_setting_means_one_priority() -> None:
    assert set(_priorities(None, _endpoint("region1", "zone1"), _endpoint("region2", "z")).values()) == {0}


def _weights(setting: dict[str, Any], *endpoints: Endpoint, failover: bool = True) -> dict[str, int]:
    return {f"{g['locality']['region']}/{g['locality']['zone']}": g["load_balancing_weight"]
            for g in _groups(setting, *endpoints, failover=failover)}


def test_distribute_sets_weights_and_drops_unlisted_localities() -> None:
    setting = {"distribute": [{"from": "region1/*", "to": {"region1/*": 80, "region2/*": 20}}]}
    found = _weights(setting, _endpoint("region1", "zone1"), _endpoint("region2", "a"), _endpoint("region3", "b"))
    assert found == {"region1/zone1": 80, "region2/a": 20}


def test_distribute_applies_without_outlier_detection() -> None:
    setting = {"distribute": [{"from": "region1/*", "to": {"region1/*": 70, "region2/*": 30}}]}
    assert _weights(setting, _endpoint("region1", "zone1"), _endpoint("region2", "a"),
                    failover=False) == {"region1/zone1": 70, "region2/a": 30}


def test_distribute_divides_a_wildcard_by_the_localities_weights() -> None:
    """applyLocalityWeights: ceil(weight * the locality's weight / the matched localities' total)."""
    heavy = Endpoint("127.0.0.8", 15443, Locality("region2", "b", "c", "net2"), True, weight=2)
    setting = {"distribute": [{"from": "*", "to": {"region1/*": 40, "region2/*": 60}}]}
    assert _weights(setting, _endpoint("region1", "zone1"), _endpoint("region2", "a"), heavy) == {
        "region1/zone1": 40, "region2/a": 20, "region2/b": 40}


def test_distribute_from_another_locality_keeps_the_plain_weights() -> None:
    setting = {"distribute": [{"from": "region9/*", "to": {"region1/*": 80, "region2/*": 20}}]}
    found = _groups(setting, _endpoint("region1", "zone1"), _endpoint("region2", "a"))
    assert {g["load_balancing_weight"] for g in found} == {1} and {g["priority"] for g in found} == {0}


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


def _outlier(policy: dict[str, Any], defects: frozenset[Defect] = frozenset()) -> dict[str, Any]:
    cluster: dict[str, Any] = {"circuit_breakers": {"thresholds": [{}]}, "common_lb_config": {}}
    apply_traffic_policy(cluster, {"outlierDetection": policy}, defects)
    detection: dict[str, Any] = cluster["outlier_detection"]
    return detection


def test_outlier_detection_leaves_envoy_defaults_as_istio_does() -> None:
    """cluster_traffic_policy.go applyOutlierDetection: only the fields the rule sets, success rate off."""
    assert _outlier({}) == {"enforcing_success_rate": 0}
    assert _outlier({"interval": "1s"}) == {"enforcing_success_rate": 0, "interval": "1s"}


def test_a_zero_count_turns_its_detector_off() -> None:
    assert _outlier({"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 0}) == {
        "enforcing_success_rate": 0, "consecutive_5xx": 0, "enforcing_consecutive_5xx": 0,
        "consecutive_gateway_failure": 0, "enforcing_consecutive_gateway_failure": 0}
    assert _outlier({"consecutiveGatewayErrors": 2, "maxEjectionPercent": 0}) == {
        "enforcing_success_rate": 0, "consecutive_gateway_failure": 2, "enforcing_consecutive_gateway_failure": 100}


def test_failback_slow_defect_triples_the_ejection_time() -> None:
    assert _outlier({"baseEjectionTime": "3s"}, frozenset({Defect.FAILBACK_SLOW}))["base_ejection_time"] == "9s"
    assert _outlier({}, frozenset({Defect.FAILBACK_SLOW}))["base_ejection_time"] == "90s"


def test_connect_timeout_and_its_defect() -> None:
    policy = {"connectionPool": {"tcp": {"connectTimeout": "500ms"}}}
    for defects, expected in ((frozenset(), "0.5s"), (frozenset({Defect.CONNECT_TIMEOUT_IGNORED}), "10s")):
        cluster: dict[str, Any] = {"circuit_breakers": {"thresholds": [{}]}, "common_lb_config": {},
                                   "connect_timeout": "10s"}
        apply_traffic_policy(cluster, policy, defects)
        assert cluster["connect_timeout"] == expected


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
