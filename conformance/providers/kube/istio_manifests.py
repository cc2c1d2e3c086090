"""Istio's multi-cluster install on any Kubernetes, as manifests: what every installing provider (kind, k3s)
applies once its clusters exist.

- ``istio-system`` Namespace with ``topology.istio.io/network`` (and, on a remote cluster,
  ``topology.istio.io/controlPlaneClusters``), and the plug-in CA ``cacerts`` Secret from conformance.certs.
- IstioOperator install overlays (Istio's "Install Multi-Primary / Primary-Remote" guides), the east-west
  gateway (what Istio 1.28's ``samples/multicluster/gen-eastwest-gateway.sh`` generates), and the Gateways that
  expose services (``samples/multicluster/expose-services.yaml``: 15443 AUTO_PASSTHROUGH, ``*.local``) and, for
  remote clusters, istiod (``samples/multicluster/expose-istiod.yaml``).

What differs between providers is passed in: the address each east-west gateway gets (a remote cluster's
``remotePilotAddress``) and the annotations or ports its Service needs from that provider's load balancer.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from conformance.certs import IntermediateCA
from conformance.topology import Cluster, Role, Topology

__all__ = [
    "DNS_PROXYING",
    "EAST_WEST_GATEWAY",
    "ISTIO_SYSTEM",
    "STATUS_PORT",
    "WORKLOAD_CERT_TTL",
    "cacerts_secret",
    "east_west_gateway",
    "expose_istiod",
    "expose_services",
    "install_overlay",
    "istio_system_namespace",
    "needs_east_west_gateway",
    "serves_remotes",
]

EAST_WEST_GATEWAY = "istio-eastwestgateway"
STATUS_PORT = 15021
"""A gateway's readiness port (``status-port``), which load balancers health-check."""
WORKLOAD_CERT_TTL = "10m"
"""proxyMetadata.SECRET_TTL: short, so the rotation check sees a rotation within a run."""
DNS_PROXYING = {"ISTIO_META_DNS_CAPTURE": "true", "ISTIO_META_DNS_AUTO_ALLOCATE": "true"}
"""istio-agent answers DNS for the names it knows (istio.io, "DNS Proxying"), so a ServiceEntry host resolves
in a pod (the egress checks call one) as the local mesh resolves it. ``ISTIO_META_DNS_AUTO_ALLOCATE`` is the
doc's older allocation (deprecated in favour of istiod's ``PILOT_ENABLE_IP_AUTOALLOCATE``, on by default in 1.28,
``pilot/pkg/features/pilot.go``; release note 54690 keeps it working)."""
ISTIO_SYSTEM = "istio-system"


def needs_east_west_gateway(cluster: Cluster, topology: Topology) -> bool:
    """Multi-network: every cluster. One network: only a primary that serves remote clusters (to expose istiod)."""
    if topology.multi_network:
        return True
    return cluster.role is Role.PRIMARY and serves_remotes(cluster, topology)


def serves_remotes(cluster: Cluster, topology: Topology) -> bool:
    return any(c.primary == cluster.name for c in topology.clusters)


def istio_system_namespace(cluster: Cluster) -> dict[str, Any]:
    """``istio-system`` labelled with the cluster's network; a remote names its control plane's cluster."""
    metadata: dict[str, Any] = {"name": ISTIO_SYSTEM, "labels": {"topology.istio.io/network": cluster.network}}
    if cluster.role is Role.REMOTE and cluster.primary:
        metadata["annotations"] = {"topology.istio.io/controlPlaneClusters": cluster.primary}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}


