"""A sidecar's outbound side: the ``virtualOutbound`` listener, its routes, and one cluster per service port.

The app sends every outbound call to its sidecar as an explicit HTTP proxy (there is no iptables here), with
``Host: <service>.<namespace>.svc.cluster.local:<port>``; the route config picks the cluster by Host, as
Istio's outbound routes do. Clusters are named as Istio names them (``outbound|8080||host``) and get their
endpoints through EDS, grouped by locality, from every cluster this control plane discovers.
"""

from __future__ import annotations

from typing import Any

from conformance.certs import spiffe_id
from conformance.providers.local.addresses import OUTBOUND_PORT
from conformance.providers.local.defects import Defect
from conformance.providers.local.envoy import any_config
from conformance.providers.local.model import ROOT_NAMESPACE, Resource, Service, Workload
from conformance.providers.local.translate.context import MeshView, SourceFn, normalize_host
from conformance.providers.local.translate.mtls import endpoint_uses_mtls
from conformance.providers.local.translate.tls import istio_sni, upstream_mtls

__all__ = ["OUTBOUND_ROUTE", "find_destination_rule", "outbound_config"]

OUTBOUND_ROUTE = "outbound"
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_MAX = 4294967295  # Istio's default circuit-breaker thresholds: effectively none
DEFAULT_RETRY_POLICY: dict[str, Any] = {
    # Istio's default for every HTTP route without a VirtualService retry policy.
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2,
    "retriable_status_codes": [503],
    "retry_host_predicate": [{
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": any_config("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"),
    }],
    "host_selection_retry_max_attempts": "5",
}


