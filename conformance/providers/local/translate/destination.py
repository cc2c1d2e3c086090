"""DestinationRule: which rule applies, its subsets, and what its traffic policy does to a cluster.

Istio semantics: the client namespace's rule wins over the service namespace's, which wins over the root
namespace's; an exact host over a wildcard; the oldest rule within a namespace. A subset's trafficPolicy
replaces the top-level one field by field (tls, outlierDetection, loadBalancer, connectionPool).
Locality failover is only in effect when outlier detection is set, because without it Envoy would never
notice that local endpoints failed (Istio does the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conformance.providers.local.defects import Defect
from conformance.providers.local.model import ROOT_NAMESPACE, Resource
from conformance.providers.local.translate.context import MeshView, normalize_host

__all__ = [
    "apply_traffic_policy",
    "find_destination_rule",
    "locality_policy",
    "subset_policy",
    "subsets",
]

_POLICY_FIELDS = ("tls", "outlierDetection", "loadBalancer", "connectionPool")
_LB = {"ROUND_ROBIN": "ROUND_ROBIN", "LEAST_REQUEST": "LEAST_REQUEST", "RANDOM": "RANDOM",
       "UNSPECIFIED": "LEAST_REQUEST", "LEAST_CONN": "LEAST_REQUEST"}


def find_destination_rule(view: MeshView, client_namespace: str, host: str) -> Resource | None:
    """The DestinationRule for ``host`` as a client in ``client_namespace`` sees it."""
    service_namespace = host.split(".")[1] if host.endswith(".svc.cluster.local") else client_namespace
    for namespace in dict.fromkeys((client_namespace, service_namespace, ROOT_NAMESPACE)):
        rules = view.store.of_kind("DestinationRule", namespace)
        hosts = [(normalize_host(str(r.spec.get("host", "")), r.namespace), r) for r in rules]
        exact = [r for h, r in hosts if h == host]
        wild = [r for h, r in hosts if _wildcard_matches(h, host)]
        for candidates in (exact, wild):
            if candidates:
                return candidates[0]
    return None


def _wildcard_matches(pattern: str, host: str) -> bool:
    return pattern == "*" or (pattern.startswith("*.") and host.endswith(pattern[1:]))


def subsets(rule: Resource | None) -> dict[str, Mapping[str, str]]:
    """Subset name -> the labels its endpoints must carry."""
    if rule is None:
        return {}
    return {str(s["name"]): dict(s.get("labels") or {}) for s in rule.spec.get("subsets") or []}


def subset_policy(rule: Resource | None, subset: str) -> dict[str, Any]:
    """The effective trafficPolicy for ``subset`` ("" for the service as a whole)."""
    if rule is None:
        return {}
    policy = dict(rule.spec.get("trafficPolicy") or {})
    for item in rule.spec.get("subsets") or []:
        if item.get("name") == subset and subset:
            for key in _POLICY_FIELDS:
                if key in (item.get("trafficPolicy") or {}):
                    policy[key] = item["trafficPolicy"][key]
    return policy


def _seconds(duration: str | None, default: float) -> float:
    """Istio durations: ``1s``, ``500ms``, ``1m``, ``1.5s``."""
    if not duration:
        return default
    text = str(duration).strip()
    for suffix, factor in (("ms", 0.001), ("us", 0.000001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def duration(value: str | None, default: float) -> str:
    """An Istio duration as a protobuf JSON duration (``"1.5s"``)."""
    return f"{_seconds(value, default):.6f}".rstrip("0").rstrip(".") + "s"


def requests_per_connection(cluster: dict[str, Any], limit: int) -> None:
    """At most ``limit`` requests on one upstream connection of ``cluster`` (then a new connection)."""
    cluster["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": {"max_requests_per_connection": limit},
            "explicit_http_config": {"http_protocol_options": {}},
        }
    }


def apply_traffic_policy(cluster: dict[str, Any], policy: Mapping[str, Any], defects: frozenset[Defect]) -> None:
    """Load balancer, connection pool and outlier detection of a DestinationRule onto an Envoy cluster."""
    lb = policy.get("loadBalancer") or {}
    if "simple" in lb:
        cluster["lb_policy"] = _LB[str(lb["simple"])]
    pool = policy.get("connectionPool") or {}
    tcp, http = pool.get("tcp") or {}, pool.get("http") or {}
    thresholds = cluster["circuit_breakers"]["thresholds"][0]
    if "maxConnections" in tcp:
        thresholds["max_connections"] = int(tcp["maxConnections"])
    if "connectTimeout" in tcp:
        cluster["connect_timeout"] = duration(tcp["connectTimeout"], 10)
    if "http1MaxPendingRequests" in http:
        thresholds["max_pending_requests"] = int(http["http1MaxPendingRequests"])
    if "http2MaxRequests" in http:
        thresholds["max_requests"] = int(http["http2MaxRequests"])
    if "maxRetries" in http:
        thresholds["max_retries"] = int(http["maxRetries"])
    if Defect.NO_CONNECTION_REUSE in defects:
        requests_per_connection(cluster, 1)
    elif "maxRequestsPerConnection" in http:
        requests_per_connection(cluster, int(http["maxRequestsPerConnection"]))
    outlier = policy.get("outlierDetection")
    if outlier and Defect.NO_OUTLIER_DETECTION not in defects:
        detection: dict[str, Any] = {
            "interval": duration(outlier.get("interval"), 10),
            "base_ejection_time": duration(outlier.get("baseEjectionTime"), 30),
            "max_ejection_percent": int(outlier.get("maxEjectionPercent", 10)),
            "enforcing_success_rate": 0,
        }
        if "consecutive5xxErrors" in outlier:
            detection["consecutive_5xx"] = int(outlier["consecutive5xxErrors"])
            detection["enforcing_consecutive_5xx"] = 100 if int(outlier["consecutive5xxErrors"]) else 0
        else:
            detection["enforcing_consecutive_5xx"] = 0
        if "consecutiveGatewayErrors" in outlier:
            detection["consecutive_gateway_failure"] = int(outlier["consecutiveGatewayErrors"])
            detection["enforcing_consecutive_gateway_failure"] = 100
        cluster["outlier_detection"] = detection
        # Istio: panic mode only below minHealthPercent (default 0: never)
        cluster["common_lb_config"]["healthy_panic_threshold"] = {"value": float(outlier.get("minHealthPercent", 0))}


def locality_policy(view: MeshView, policy: Mapping[str, Any]) -> dict[str, Any] | None:
    """The localityLbSetting in effect, or None (off: no outlier detection, or disabled)."""
    if not policy.get("outlierDetection") or Defect.NO_OUTLIER_DETECTION in view.defects:
        return None
    setting = dict((policy.get("loadBalancer") or {}).get("localityLbSetting") or {})
    if setting.get("enabled") is False or Defect.NO_LOCALITY_PRIORITY in view.defects:
        return None
    return setting
