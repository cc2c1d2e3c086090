"""Every manifest the kind provider generates, one function each, from the topology and the address plan.

- kind cluster configs (``kind.x-k8s.io/v1alpha4``): one control-plane node, labelled with the cluster's
  region and first zone, one worker per further zone; distinct pod/service subnets per cluster.
- MetalLB ``IPAddressPool`` + ``L2Advertisement`` (``metallb.io/v1beta1``), one slice of the kind network each.
- ``istio-system`` Namespace with ``topology.istio.io/network`` (and, on a remote cluster,
  ``topology.istio.io/controlPlaneClusters``), and the plug-in CA ``cacerts`` Secret from conformance.certs.
- IstioOperator install overlays (Istio's "Install Multi-Primary / Primary-Remote" guides), the east-west
  gateway (what Istio 1.28's ``samples/multicluster/gen-eastwest-gateway.sh`` generates), and the Gateways that
  expose services (``samples/multicluster/expose-services.yaml``: 15443 AUTO_PASSTHROUGH, ``*.local``) and, for
  remote clusters, istiod (``samples/multicluster/expose-istiod.yaml``).
"""

from __future__ import annotations

import base64
from typing import Any

from conformance.certs import IntermediateCA
from conformance.providers.kind.addresses import ClusterAddresses
from conformance.topology import Cluster, Role, Topology

__all__ = [
    "DEFAULT_KUBERNETES",
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
EAST_WEST_GATEWAY = "istio-eastwestgateway"
WORKLOAD_CERT_TTL = "10m"
"""proxyMetadata.SECRET_TTL: short, so the rotation check sees a rotation within a run."""
DNS_PROXYING = {"ISTIO_META_DNS_CAPTURE": "true", "ISTIO_META_DNS_AUTO_ALLOCATE": "true"}
"""istio-agent answers DNS for the names it knows (istio.io, "DNS Proxying"), so a ServiceEntry host resolves
in a pod (the egress checks call one) as the local mesh resolves it. ``ISTIO_META_DNS_AUTO_ALLOCATE`` is the
doc's older allocation (deprecated in favour of istiod's ``PILOT_ENABLE_IP_AUTOALLOCATE``, on by default in 1.28,
``pilot/pkg/features/pilot.go``; release note 54690 keeps it working)."""

_ISTIO_SYSTEM = "istio-system"


def needs_east_west_gateway(cluster: Cluster, topology: Topology) -> bool:
    """Multi-network: every cluster. One network: only a primary that serves remote clusters (to expose istiod)."""
    if topology.multi_network:
        return True
    return cluster.role is Role.PRIMARY and serves_remotes(cluster, topology)


def serves_remotes(cluster: Cluster, topology: Topology) -> bool:
    return any(c.primary == cluster.name for c in topology.clusters)


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


def istio_system_namespace(cluster: Cluster) -> dict[str, Any]:
    """``istio-system`` labelled with the cluster's network; a remote names its control plane's cluster."""
    metadata: dict[str, Any] = {"name": _ISTIO_SYSTEM, "labels": {"topology.istio.io/network": cluster.network}}
    if cluster.role is Role.REMOTE and cluster.primary:
        metadata["annotations"] = {"topology.istio.io/controlPlaneClusters": cluster.primary}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}


