"""Outbound config: one cluster per destination port (and per DestinationRule subset), and the routes to them.

Destinations are the Kubernetes services of every cluster this control plane discovers (merged by
namespace sameness) and the ServiceEntries in its config. Clusters are named as Istio names them
(``outbound|8080|v1|server.ns.svc.cluster.local``) and are described with their endpoints inline (a load
assignment, localities and priorities included); :mod:`..xds` serves them as istiod does, each an EDS cluster
with its ClusterLoadAssignment a resource of its own, so an endpoint change is an EDS push.

A sidecar's app sends every outbound call to the sidecar as an explicit HTTP proxy (there is no iptables
here), with ``Host: <host>:<port>``; the ``virtualOutbound`` listener's route config picks the virtual host by
Host. A host nobody declared goes to PassthroughCluster (ALLOW_ANY) or gets 502 (REGISTRY_ONLY, from a
Sidecar resource's outboundTrafficPolicy), as Istio does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conformance.certs import spiffe_id
from conformance.providers.local.addresses import OUTBOUND_PORT
from conformance.providers.local.defects import Defect
from conformance.providers.local.envoy import any_config
from conformance.providers.local.model import ROOT_NAMESPACE, Workload
from conformance.providers.local.translate.context import MeshView, SourceFn, normalize_host
from conformance.providers.local.translate.destination import (
    apply_traffic_policy,
    find_destination_rule,
    locality_policy,
    subset_policy,
    subsets,
)
from conformance.providers.local.translate.endpoints import (
    Endpoint,
    Locality,
    load_assignment,
    service_endpoints,
    uses_locality_weights,
)
from conformance.providers.local.translate.routes import (
    FAULT_FILTER,
    bound_virtual_service,
    cluster_name,
    default_route,
    http_routes,
)
from conformance.providers.local.translate.tls import istio_sni, upstream_mtls

__all__ = ["OUTBOUND_ROUTE", "Destination", "destination_clusters", "destinations", "outbound_config"]

OUTBOUND_ROUTE = "outbound"
PASSTHROUGH = "PassthroughCluster"
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_MAX = 4294967295  # Istio's default circuit-breaker thresholds: effectively none


@dataclass(frozen=True)
class Destination:
    """A host the mesh can route to: a Kubernetes service or a ServiceEntry host."""

    host: str
    namespace: str
    ports: tuple[int, ...]
    members: tuple[Workload, ...] = ()
    """Pods behind a Kubernetes service."""
    entry_endpoints: tuple[Endpoint, ...] = ()
    """ServiceEntry endpoints (port 0 = use the service port)."""
    external: bool = False
    """MESH_EXTERNAL: never mTLS by auto-mTLS."""


def destinations(view: MeshView) -> list[Destination]:
    """Every host this control plane knows: services of the clusters it discovers, then ServiceEntries."""
    found: list[Destination] = []
    for service in view.services():
        members = tuple(view.members(service))
        found.append(Destination(service.host, service.namespace, service.ports, members))
    for entry in view.store.of_kind("ServiceEntry"):
        ports = tuple(int(p["number"]) for p in entry.spec.get("ports") or [])
        external = entry.spec.get("location", "MESH_EXTERNAL") == "MESH_EXTERNAL"
        endpoints = tuple(
            Endpoint(str(e["address"]), 0, _entry_locality(e, view.cluster.name), mtls=False)
            for e in entry.spec.get("endpoints") or []
        )
        for host in entry.spec.get("hosts") or []:
            found.append(Destination(normalize_host(str(host), entry.namespace), entry.namespace, ports,
                                     entry_endpoints=endpoints, external=external))
    return found


def _entry_locality(endpoint: Mapping[str, Any], cluster: str) -> Locality:
    """A ServiceEntry endpoint belongs to the config's cluster (Istio's serviceentry registry does the same)."""
    region, _, zone = str(endpoint.get("locality", "")).partition("/")
    return Locality(region, zone.split("/")[0], cluster, str(endpoint.get("network", "")),
                    endpoint.get("labels") or {})


def _base_cluster(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "10s",
        "lb_policy": "LEAST_REQUEST",
        "circuit_breakers": {"thresholds": [{
            "max_connections": _MAX, "max_pending_requests": _MAX, "max_requests": _MAX, "max_retries": _MAX,
        }]},
        "common_lb_config": {},
    }


def _transport(view: MeshView, destination: Destination, policy: Mapping[str, Any], port: int, subset: str,
               source: SourceFn) -> dict[str, Any]:
    """TLS of a cluster: the DestinationRule's mode, else auto-mTLS by endpoint."""
    accounts = sorted({spiffe_id(view.trust_domain, w.namespace, w.service_account)
                       for w in destination.members if w.in_mesh})
    mtls = upstream_mtls(source, accounts, istio_sni(port, subset, destination.host))
    mode = (policy.get("tls") or {}).get("mode")
    if mode == "ISTIO_MUTUAL" and Defect.ALWAYS_PLAINTEXT not in view.defects:
        return {"transport_socket": mtls}
    if mode == "DISABLE" or destination.external:
        return {}
    return {"transport_socket_matches": [
        {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": mtls},
        {"name": "tlsMode-disabled", "match": {}, "transport_socket": {
            "name": "envoy.transport_sockets.raw_buffer",
            "typed_config": any_config("envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"),
        }},
    ]}


def destination_clusters(view: MeshView, proxy: Locality, client_namespace: str, destination: Destination,
                         source: SourceFn) -> list[dict[str, Any]]:
    """Clusters (the service's, then one per subset) with their endpoints, for one destination host."""
    rule = find_destination_rule(view, client_namespace, destination.host)
    clusters: list[dict[str, Any]] = []
    for port in destination.ports:
        for subset, labels in [("", {}), *subsets(rule).items()]:
            name = cluster_name(port, destination.host, subset)
            policy = subset_policy(rule, subset)
            cluster = _base_cluster(name)
            cluster.update(_transport(view, destination, policy, port, subset, source))
            apply_traffic_policy(cluster, policy, view.defects)
            locality = locality_policy(view, policy)
            if uses_locality_weights(locality):
                cluster["common_lb_config"]["locality_weighted_lb_config"] = {}
            if destination.members:
                pods = destination.members
                if view.cluster_local(destination.host) and Defect.CLUSTER_LOCAL_IGNORED not in view.defects:
                    pods = tuple(w for w in pods if w.cluster.name == proxy.cluster)  # endpoint_builder.go
                members = service_endpoints(view, proxy, pods, port, labels)
            else:
                members = [Endpoint(e.address, e.port or port, e.locality, e.mtls, e.weight, destination.host)
                           for e in destination.entry_endpoints
                           if all(e.istio_labels().get(k) == v for k, v in labels.items())]
            cluster["load_assignment"] = load_assignment(name, members, proxy, locality)
            clusters.append(cluster)
    return clusters


def _domains(destination: Destination, port: int, client_namespace: str) -> list[str]:
    host = destination.host
    names = [host]
    if host.endswith(".svc.cluster.local"):
        service, namespace = host.split(".")[:2]
        names += [f"{service}.{namespace}.svc", f"{service}.{namespace}"]
        if namespace == client_namespace:
            names.append(service)
    return [f"{name}:{port}" for name in names] + ([host] if port == 80 else [])


def _registry_only(view: MeshView, workload: Workload) -> bool:
    """A Sidecar resource (the workload's own, its namespace's, or the root namespace's) says REGISTRY_ONLY."""
    if Defect.REGISTRY_ONLY_IGNORED in view.defects:
        return False
    candidates = [s for s in view.store.of_kind("Sidecar", workload.namespace)
                  if _selects(s.spec.get("workloadSelector"), workload)]
    candidates += [s for s in view.store.of_kind("Sidecar", workload.namespace) if not s.spec.get("workloadSelector")]
    candidates += [s for s in view.store.of_kind("Sidecar", ROOT_NAMESPACE) if not s.spec.get("workloadSelector")]
    for sidecar in candidates:
        mode = (sidecar.spec.get("outboundTrafficPolicy") or {}).get("mode")
        if mode:
            return bool(mode == "REGISTRY_ONLY")
    return False


def _selects(selector: Mapping[str, Any] | None, workload: Workload) -> bool:
    labels = (selector or {}).get("labels") or {}
    return bool(labels) and all(workload.labels.get(k) == v for k, v in labels.items())


def _passthrough_cluster() -> dict[str, Any]:
    return {
        "name": PASSTHROUGH,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "10s",
        "original_dst_lb_config": {"use_http_header": True, "http_header_name": "x-envoy-original-dst-host"},
    }


def virtual_hosts(view: MeshView, destinations_: Sequence[Destination], client_namespace: str,
                  gateway: str = "mesh") -> list[dict[str, Any]]:
    """One virtual host per destination port, with its VirtualService routes or the default route."""
    hosts = []
    for destination in destinations_:
        vs = bound_virtual_service(view, destination.host, gateway)
        for port in destination.ports:
            routes = http_routes(view, vs, port) if vs else default_route(
                cluster_name(port, destination.host), view.defects)
            hosts.append({"name": f"{destination.host}:{port}",
                          "domains": _domains(destination, port, client_namespace), "routes": routes})
    return hosts


def outbound_config(
    view: MeshView, workload: Workload, source: SourceFn
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The outbound listener (routes inline) and the clusters of a sidecar."""
    proxy = Locality(workload.cluster.region, workload.zone, workload.cluster.name, workload.cluster.network,
                     workload.labels)
    found = destinations(view)
    clusters: list[dict[str, Any]] = [_passthrough_cluster()]
    for destination in found:
        more = destination_clusters(view, proxy, workload.namespace, destination, source)
        if not destination.external:
            for cluster in more:
                # a pod's connections leave from its pod IP (what a server's ipBlocks / source.ip see)
                cluster["upstream_bind_config"] = {"source_address": {"address": workload.addresses.pod_ip,
                                                                      "port_value": 0}}
        clusters += more
    hosts = virtual_hosts(view, found, workload.namespace)
    if _registry_only(view, workload):
        fallback = {"name": "block_all", "domains": ["*"],
                    "routes": [{"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}]}
    else:
        fallback = {"name": "allow_any", "domains": ["*"], "routes": [{
            "name": "allow_any", "match": {"prefix": "/"},
            "route": {"cluster": PASSTHROUGH, "timeout": "0s"},
            "request_headers_to_add": [{"header": {"key": "x-envoy-original-dst-host", "value": "%REQ(:authority)%"},
                                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        }]}
    routes = {"name": OUTBOUND_ROUTE, "virtual_hosts": [*hosts, fallback], "validate_clusters": False}
    return outbound_listener(workload, routes), clusters


def http_filters() -> list[dict[str, Any]]:
    """Outbound HTTP filters: fault injection (per-route config from VirtualServices), then the router."""
    return [
        {"name": FAULT_FILTER, "typed_config": any_config("envoy.extensions.filters.http.fault.v3.HTTPFault")},
        {"name": "envoy.filters.http.router",
         "typed_config": any_config("envoy.extensions.filters.http.router.v3.Router")},
    ]


def outbound_listener(workload: Workload, routes: dict[str, Any]) -> dict[str, Any]:
    hcm = {
        "stat_prefix": "outbound_0.0.0.0_15001",
        "route_config": routes,
        "http_filters": http_filters(),
        "forward_client_cert_details": "SANITIZE",
    }
    return {
        "name": "virtualOutbound",
        "address": {"socket_address": {"address": workload.addresses.loopback, "port_value": OUTBOUND_PORT}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager", "typed_config": any_config(_HCM, **hcm),
        }]}],
        "traffic_direction": "OUTBOUND",
    }
