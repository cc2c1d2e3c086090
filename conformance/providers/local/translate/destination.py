"""DestinationRule: which rule applies, its subsets, and what its traffic policy does to a cluster.

Istio semantics: the client namespace's rule wins over the service namespace's, which wins over the root
namespace's; an exact host over a wildcard; the oldest rule within a namespace. A subset's trafficPolicy
replaces the top-level one field by field (tls, outlierDetection, loadBalancer, connectionPool).
Traffic policy fields become Envoy cluster fields as Istio's ``pilot/pkg/networking/core/cluster_traffic_policy.go``
sets them (``applyOutlierDetection``, ``applyConnectionPool``, ``applyLocalityLoadBalancer``): a field the
rule leaves out is left out of the cluster too, so Envoy's own default applies, as it does under Istio.
Locality failover is only in effect when outlier detection is set, because without it Envoy would never
notice that local endpoints failed; ``distribute`` applies without it (Istio does the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conformance.errors import ManifestError
from conformance.istio import doc_ref
from conformance.providers.local.defects import Defect
from conformance.providers.local.model import ROOT_NAMESPACE, Resource
from conformance.providers.local.translate.context import MeshView, normalize_host
from conformance.providers.local.translate.endpoints import LocalityLb

__all__ = [
    "apply_traffic_policy",
    "find_destination_rule",
    "locality_policy",
    "subset_policy",
    "subsets",
    "validate_destination_rule",
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


_ENVOY_BASE_EJECTION_S = 30.0
"""Envoy's default ``base_ejection_time`` (what a rule without ``baseEjectionTime`` gets, under Istio too)."""


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
    if "connectTimeout" in tcp and Defect.CONNECT_TIMEOUT_IGNORED not in defects:
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
    if outlier is not None and Defect.NO_OUTLIER_DETECTION not in defects:
        cluster["outlier_detection"] = outlier_detection(outlier, defects)
        # Istio: panic mode only below minHealthPercent (default 0: never)
        cluster["common_lb_config"]["healthy_panic_threshold"] = {"value": float(outlier.get("minHealthPercent", 0))}


def outlier_detection(outlier: Mapping[str, Any], defects: frozenset[Defect]) -> dict[str, Any]:
    """Istio's ``applyOutlierDetection``: success-rate ejection off; each consecutive-errors detector that the
    rule names is enforced (100%) unless its count is 0; what the rule leaves out keeps Envoy's default, so
    without ``consecutive5xxErrors`` Envoy's consecutive-5xx detector (5 errors, enforced) stays on."""
    detection: dict[str, Any] = {"enforcing_success_rate": 0}
    for field, count, enforcing in (
        ("consecutive5xxErrors", "consecutive_5xx", "enforcing_consecutive_5xx"),
        ("consecutiveGatewayErrors", "consecutive_gateway_failure", "enforcing_consecutive_gateway_failure"),
    ):
        if field in outlier:
            detection[count] = int(outlier[field])
            detection[enforcing] = 100 if int(outlier[field]) > 0 else 0
    if "interval" in outlier:
        detection["interval"] = duration(outlier["interval"], 10)
    ejection = _seconds(outlier.get("baseEjectionTime"), _ENVOY_BASE_EJECTION_S)
    if Defect.FAILBACK_SLOW in defects:
        detection["base_ejection_time"] = duration(f"{3 * ejection}s", 0)
    elif "baseEjectionTime" in outlier:
        detection["base_ejection_time"] = duration(outlier["baseEjectionTime"], _ENVOY_BASE_EJECTION_S)
    if int(outlier.get("maxEjectionPercent", 0)) > 0:
        detection["max_ejection_percent"] = int(outlier["maxEjectionPercent"])
    return detection


def locality_policy(view: MeshView, policy: Mapping[str, Any]) -> LocalityLb | None:
    """The localityLbSetting in effect (Istio's ``GetLocalityLbSetting``), or None when it is disabled."""
    if Defect.NO_LOCALITY_PRIORITY in view.defects:
        return None
    lb = policy.get("loadBalancer") or {}
    # without one in the rule, the mesh default applies: meshConfig.localityLbSetting {enabled: true}
    setting = dict(lb.get("localityLbSetting") or {"enabled": True})
    if setting.get("enabled") is False:
        return None
    if Defect.DISTRIBUTE_IGNORED in view.defects:
        setting.pop("distribute", None)
    if Defect.FAILOVER_PRIORITY_IGNORED in view.defects:
        setting.pop("failoverPriority", None)
    if Defect.LOCALITY_FAILOVER_IGNORED in view.defects:
        setting.pop("failover", None)
    failover = policy.get("outlierDetection") is not None and Defect.NO_OUTLIER_DETECTION not in view.defects
    return LocalityLb(setting, failover)


_TOPOLOGY_LABELS = ("topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone")


def validate_destination_rule(doc: Mapping[str, Any]) -> None:
    """Raise ManifestError where Istio's validating webhook refuses a DestinationRule's traffic policy
    (``validateTrafficPolicy``, ``ValidateLocalityLbSetting`` in pkg/config/validation), naming the field."""
    spec = doc.get("spec") or {}
    ref = doc_ref(doc)
    policies = [("spec.trafficPolicy", spec.get("trafficPolicy"))]
    policies += [(f"spec.subsets[{i}].trafficPolicy", (s or {}).get("trafficPolicy"))
                 for i, s in enumerate(spec.get("subsets") or [])]
    for path, policy in policies:
        if policy is None:
            continue
        if not policy:
            raise ManifestError(f"{ref}: {path}: traffic policy must have at least one field "
                                "(Istio's validation refuses it)")
        setting = (policy.get("loadBalancer") or {}).get("localityLbSetting")
        if setting:
            _validate_locality_lb(ref, f"{path}.loadBalancer.localityLbSetting", setting)


def _validate_locality_lb(ref: str, path: str, setting: Mapping[str, Any]) -> None:
    def fail(reason: str) -> ManifestError:
        return ManifestError(f"{ref}: {path}: {reason} (Istio's validation refuses it)")

    failover = setting.get("failover") or []
    if setting.get("distribute") and failover:
        raise fail("can not simultaneously specify 'distribute' and 'failover'")
    if failover:
        for label in setting.get("failoverPriority") or []:
            if label in _TOPOLOGY_LABELS:
                raise fail(f"can not simultaneously set 'failover' and topology label '{label}' in "
                           "'failover_priority'")
    for rule in setting.get("distribute") or []:
        weights = [int(w) for w in (rule.get("to") or {}).values()]
        if any(w <= 0 or w > 100 for w in weights):
            raise fail("locality weight must be in range [1, 100]")
        if sum(weights) != 100:
            raise fail(f"total locality weight {sum(weights)} != 100")
    for rule in failover:
        source, target = str(rule.get("from", "")), str(rule.get("to", ""))
        if source == target:
            raise fail("locality lb failover settings must specify different regions")
        if "/" in source or "/" in target:
            raise fail("locality lb failover only specify region")
        if "*" in source or "*" in target:
            raise fail("locality lb failover region should not contain '*' wildcard")
