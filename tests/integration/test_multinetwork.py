"""Multi-network meshes, east-west gateways and the links between clusters, on real Envoy."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator

import pytest

from conformance.provider import ProbeSpec
from conformance.providers import build_config
from conformance.providers.local.provider import LocalProvider
from conformance.topology import load_topology
from tests.integration.mesh import CLUSTERS, call, doc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProvider]:
    os.environ["MESHCONF_STATE_DIR"] = str(tmp_path_factory.getbasetemp() / "runs")
    provider = LocalProvider(build_config(topology="multi-network"), load_topology("multi-network"))
    try:
        provider.up()
        yield provider
    finally:
        provider.down()


def _endpoints(mesh: LocalProvider, probe: object, cluster: str) -> list[str]:
    dump = json.loads(mesh.proxy_admin(probe, "/clusters?format=json"))  # type: ignore[arg-type]
    for status in dump["cluster_statuses"]:
        if status["name"] == cluster:
            return [f"{h['address']['socket_address']['address']}:{h['address']['socket_address']['port_value']}"
                    for h in status.get("host_statuses", [])]
    return []


def test_cross_network_traffic_goes_through_the_east_west_gateway(mesh: LocalProvider) -> None:
    ns = f"mn-{secrets.token_hex(3)}"
    server = mesh.deploy_probe(ProbeSpec("server", ns, "cluster2"))
    client = mesh.deploy_probe(ProbeSpec("client", ns, "cluster1", service_account="frontend"))
    mesh.apply([doc("PeerAuthentication", "default", ns, {"mtls": {"mode": "STRICT"}})], CLUSTERS)
    result = call(mesh, client, server.url(), 5)
    assert result.clusters() == {"cluster2": 5}, result.summary()
    # mTLS end to end: the server's sidecar verified the client's own certificate through the gateway
    assert {tuple(r.client_cert_uris) for r in result.responses} == {(f"spiffe://cluster.local/ns/{ns}/sa/frontend",)}
    hosts = _endpoints(mesh, client, f"outbound|8080||server.{ns}.svc.cluster.local")
    assert len(hosts) == 1 and hosts[0].endswith(":15443"), hosts  # never the pod itself
    assert server.instances[0].address not in hosts[0]
    mesh.delete_namespace(ns)


def test_out_of_mesh_caller_cannot_reach_another_network(mesh: LocalProvider) -> None:
    ns = f"mn-{secrets.token_hex(3)}"
    server = mesh.deploy_probe(ProbeSpec("server", ns, "cluster2"))
    outsider = mesh.deploy_probe(ProbeSpec("outsider", ns, "cluster1", in_mesh=False))
    assert call(mesh, outsider, server.url(), 2).statuses() == {0: 2}
    mesh.delete_namespace(ns)


def test_gateway_down_fails_cross_network_calls_fast_and_local_calls_not_at_all(mesh: LocalProvider) -> None:
    ns = f"mn-{secrets.token_hex(3)}"
    remote = mesh.deploy_probe(ProbeSpec("remote", ns, "cluster2"))
    local = mesh.deploy_probe(ProbeSpec("local", ns, "cluster1"))
    client = mesh.deploy_probe(ProbeSpec("client", ns, "cluster1"))
    mesh.faults.set_gateway("cluster2", up=False)
    try:
        failed = call(mesh, client, remote.url(), 3)
        assert failed.statuses() == {503: 3}, failed.summary()
        assert max(r.latency_us for r in failed.responses) < 1_000_000
        assert call(mesh, client, local.url(), 5).statuses() == {200: 5}
    finally:
        mesh.faults.set_gateway("cluster2", up=True)
    assert call(mesh, client, remote.url(), 3).statuses() == {200: 3}
    mesh.delete_namespace(ns)


def test_link_latency(mesh: LocalProvider) -> None:  # a cut link: tests/integration/test_partition.py
    ns = f"mn-{secrets.token_hex(3)}"
    remote = mesh.deploy_probe(ProbeSpec("remote", ns, "cluster2"))
    local = mesh.deploy_probe(ProbeSpec("local", ns, "cluster1"))
    client = mesh.deploy_probe(ProbeSpec("client", ns, "cluster1"))
    try:
        mesh.faults.set_link("cluster1", "cluster2", rtt_ms=60)
        slow = call(mesh, client, remote.url(), 5)
        assert slow.statuses() == {200: 5}
        assert min(r.latency_us for r in slow.responses) >= 60_000, slow.summary()
        assert max(r.latency_us for r in call(mesh, client, local.url(), 5).responses) < 30_000
    finally:
        mesh.faults.reset()
    assert call(mesh, client, remote.url(), 3).statuses() == {200: 3}
    mesh.delete_namespace(ns)


def test_failover_priority_sees_only_cluster_and_network_on_a_gateway_endpoint(mesh: LocalProvider) -> None:
    """ep_filters.go EndpointsByNetworkFilter: the east-west gateway endpoint that stands in for cluster2's
    pods carries only ``topology.istio.io/cluster`` and ``topology.istio.io/network`` (AugmentLabels(nil, ...)),
    so failoverPriority on ``version`` cannot match cluster2's v1 through it: it shares the lowest priority
    with cluster1's v2; on the network label, cluster1 comes first."""
    ns = f"mn-{secrets.token_hex(3)}"
    client = mesh.deploy_probe(ProbeSpec("client", ns, "cluster1", version="v1"))
    local = mesh.deploy_probe(ProbeSpec("server", ns, "cluster1", version="v2"))
    mesh.deploy_probe(ProbeSpec("server", ns, "cluster2", version="v1"))

    def rule(priority: list[str]) -> dict[str, object]:
        return doc("DestinationRule", "server", ns, {"host": "server", "trafficPolicy": {
            "outlierDetection": {"consecutive5xxErrors": 3}, "loadBalancer": {
                "localityLbSetting": {"failoverPriority": priority}}}})

    mesh.apply([rule(["version"])], CLUSTERS)
    spread = call(mesh, client, local.url(), 60)
    assert set(spread.clusters()) == {"cluster1", "cluster2"}, spread.summary()
    mesh.apply([rule(["topology.istio.io/network"])], CLUSTERS)
    own_network = call(mesh, client, local.url(), 30)
    assert own_network.clusters() == {"cluster1": 30}, own_network.summary()
    mesh.delete_namespace(ns)


