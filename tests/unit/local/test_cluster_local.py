"""MeshConfig serviceSettings clusterLocal, as pilot/pkg/model/cluster_local.go reads it and
pilot/pkg/xds/endpoints/endpoint_builder.go applies it (a proxy's own cluster's endpoints only)."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.errors import UnsupportedError, UsageError
from conformance.provider import ProbeSpec
from conformance.providers.local.addresses import PodAddresses
from conformance.providers.local.defects import Defect
from conformance.providers.local.model import ConfigStore, Registry, Workload
from conformance.providers.local.support import check_supported_mesh_config
from conformance.providers.local.translate.clusterlocal import ClusterLocalHosts
from conformance.providers.local.translate.context import MeshView
from conformance.providers.local.translate.endpoints import Locality
from conformance.providers.local.translate.outbound import destination_clusters, destinations
from conformance.providers.local.xds import ads_source
from conformance.topology import load_topology


def _local(*settings: tuple[list[str], bool]) -> ClusterLocalHosts:
    return ClusterLocalHosts.of({"serviceSettings": [{"hosts": hosts, "settings": {"clusterLocal": local}}
                                                     for hosts, local in settings]})


@pytest.mark.parametrize(("host", "local"), [
    ("a.ns.svc.cluster.local", True),
    ("b.ns.svc.cluster.local", False),  # the exact host beats the wildcard
    ("c.ns.svc.cluster.local", True),
    ("d.other.svc.cluster.local", False),  # nothing matches: not cluster-local
    ("kubernetes.default.svc.cluster.local", True),  # defaults
    ("dns.kube-system.svc.cluster.local", True),
    ("istiod.istio-system.svc.cluster.local", True),
])
def test_most_specific_setting_wins(host: str, local: bool) -> None:
    hosts = _local((["*.ns.svc.cluster.local"], True), (["b.ns.svc.cluster.local"], False))
    assert hosts.is_cluster_local(host) is local


def test_a_longer_wildcard_is_more_specific() -> None:
    hosts = _local((["*.svc.cluster.local"], True), (["*.ns.svc.cluster.local"], False))
    assert not hosts.is_cluster_local("a.ns.svc.cluster.local")
    assert hosts.is_cluster_local("a.other.svc.cluster.local")


def test_false_removes_a_default_it_covers() -> None:
    assert not _local((["dns.kube-system.svc.cluster.local"], False)).is_cluster_local(
        "dns.kube-system.svc.cluster.local")
    # the whole wildcard default goes, not only that host (cluster_local.go: HasSuffix on the default's suffix)
    assert not _local((["dns.kube-system.svc.cluster.local"], False)).is_cluster_local(
        "other.kube-system.svc.cluster.local")
    assert not _local((["kubernetes.default.svc.cluster.local"], False)).is_cluster_local(
        "kubernetes.default.svc.cluster.local")


def test_mesh_config_validation() -> None:
    check_supported_mesh_config({"serviceSettings": [{"hosts": ["*.ns.svc.cluster.local"],
                                                      "settings": {"clusterLocal": True}}]})
    with pytest.raises(UsageError, match=r"serviceSettings\[0\], host 'a\*b.ns'"):
        check_supported_mesh_config({"serviceSettings": [{"hosts": ["a*b.ns"], "settings": {"clusterLocal": True}}]})
    with pytest.raises(UnsupportedError, match=r"serviceSettings\[0\]\.settings\.clusterDomain"):
        check_supported_mesh_config({"serviceSettings": [{"hosts": ["a.ns"], "settings": {"clusterDomain": "x"}}]})


def _endpoint_clusters(mesh_config: dict[str, Any], defects: frozenset[Defect] = frozenset()) -> dict[str, set[str]]:
    """Which clusters' pods a cluster2 proxy (a remote of cluster1 in primary-remote) gets for each service."""
    topology = load_topology("primary-remote")
    registry = Registry()
    for index, cluster in enumerate(topology.clusters):
        for service in ("local", "shared"):
            registry.add_service(cluster.name, "ns", service, (8080,))
            registry.add(Workload(f"{service}-{cluster.name}", ProbeSpec(service, "ns", cluster.name), cluster,
                                  cluster.zone, PodAddresses(f"127.0.{index}.{len(service)}", "127.1.0.1")))
    view = MeshView(cluster=topology.clusters[0], store=ConfigStore(), registry=registry,
                    visible=frozenset(topology.cluster_names), trust_domain="cluster.local", defects=defects,
                    mesh_config=mesh_config)
    proxy = Locality("region2", "zone2", "cluster2", "network1")
    found = {}
    for destination in destinations(view):
        cluster = destination_clusters(view, proxy, "ns", destination, ads_source)[0]
        pods = [e["metadata"]["filter_metadata"]["istio"]["workload"]
                for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]
        found[destination.host.split(".")[0]] = {p.rpartition("-")[2] for p in pods}
    return found


def test_a_cluster_local_host_gets_the_proxys_own_cluster_only() -> None:
    setting = {"serviceSettings": [{"hosts": ["local.ns.svc.cluster.local"], "settings": {"clusterLocal": True}}]}
    assert _endpoint_clusters({}) == {"local": {"cluster1", "cluster2"}, "shared": {"cluster1", "cluster2"}}
    # the proxy's cluster (cluster2), not its control plane's (cluster1): endpoint_builder.go's clusterID
    assert _endpoint_clusters(setting) == {"local": {"cluster2"}, "shared": {"cluster1", "cluster2"}}
    ignored = _endpoint_clusters(setting, frozenset({Defect.CLUSTER_LOCAL_IGNORED}))
    assert ignored["local"] == {"cluster1", "cluster2"}