def cacerts_secret(ca: IntermediateCA) -> dict[str, Any]:
    """Istio's plug-in CA secret: the cluster's intermediate, its key, the shared root, the chain."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "cacerts", "namespace": ISTIO_SYSTEM},
        "data": {name: base64.b64encode(data).decode() for name, data in ca.plugin_files().items()},
    }


def install_overlay(cluster: Cluster, topology: Topology, east_west_addresses: Mapping[str, str],
                    revision: str | None = None, *, hub: str, tag: str) -> dict[str, Any]:
    """The IstioOperator ``istioctl install -f`` gets for this cluster.

    ``east_west_addresses`` (cluster -> its east-west gateway's load-balancer address) gives a remote cluster
    its ``remotePilotAddress``. ``hub``/``tag`` name the images the plan preloaded, so no node pulls them.
    """
    global_values: dict[str, Any] = {
        "meshID": topology.mesh_id,
        "multiCluster": {"clusterName": cluster.name},
        "network": cluster.network,
    }
    spec: dict[str, Any] = {"hub": hub, "tag": tag, "values": {"global": global_values}}
    if cluster.role is Role.REMOTE and cluster.primary:
        spec["profile"] = "remote"
        global_values["remotePilotAddress"] = east_west_addresses[cluster.primary]
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
            "metadata": {"name": f"meshconf-{cluster.name}", "namespace": ISTIO_SYSTEM}, "spec": spec}


def east_west_gateway(cluster: Cluster, topology: Topology, revision: str | None = None, *, hub: str, tag: str,
                      service_annotations: Mapping[str, str] | None = None,
                      status_port: int = STATUS_PORT) -> dict[str, Any]:
    """The east-west gateway of ``cluster``'s network.

    What Istio 1.28's ``samples/multicluster/gen-eastwest-gateway.sh --network <net>`` writes: the labels, the
    requested network view, the Service ports named ``status-port``/``tls``/``tls-istiod``/``tls-webhook`` and
    ``injectionTemplate: gateway``. It no longer sets ``ISTIO_META_ROUTER_MODE``: AUTO_PASSTHROUGH gateways are
    detected by istiod (release note ``auto-auto-passthrough.yaml``). meshconf adds the mesh ID and cluster name
    (as the multicluster guides' ``--mesh``/``--cluster`` once did) and hub/tag; the provider adds what its load
    balancer needs: ``service_annotations``, and ``status_port`` when the Service cannot listen on 15021 (the
    gateway itself always answers readiness on 15021).
    """
    k8s: dict[str, Any] = {
        # traffic through this gateway should be routed inside the network
        "env": [{"name": "ISTIO_META_REQUESTED_NETWORK_VIEW", "value": cluster.network}],
    }
    if service_annotations:
        k8s["serviceAnnotations"] = dict(service_annotations)
    k8s["service"] = {"ports": [
        {"name": "status-port", "port": status_port, "targetPort": STATUS_PORT},
        {"name": "tls", "port": 15443, "targetPort": 15443},
        {"name": "tls-istiod", "port": 15012, "targetPort": 15012},
        {"name": "tls-webhook", "port": 15017, "targetPort": 15017},
    ]}
    spec: dict[str, Any] = {
        "profile": "empty",
        "hub": hub,
        "tag": tag,
        "components": {"ingressGateways": [{
            "name": EAST_WEST_GATEWAY,
            "enabled": True,
            "label": {"istio": "eastwestgateway", "app": EAST_WEST_GATEWAY,
                      "topology.istio.io/network": cluster.network},
            "k8s": k8s,
        }]},
        "values": {"gateways": {"istio-ingressgateway": {"injectionTemplate": "gateway"}},
                   "global": {"meshID": topology.mesh_id, "network": cluster.network,
                              "multiCluster": {"clusterName": cluster.name}}},
    }
    if revision:
        spec["revision"] = revision
    return {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
            "metadata": {"name": "eastwest", "namespace": ISTIO_SYSTEM}, "spec": spec}


def expose_services() -> dict[str, Any]:
    """Every ``*.local`` service reachable through the east-west gateway, mTLS passed through (15443)."""
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {"name": "cross-network-gateway", "namespace": ISTIO_SYSTEM},
        "spec": {"selector": {"istio": "eastwestgateway"},
                 "servers": [{"port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                              "tls": {"mode": "AUTO_PASSTHROUGH"}, "hosts": ["*.local"]}]},
    }


def expose_istiod() -> list[dict[str, Any]]:
    """istiod (xDS 15012, injection webhook 15017) reachable through the east-west gateway, for remotes."""
    istiod = "istiod.istio-system.svc.cluster.local"
    return [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "istiod-gateway", "namespace": ISTIO_SYSTEM},
         "spec": {"selector": {"istio": "eastwestgateway"},
                  "servers": [{"port": {"name": "tls-istiod", "number": 15012, "protocol": "TLS"},
                               "tls": {"mode": "PASSTHROUGH"}, "hosts": ["*"]},
                              {"port": {"name": "tls-istiodwebhook", "number": 15017, "protocol": "TLS"},
                               "tls": {"mode": "PASSTHROUGH"}, "hosts": ["*"]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "istiod-vs", "namespace": ISTIO_SYSTEM},
         "spec": {"hosts": ["*"], "gateways": ["istiod-gateway"],
                  "tls": [{"match": [{"port": 15012, "sniHosts": ["*"]}],
                           "route": [{"destination": {"host": istiod, "port": {"number": 15012}}}]},
                          {"match": [{"port": 15017, "sniHosts": ["*"]}],
                           "route": [{"destination": {"host": istiod, "port": {"number": 443}}}]}]}},
    ]