@pytest.mark.parametrize("label", ["topology.kubernetes.io/region", "topology.istio.io/cluster"])
def test_a_subset_on_a_topology_label_reaches_another_network(mesh: LocalProvider, label: str) -> None:
    """A subset may select endpoints by the topology labels Istio adds (labelutil.AugmentLabels); through the
    east-west gateway the subset's SNI cluster is built by the same endpoint builder
    (buildOutboundSniDnatClusters in pilot/pkg/networking/core/cluster.go), so it finds cluster2's pods too."""
    ns = f"mn-{secrets.token_hex(3)}"
    client = mesh.deploy_probe(ProbeSpec("client", ns, "cluster1"))
    local = mesh.deploy_probe(ProbeSpec("server", ns, "cluster1"))
    mesh.deploy_probe(ProbeSpec("server", ns, "cluster2"))
    far = {"topology.kubernetes.io/region": mesh.topology.cluster("cluster2").region,
           "topology.istio.io/cluster": "cluster2"}[label]
    mesh.apply([doc("DestinationRule", "server", ns, {"host": "server",
                                                      "subsets": [{"name": "far", "labels": {label: far}}]}),
                doc("VirtualService", "server", ns, {"hosts": ["server"], "http": [
                    {"route": [{"destination": {"host": "server", "subset": "far"}}]}]})], CLUSTERS)
    result = call(mesh, client, local.url(), 10)
    assert result.clusters() == {"cluster2": 10}, result.summary()
    mesh.delete_namespace(ns)