def cluster_name(port: int, host: str, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{host}"


def find_destination_rule(view: MeshView, client_namespace: str, host: str) -> Resource | None:
    """The DestinationRule for ``host`` as a client in ``client_namespace`` sees it.

    Istio looks in the client's namespace first, then the service's, then the root namespace; an exact host
    beats a wildcard; within a namespace the oldest rule wins.
    """
    service_namespace = host.split(".")[1] if host.count(".") >= 2 else client_namespace
    for namespace in dict.fromkeys((client_namespace, service_namespace, ROOT_NAMESPACE)):
        rules = view.store.of_kind("DestinationRule", namespace)
        exact = [r for r in rules if normalize_host(str(r.spec.get("host", "")), r.namespace) == host]
        wild = [r for r in rules if _wildcard_matches(normalize_host(str(r.spec.get("host", "")), r.namespace), host)]
        for candidates in (exact, wild):
            if candidates:
                return candidates[0]
    return None


def _wildcard_matches(pattern: str, host: str) -> bool:
    return pattern == "*" or (pattern.startswith("*.") and host.endswith(pattern[1:]))


def outbound_listener(workload: Workload, source: SourceFn) -> dict[str, Any]:
    hcm = {
        "stat_prefix": "outbound_0.0.0.0_15001",
        "rds": {"route_config_name": OUTBOUND_ROUTE, "config_source": source("rds", OUTBOUND_ROUTE)},
        "http_filters": [{
            "name": "envoy.filters.http.router",
            "typed_config": any_config("envoy.extensions.filters.http.router.v3.Router"),
        }],
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


def _domains(service: Service, port: int, client_namespace: str) -> list[str]:
    names = [service.host, f"{service.name}.{service.namespace}.svc", f"{service.name}.{service.namespace}"]
    if service.namespace == client_namespace:
        names.append(service.name)
    return [f"{name}:{port}" for name in names]


def _tls_mode(rule: Resource | None) -> str | None:
    if rule is None:
        return None
    tls = (rule.spec.get("trafficPolicy") or {}).get("tls") or {}
    mode = tls.get("mode")
    return str(mode) if mode else None


def _cluster(view: MeshView, service: Service, port: int, rule: Resource | None, source: SourceFn,
             endpoints: list[Workload]) -> dict[str, Any]:
    name = cluster_name(port, service.host)
    accounts = sorted({spiffe_id(view.trust_domain, w.namespace, w.service_account) for w in endpoints if w.in_mesh})
    mtls = upstream_mtls(source, accounts, istio_sni(port, "", service.host))
    cluster: dict[str, Any] = {
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {"service_name": name, "eds_config": source("eds", name)},
        "connect_timeout": "10s",
        "lb_policy": "LEAST_REQUEST",
        "circuit_breakers": {"thresholds": [{
            "max_connections": _MAX, "max_pending_requests": _MAX, "max_requests": _MAX, "max_retries": _MAX,
        }]},
        "common_lb_config": {},
    }
    mode = _tls_mode(rule)
    if mode == "ISTIO_MUTUAL" and Defect.ALWAYS_PLAINTEXT not in view.defects:
        cluster["transport_socket"] = mtls
    elif mode is None:
        # auto-mTLS: endpoints istiod marked tlsMode=istio get mTLS, the others plaintext
        cluster["transport_socket_matches"] = [
            {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": mtls},
            {"name": "tlsMode-disabled", "match": {}, "transport_socket": {
                "name": "envoy.transport_sockets.raw_buffer",
                "typed_config": any_config("envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"),
            }},
        ]
    return cluster


def _load_assignment(view: MeshView, name: str, port: int, endpoints: list[Workload]) -> dict[str, Any]:
    by_locality: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for workload in endpoints:
        metadata: dict[str, Any] = {"istio": {"workload": f"{workload.spec.service};{workload.namespace};"
                                                          f"{workload.spec.version};{workload.cluster.name}"}}
        if endpoint_uses_mtls(view.store, workload, port, view.defects):
            metadata["envoy.transport_socket_match"] = {"tlsMode": "istio"}
        by_locality.setdefault((workload.cluster.region, workload.zone), []).append({
            "endpoint": {"address": {"socket_address": {"address": workload.addresses.pod_ip, "port_value": port}}},
            "metadata": {"filter_metadata": metadata},
            "load_balancing_weight": 1,
        })
    return {
        "cluster_name": name,
        "endpoints": [
            {"locality": {"region": region, "zone": zone}, "lb_endpoints": lb_endpoints}
            for (region, zone), lb_endpoints in sorted(by_locality.items())
        ],
    }


def outbound_config(
    view: MeshView, workload: Workload, source: SourceFn
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The outbound listener, clusters, endpoints (by cluster name) and routes (by name) of a sidecar."""
    clusters: list[dict[str, Any]] = []
    endpoints: dict[str, dict[str, Any]] = {}
    virtual_hosts: list[dict[str, Any]] = []
    visible = set(view.visible)
    if Defect.NO_CROSS_CLUSTER_ENDPOINTS in view.defects:
        visible = {workload.cluster.name}
    for service in view.registry.services(set(view.visible)):
        rule = find_destination_rule(view, workload.namespace, service.host)
        members = view.registry.endpoints(service, visible)
        for port in service.ports:
            name = cluster_name(port, service.host)
            cluster = _cluster(view, service, port, rule, source, members)
            # a pod's connections come from its pod IP (what a server's ipBlocks / source.ip see)
            cluster["upstream_bind_config"] = {"source_address": {"address": workload.addresses.pod_ip,
                                                                  "port_value": 0}}
            clusters.append(cluster)
            endpoints[name] = _load_assignment(view, name, port, members)
            virtual_hosts.append({
                "name": f"{service.host}:{port}",
                "domains": _domains(service, port, workload.namespace),
                "routes": [{
                    "name": "default",
                    "match": {"prefix": "/"},
                    "route": {"cluster": name, "timeout": "0s", "retry_policy": DEFAULT_RETRY_POLICY},
                }],
            })
    routes = {OUTBOUND_ROUTE: {"name": OUTBOUND_ROUTE, "virtual_hosts": virtual_hosts,
                               "validate_clusters": False}}
    return outbound_listener(workload, source), clusters, endpoints, routes

