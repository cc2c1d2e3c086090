"""Locality load balancing on real Envoy, as Istio applies it.

Istio's behaviour followed: ``pilot/pkg/networking/core/loadbalancer/loadbalancer.go``
(``ApplyLocalityLoadBalancer``: ``distribute`` weights; ``failoverPriority`` per endpoint; ``failover``) and
``pilot/pkg/networking/core/cluster_traffic_policy.go`` (``applyLocalityLoadBalancer``: failover only with
outlier detection).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from conformance.provider import ProbeSpec
from conformance.providers import build_config
from conformance.providers.local.provider import LocalProvider
from conformance.topology import load_topology
from tests.integration.mesh import call, doc, eventually, no_retries, share

pytestmark = pytest.mark.integration

OUTLIER = {"consecutive5xxErrors": 2, "interval": "0.5s", "baseEjectionTime": "2s", "maxEjectionPercent": 100}
THREE_REGIONS = {
    "name": "three-regions",
    "clusters": [
        {"name": "east", "network": "net1", "region": "region1", "zones": ["zone1", "zone2"]},
        {"name": "west", "network": "net1", "region": "region2", "zones": ["zone3"]},
        {"name": "north", "network": "net1", "region": "region3", "zones": ["zone4"]},
    ],
}
ALL = ["east", "west", "north"]


@pytest.fixture(scope="module")
def mesh3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProvider]:
    topology_file = tmp_path_factory.mktemp("topology") / "three-regions.yaml"
    topology_file.write_text(yaml.safe_dump(THREE_REGIONS))
    import os

    os.environ["MESHCONF_STATE_DIR"] = str(tmp_path_factory.getbasetemp() / "runs")
    provider = LocalProvider(build_config(topology=str(topology_file)), load_topology(str(topology_file)))
    try:
        provider.up()
        yield provider
    finally:
        provider.down()


def _rule(namespace: str, locality: dict[str, Any] | None, outlier: dict[str, Any] | None = OUTLIER) -> dict[str, Any]:
    policy: dict[str, Any] = {}
    if outlier is not None:
        policy["outlierDetection"] = outlier
    if locality is not None:
        policy["loadBalancer"] = {"localityLbSetting": locality}
    return doc("DestinationRule", "server", namespace, {"host": "server", "trafficPolicy": policy})




def _namespace() -> str:
    return f"failover-{secrets.token_hex(3)}"


def test_locality_prefers_own_zone_then_region_then_others(mesh3: LocalProvider) -> None:
    ns = _namespace()
    client = mesh3.deploy_probe(ProbeSpec("client", ns, "east", zone="zone1"))
    same_zone = mesh3.deploy_probe(ProbeSpec("server", ns, "east", zone="zone1"))
    mesh3.deploy_probe(ProbeSpec("server", ns, "east", zone="zone2"))
    mesh3.deploy_probe(ProbeSpec("server", ns, "west"))
    mesh3.apply([_rule(ns, {"enabled": True})], ALL)
    local = call(mesh3, client, same_zone.url(), 20)
    assert {r.zone for r in local.responses} == {"zone1"}, local.summary()
    mesh3.faults.set_mode(same_zone, status=503)
    region = eventually(lambda: call(mesh3, client, same_zone.url(), 10), lambda r: r.statuses() == {200: 10})
    assert {r.zone for r in region.responses} == {"zone2"}, region.summary()
    mesh3.delete_namespace(ns)


def test_without_outlier_detection_locality_is_off(mesh3: LocalProvider) -> None:
    """Istio applies locality failover only when outlier detection is set: traffic spreads."""
    ns = _namespace()
    client = mesh3.deploy_probe(ProbeSpec("client", ns, "east"))
    server = mesh3.deploy_probe(ProbeSpec("server", ns, "east"))
    mesh3.deploy_probe(ProbeSpec("server", ns, "west"))
    mesh3.apply([_rule(ns, {"enabled": True}, outlier=None)], ALL)
    result = call(mesh3, client, server.url(), 60)
    assert set(result.clusters()) == {"east", "west"}, result.summary()
    mesh3.delete_namespace(ns)


def test_failover_from_to_picks_the_named_region(mesh3: LocalProvider) -> None:
    ns = _namespace()
    client = mesh3.deploy_probe(ProbeSpec("client", ns, "east"))
    mesh3.deploy_probe(ProbeSpec("server", ns, "west"))
    north = mesh3.deploy_probe(ProbeSpec("server", ns, "north"))
    mesh3.apply([_rule(ns, {"enabled": True, "failover": [{"from": "region1", "to": "region3"}]})], ALL)
    result = call(mesh3, client, north.url(), 30)
    assert set(result.clusters()) == {"north"}, result.summary()
    mesh3.delete_namespace(ns)


def test_distribute_sets_locality_weights(mesh3: LocalProvider) -> None:
    ns = _namespace()
    client = mesh3.deploy_probe(ProbeSpec("client", ns, "east"))
    west = mesh3.deploy_probe(ProbeSpec("server", ns, "west"))
    mesh3.deploy_probe(ProbeSpec("server", ns, "north"))
    distribute = {"enabled": True, "distribute": [{"from": "region1/*", "to": {"region2/*": 80, "region3/*": 20}}]}
    mesh3.apply([_rule(ns, distribute)], ALL)
    result = call(mesh3, client, west.url(), 200)
    assert 0.65 <= share(result, ["west"]) <= 0.92, result.summary()
    mesh3.delete_namespace(ns)


def test_distribute_applies_without_outlier_detection(mesh3: LocalProvider) -> None:
    """Only failover needs outlier detection; ``distribute`` sets locality weights either way."""
    ns = _namespace()
    client = mesh3.deploy_probe(ProbeSpec("client", ns, "east"))
    west = mesh3.deploy_probe(ProbeSpec("server", ns, "west"))
    mesh3.deploy_probe(ProbeSpec("server", ns, "north"))
    distribute = {"distribute": [{"from": "region1/*", "to": {"region2/*": 80, "region3/*": 20}}]}
    mesh3.apply([_rule(ns, distribute, outlier=None)], ALL)
    result = call(mesh3, client, west.url(), 200)
    # 80% of 200 calls; 0.65-0.92 is more than five binomial standard deviations (2.8 points) either side
    assert 0.65 <= share(result, ["west"]) <= 0.92, result.summary()
    mesh3.delete_namespace(ns)


def test_failover_priority_labels(mesh3: LocalProvider) -> None:
    ns = _namespace()
    client = mesh3.deploy_probe(ProbeSpec("client", ns, "east"))
    west = mesh3.deploy_probe(ProbeSpec("server", ns, "west", version="v1"))
    mesh3.deploy_probe(ProbeSpec("server", ns, "north", version="v2"))
    rule = {"enabled": True, "failoverPriority": ["version=v2"]}
    mesh3.apply([_rule(ns, rule)], ALL)
    result = call(mesh3, client, west.url(), 30)
    assert {r.version for r in result.responses} == {"v2"}, result.summary()
    mesh3.delete_namespace(ns)


def test_failover_priority_is_per_endpoint_not_per_locality(mesh3: LocalProvider) -> None:
    """Two pods in the client's own zone, v1 and v2: only the one with the client's version is preferred."""
    ns = _namespace()
    client = mesh3.deploy_probe(ProbeSpec("client", ns, "east", zone="zone1", version="v1"))
    same = mesh3.deploy_probe(ProbeSpec("server", ns, "east", zone="zone1", version="v1"))
    mesh3.deploy_probe(ProbeSpec("server", ns, "east", zone="zone1", version="v2"))
    mesh3.apply([_rule(ns, {"failoverPriority": ["version"]})], ALL)
    result = call(mesh3, client, same.url(), 40)
    assert {r.version for r in result.responses} == {"v1"}, result.summary()
    mesh3.delete_namespace(ns)


def test_failover_priority_then_failover_region(mesh3: LocalProvider) -> None:
    """failoverPriority first, then within it the ``failover`` order: north (the named region) before west,
    and when north fails, west's v1 before the client's own region's v2."""
    ns = _namespace()
    client = mesh3.deploy_probe(ProbeSpec("client", ns, "east", zone="zone1", version="v1"))
    mesh3.deploy_probe(ProbeSpec("server", ns, "east", zone="zone1", version="v2"))
    mesh3.deploy_probe(ProbeSpec("server", ns, "west", version="v1"))
    north = mesh3.deploy_probe(ProbeSpec("server", ns, "north", version="v1"))
    setting = {"failoverPriority": ["version"], "failover": [{"from": "region1", "to": "region3"}]}
    mesh3.apply([_rule(ns, setting), no_retries(ns)], ALL)
    first = call(mesh3, client, north.url(), 30)
    assert first.clusters() == {"north": 30}, first.summary()
    mesh3.faults.set_mode(north, status=503)
    moved = eventually(lambda: call(mesh3, client, north.url(), 10), lambda r: r.statuses() == {200: 10})
    assert moved.clusters() == {"west": 10} and {r.version for r in moved.responses} == {"v1"}, moved.summary()
    mesh3.delete_namespace(ns)


def test_scale_to_zero_fails_over_and_back(mesh3: LocalProvider) -> None:
    ns = _namespace()
    client = mesh3.deploy_probe(ProbeSpec("client", ns, "east"))
    local = mesh3.deploy_probe(ProbeSpec("server", ns, "east"))
    mesh3.deploy_probe(ProbeSpec("server", ns, "west"))
    mesh3.apply([_rule(ns, {"enabled": True})], ALL)
    assert set(call(mesh3, client, local.url(), 10).clusters()) == {"east"}
    gone = mesh3.faults.scale(local, 0)
    assert gone.instances == ()
    moved = call(mesh3, client, local.url(), 10)
    assert moved.clusters() == {"west": 10}, moved.summary()
    back = mesh3.faults.scale(local, 1)
    assert len(back.instances) == 1
    returned = call(mesh3, client, local.url(), 10)
    assert returned.clusters() == {"east": 10}, returned.summary()
    mesh3.delete_namespace(ns)

