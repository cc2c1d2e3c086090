"""Every manifest the kind provider generates, one function each, from the topology and the address plan.

- kind cluster configs (``kind.x-k8s.io/v1alpha4``): one control-plane node, labelled with the cluster's
  region and first zone, one worker per further zone; distinct pod/service subnets per cluster.
- MetalLB ``IPAddressPool`` + ``L2Advertisement`` (``metallb.io/v1beta1``), one slice of the kind network each.
- Istio's install (``istio-system``, ``cacerts``, IstioOperator overlays, the east-west gateway, the exposing
  Gateways) is the kube layer's (``kube/istio_manifests.py``), shared with k3s; kind pins each east-west gateway
  to the first address of its MetalLB slice, so a remote's ``remotePilotAddress`` is known before anything runs.
"""

from __future__ import annotations

from typing import Any

from conformance.providers.kind.addresses import ClusterAddresses
from conformance.providers.kube import istio_manifests as istio
from conformance.providers.kube.istio_manifests import (
    DNS_PROXYING,
    EAST_WEST_GATEWAY,
    WORKLOAD_CERT_TTL,
    cacerts_secret,
    expose_istiod,
    expose_services,
    istio_system_namespace,
    needs_east_west_gateway,
    serves_remotes,
)
from conformance.topology import Cluster, Topology

__all__ = [
    "DEFAULT_KUBERNETES",
    "DNS_PROXYING",
    "EAST_WEST_GATEWAY",
    "KIND_VERSION",
    "METALLB_MANIFEST",
    "NODE_IMAGES",
    "WORKLOAD_CERT_TTL",
    "cacerts_secret",
    "east_west_gateway",
    "expose_istiod",
    "expose_services",
    "install_overlay",
    "istio_system_namespace",
    "kind_cluster_config",
    "metallb_pool",
    "needs_east_west_gateway",
    "node_names",
    "serves_remotes",
]

KIND_VERSION = "v0.33.0"
NODE_IMAGES = {
    # the images kind v0.33.0 was released with (its release notes); a digest pins an image built for it
    "1.34": "kindest/node:v1.34.11@sha256:44e222ee2132dab25ff87301682f89eb82c7880ea3a1bf543bfe9708fd08d67d",
    "1.35": "kindest/node:v1.35.8@sha256:07b2536e30b803ed61d1677a79df6115f798ce64c80f9e22f6ed45afd09323c0",
    "1.36": "kindest/node:v1.36.4@sha256:099e049362a1526b2db71494e1947aae99bd16290d7c895f2b7ea312e3cbfaed",
    "1.37": "kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5",
}
DEFAULT_KUBERNETES = "1.34"
METALLB_VERSION = "v0.15.3"
METALLB_MANIFEST = f"https://raw.githubusercontent.com/metallb/metallb/{METALLB_VERSION}/config/manifests/metallb-native.yaml"


def node_names(cluster: Cluster) -> tuple[str, ...]:
    """The node containers kind creates for ``cluster``'s config: ``<name>-control-plane``, then one worker per
    further zone named ``<name>-worker``, ``<name>-worker2``, ... (kind's ``MakeNodeNamer``,
    ``pkg/cluster/internal/providers/common/namer.go``)."""
    workers = [f"{cluster.name}-worker{'' if i == 1 else i}" for i in range(1, len(cluster.zones))]
    return (f"{cluster.name}-control-plane", *workers)


def kind_cluster_config(cluster: Cluster, addresses: ClusterAddresses, node_image: str) -> dict[str, Any]:
    """The kind config of one cluster (what ``kind-configs/<topology>/<cluster>.yaml`` holds)."""
    nodes: list[dict[str, Any]] = [{
        "role": "control-plane",
        "image": node_image,
        "labels": {"topology.kubernetes.io/region": cluster.region, "topology.kubernetes.io/zone": cluster.zone},
    }]
    nodes += [{"role": "worker", "image": node_image,
               "labels": {"topology.kubernetes.io/region": cluster.region, "topology.kubernetes.io/zone": zone}}
              for zone in cluster.zones[1:]]
    return {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "name": cluster.name,
        "networking": {"podSubnet": addresses.pod_subnet, "serviceSubnet": addresses.service_subnet},
        "nodes": nodes,
    }


def metallb_pool(cluster: Cluster, addresses: ClusterAddresses) -> list[dict[str, Any]]:
    """This cluster's slice of the kind network, announced on L2.

    The slice's first address is a pool of its own that MetalLB never hands out by itself: only the east-west
    gateway asks for it (``metallb.io/loadBalancerIPs``), so no earlier LoadBalancer (the ingress gateway)
    can take it.
    """
    pool, reserved = f"meshconf-{cluster.name}", f"meshconf-{cluster.name}-eastwest"
    return [
        {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
         "metadata": {"name": reserved, "namespace": "metallb-system"},
         "spec": {"addresses": [f"{addresses.east_west_address}/32"], "autoAssign": False}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
         "metadata": {"name": pool, "namespace": "metallb-system"},
         "spec": {"addresses": [addresses.shared_range]}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
         "metadata": {"name": pool, "namespace": "metallb-system"},
         "spec": {"ipAddressPools": [reserved, pool]}},
    ]


def install_overlay(cluster: Cluster, topology: Topology, addresses: dict[str, ClusterAddresses],
                    revision: str | None = None, *, hub: str, tag: str) -> dict[str, Any]:
    """The IstioOperator of ``cluster`` (``kube/istio_manifests.py``); a remote's ``remotePilotAddress`` is its
    primary's pinned MetalLB address."""
    return istio.install_overlay(cluster, topology, {name: a.east_west_address for name, a in addresses.items()},
                                 revision, hub=hub, tag=tag)


def east_west_gateway(cluster: Cluster, topology: Topology, addresses: ClusterAddresses,
                      revision: str | None = None, *, hub: str, tag: str) -> dict[str, Any]:
    """The east-west gateway of ``cluster``'s network (``kube/istio_manifests.py``), pinned to the first address
    of its MetalLB slice (``metallb.io/loadBalancerIPs``)."""
    return istio.east_west_gateway(cluster, topology, revision, hub=hub, tag=tag,
                                   service_annotations={"metallb.io/loadBalancerIPs": addresses.east_west_address})