def cacerts_secret(ca: IntermediateCA) -> dict[str, Any]:
    """Istio's plug-in CA secret: the cluster's intermediate, its key, the shared root, the chain."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "cacerts", "namespace": _ISTIO_SYSTEM},
        "data": {name: base64.b64encode(data).decode() for name, data in ca.plugin_files().items()},
    }


def install_overlay(cluster: Cluster, topology: Topology, addresses: dict[str, ClusterAddresses],
                    revision: str | None = None, *, hub: str, tag: str) -> dict[str, Any]:
    """The IstioOperator ``istioctl install -f`` gets for this cluster.

    ``hub``/``tag`` name the images the plan preloaded, so no node pulls them (images.py).
    """
    global_values: dict[str, Any] = {
        "meshID": topology.mesh_id,
        "multiCluster": {"clusterName": cluster.name},
        "network": cluster.network,
    }
    spec: dict[str, Any] = {"hub": hub, "tag": tag, "values": {"global": global_values}}
    if cluster.role is Role.REMOTE and cluster.primary:
        spec["profile"] = "remote"
        global_values["remotePilotAddress"] = addresses[cluster.primary].east_west_address
        spec["values"]["istiodRemote"] = {"injectionPath": f"/inject/cluster/{cluster.name}/net/{cluster.network}"}
    else:
        # a remote cluster's proxies are injected by its primary's istiod, with that primary's meshConfig
        spec["meshConfig"] = {"trustDomain": topology.trust_domain, "defaultConfig": {
            "proxyMetadata": {"SECRET_TTL": WORKLOAD_CERT_TTL, **DNS_PROXYING}}}
        if serves_remotes(cluster, topology):
            global_values["externalIstiod"] = True
    if revision:
        spec["revision"] = revision
    return {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
            "metadata": {"name": f"meshconf-{cluster.name}", "namespace": _ISTIO_SYSTEM}, "spec": spec}


def east_west_gateway(cluster: Cluster, topology: Topology, addresses: ClusterAddresses,
                      revision: str | None = None, *, hub: str, tag: str) -> dict[str, Any]:
    """The east-west gateway of ``cluster``'s network, pinned to the first address of its MetalLB slice.

    What Istio 1.28's ``samples/multicluster/gen-eastwest-gateway.sh --network <net>`` writes: the labels, the
    requested network view, the Service ports named ``status-port``/``tls``/``tls-istiod``/``tls-webhook`` and
    ``injectionTemplate: gateway``. It no longer sets ``ISTIO_META_ROUTER_MODE``: AUTO_PASSTHROUGH gateways are
    detected by istiod (release note ``auto-auto-passthrough.yaml``). meshconf adds the MetalLB address, the
    mesh ID and cluster name (as the multicluster guides' ``--mesh``/``--cluster`` once did) and hub/tag.
    """
    spec: dict[str, Any] = {
        "profile": "empty",
        "hub": hub,
        "tag": tag,
        "components": {"ingressGateways": [{
            "name": EAST_WEST_GATEWAY,
            "enabled": True,
            "label": {"istio": "eastwestgateway", "app": EAST_WEST_GATEWAY,
                      "topology.istio.io/network": cluster.network},
            "k8s": {
                # traffic through this gateway should be routed inside the network
                "env": [{"name": "ISTIO_META_REQUESTED_NETWORK_VIEW", "value": cluster.network}],
                "serviceAnnotations": {"metallb.io/loadBalancerIPs": addresses.east_west_address},
                "service": {"ports": [
                    {"name": "status-port", "port": 15021, "targetPort": 15021},
                    {"name": "tls", "port": 15443, "targetPort": 15443},
                    {"name": "tls-istiod", "port": 15012, "targetPort": 15012},
                    {"name": "tls-webhook", "port": 15017, "targetPort": 15017},
                ]},
            },
        }]},
        "values": {"gateways": {"istio-ingressgateway": {"injectionTemplate": "gateway"}},
                   "global": {"meshID": topology.mesh_id, "network": cluster.network,
                              "multiCluster": {"clusterName": cluster.name}}},
    }
    if revision:
        spec["revision"] = revision
    return {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
            "metadata": {"name": "eastwest", "namespace": _ISTIO_SYSTEM}, "spec": spec}


def expose_services() -> dict[str, Any]:
    """Every ``*.local`` service reachable through the east-west gateway, mTLS passed through (15443)."""
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {"name": "cross-network-gateway", "namespace": _ISTIO_SYSTEM},
        "spec": {"selector": {"istio": "eastwestgateway"},
                 "servers": [{"port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                              "tls": {"mode": "AUTO_PASSTHROUGH"}, "hosts": ["*.local"]}]},
    }


def expose_istiod() -> list[dict[str, Any]]:
    """istiod (xDS 15012, injection webhook 15017) reachable through the east-west gateway, for remotes."""
    istiod = "istiod.istio-system.svc.cluster.local"
    return [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "istiod-gateway", "namespace": _ISTIO_SYSTEM},
         "spec": {"selector": {"istio": "eastwestgateway"},
                  "servers": [{"port": {"name": "tls-istiod", "number": 15012, "protocol": "TLS"},
                               "tls": {"mode": "PASSTHROUGH"}, "hosts": ["*"]},
                              {"port": {"name": "tls-istiodwebhook", "number": 15017, "protocol": "TLS"},
                               "tls": {"mode": "PASSTHROUGH"}, "hosts": ["*"]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "istiod-vs", "namespace": _ISTIO_SYSTEM},
         "spec": {"hosts": ["*"], "gateways": ["istiod-gateway"],
                  "tls": [{"match": [{"port": 15012, "sniHosts": ["*"]}],
                           "route": [{"destination": {"host": istiod, "port": {"number": 15012}}}]},
                          {"match": [{"port": 15017, "sniHosts": ["*"]}],
                           "route": [{"destination": {"host": istiod, "port": {"number": 443}}}]}]}},
    ]
