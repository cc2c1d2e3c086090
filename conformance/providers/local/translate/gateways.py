"""Gateways: the ingress gateway (Gateway + VirtualService) and the east-west gateway (AUTO_PASSTHROUGH).

Ingress: a Gateway selecting the gateway's labels opens a listener per server port (ports below 1024 are
served on port + 8000, as Istio's gateway Service maps 80 to 8080); VirtualServices bound to the Gateway
become virtual hosts (``host`` and ``host:*``) for the hosts its servers admit. A host or path no
VirtualService declares gets 404. The hop from the gateway to a workload is mTLS with the gateway's own
identity (``istio-system/istio-ingressgateway-service-account``).

Ingress gateways enforce the AuthorizationPolicies that select them (or are mesh-wide), before routing.

East-west: a listener on 15443 with TLS inspection that routes by SNI (``outbound_.<port>_.<subset>_.<host>``)
to this cluster's endpoints, without terminating TLS: the client sidecar's mTLS reaches the server sidecar
end to end, as Istio's AUTO_PASSTHROUGH gateway does.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from conformance.providers.local.defects import Defect
from conformance.providers.local.envoy import XdsSnapshot, any_config
from conformance.providers.local.model import ROOT_NAMESPACE, Resource, Workload
from conformance.providers.local.translate.authn import jwt_filter
from conformance.providers.local.translate.authz import rbac_filters
from conformance.providers.local.translate.context import MeshView, SourceFn
from conformance.providers.local.translate.destination import find_destination_rule, subsets
from conformance.providers.local.translate.endpoints import EAST_WEST_PORT, Locality, load_assignment
from conformance.providers.local.translate.endpoints import Endpoint as Target
from conformance.providers.local.translate.outbound import destination_clusters, destinations, http_filters
from conformance.providers.local.translate.routes import bound_virtual_service, http_routes
from conformance.providers.local.translate.tls import istio_sni

__all__ = ["INGRESS_LABELS", "build_east_west", "build_ingress", "listen_port"]

INGRESS_LABELS = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
EAST_WEST_LABELS = {"istio": "eastwestgateway", "app": "istio-eastwestgateway"}
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def listen_port(port: int) -> int:
    """Where the gateway serves a Gateway server port (80 -> 8080, as Istio's gateway Service maps it)."""
    return port + 8000 if port < 1024 else port


def _locality(workload: Workload) -> Locality:
    return Locality(workload.cluster.region, workload.zone, workload.cluster.name, workload.cluster.network,
                    workload.labels)


def _gateways_for(view: MeshView, workload: Workload) -> list[Resource]:
    return [g for g in view.store.of_kind("Gateway")
            if all(workload.labels.get(k) == v for k, v in (g.spec.get("selector") or {}).items())]


def _admits(server_hosts: list[str], gateway_namespace: str, vs: Resource, host: str) -> bool:
    for pattern in server_hosts:
        namespace, _, name = pattern.rpartition("/")
        if namespace not in ("", "*", ".") and namespace != vs.namespace:
            continue
        if namespace == "." and vs.namespace != gateway_namespace:
            continue
        if fnmatch.fnmatch(host, name):
            return True
    return False


def build_ingress(view: MeshView, workload: Workload, source: SourceFn) -> XdsSnapshot:
    ports: dict[int, list[tuple[Resource, list[str]]]] = {}
    for gateway in _gateways_for(view, workload):
        for server in gateway.spec.get("servers") or []:
            ports.setdefault(int(server["port"]["number"]), []).append(
                (gateway, [str(h) for h in server.get("hosts") or []]))
    listeners = []
    for port, servers in sorted(ports.items()):
        name = f"http.{port}"
        hosts: list[dict[str, Any]] = []
        seen: set[str] = set()
        for gateway, server_hosts in servers:
            ref = f"{gateway.namespace}/{gateway.name}"
            for vs in view.store.of_kind("VirtualService"):
                for host in vs.spec.get("hosts") or []:
                    host = str(host)
                    if host in seen or bound_virtual_service(view, host, ref) is not vs:
                        continue
                    if not _admits(server_hosts, gateway.namespace, vs, host):
                        continue
                    seen.add(host)
                    hosts.append({"name": f"{host}:{port}", "domains": [host, f"{host}:*"],
                                  "routes": http_routes(view, vs, port)})
        if hosts and Defect.GATEWAY_ROUTES_EVERYTHING in view.defects:
            anything = [{**hosts[0]["routes"][0], "match": {"prefix": "/"}}]
            hosts.append({"name": "everything", "domains": ["*"], "routes": anything})
        rbac = rbac_filters(view.store, workload, view.trust_domains, view.defects)
        authn = [f for f in [jwt_filter(view, workload, gateway=True)] if f is not None]
        listeners.append(_http_listener(workload, port, {"name": name, "virtual_hosts": hosts,
                                                          "validate_clusters": False},
                                        [*authn, *({"name": k, "typed_config": v} for k, v in rbac.items())],
                                        _trusted_proxies(view)))
    clusters: list[dict[str, Any]] = []
    for destination in destinations(view):
        clusters += destination_clusters(view, _locality(workload), ROOT_NAMESPACE, destination, source)
    return XdsSnapshot(listeners=listeners, clusters=clusters)


def _trusted_proxies(view: MeshView) -> int:
    """ProxyConfig ``gatewayTopology.numTrustedProxies`` from MeshConfig ``defaultConfig`` (gateway.go
    buildGatewayConnectionManager). On Istio a gateway reads its ProxyConfig when it starts; the local mesh
    applies a change at once."""
    default = view.mesh_config.get("defaultConfig") or {}
    return int((default.get("gatewayTopology") or {}).get("numTrustedProxies") or 0)


def _http_listener(workload: Workload, port: int, routes: dict[str, Any], security: list[dict[str, Any]],
                   trusted_hops: int) -> dict[str, Any]:
    """RequestAuthentications and AuthorizationPolicies that select the gateway (or are mesh-wide) run before
    routing, as in Istio; the client address is taken from X-Forwarded-For past ``trusted_hops`` proxies."""
    hcm = {
        "stat_prefix": f"outbound_0.0.0.0_{listen_port(port)}",
        "route_config": routes,
        "http_filters": [*security, *http_filters()],
        "use_remote_address": True,
        "xff_num_trusted_hops": trusted_hops,
        "forward_client_cert_details": "SANITIZE",
    }
    return {
        "name": f"0.0.0.0_{listen_port(port)}",
        "address": {"socket_address": {"address": workload.addresses.pod_ip, "port_value": listen_port(port)}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager", "typed_config": any_config(_HCM, **hcm),
        }]}],
    }


def build_east_west(view: MeshView, workload: Workload, source: SourceFn) -> XdsSnapshot:
    """SNI routes to this cluster's endpoints of every service and subset (AUTO_PASSTHROUGH)."""
    chains, clusters = [], []
    here = workload.cluster.name
    for destination in destinations(view):
        local = [w for w in destination.members if w.cluster.name == here and w.in_mesh]
        if not local:
            continue
        rule = find_destination_rule(view, ROOT_NAMESPACE, destination.host)
        for port in destination.ports:
            for subset, labels in [("", {}), *subsets(rule).items()]:
                sni = istio_sni(port, subset, destination.host)
                # a subset matches Istio's labels of the endpoint, topology labels included, as the sidecar's
                # own subset clusters do (buildOutboundSniDnatClusters -> applyDestinationRule in
                # pilot/pkg/networking/core/cluster.go, through the same endpoint builder)
                istio = [(w, _locality(w).topology_labels()) for w in local]
                chosen = [w for w, own in istio if all(own.get(k) == v for k, v in labels.items())]
                targets = [Target(w.addresses.pod_ip, port, _locality(w), mtls=False, name=w.name) for w in chosen]
                chains.append({
                    "filter_chain_match": {"server_names": [sni]},
                    "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": any_config(
                        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", stat_prefix=sni, cluster=sni)}],
                })
                clusters.append({"name": sni, "type": "STATIC", "connect_timeout": "10s", "lb_policy": "LEAST_REQUEST",
                                 "load_assignment": load_assignment(sni, targets, _locality(workload), None)})
    listener = {
        "name": f"0.0.0.0_{EAST_WEST_PORT}",
        "address": {"socket_address": {"address": workload.addresses.pod_ip, "port_value": EAST_WEST_PORT}},
        "listener_filters": [{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": any_config("envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"),
        }],
        "filter_chains": chains or [_blackhole_chain()],
    }
    return XdsSnapshot(listeners=[listener], clusters=clusters)


def _blackhole_chain() -> dict[str, Any]:
    """A listener needs a chain; with no service to expose, connections are closed."""
    return {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": any_config(
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", stat_prefix="blackhole", cluster="BlackHole")}]}


def gateway_labels(kind: str) -> Mapping[str, str]:
    return INGRESS_LABELS if kind == "ingress" else EAST_WEST_LABELS
