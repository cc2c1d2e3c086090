"""VirtualService -> Envoy routes, with Istio's defaults.

A VirtualService binds to the mesh's sidecars (``gateways`` absent or containing ``mesh``) or to gateways by
name. Each http route becomes one Envoy route per ``match`` (ORed), in order; the first that matches wins; a
request no route matches gets 404 (as in Istio). Routes without ``retries`` get Istio's default retry policy
(2 retries on connect failures, refused streams and 503, to another host); ``retryRemoteLocalities`` lets a
retry go to the next locality priority.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conformance.providers.local.defects import Defect
from conformance.providers.local.envoy import any_config
from conformance.providers.local.model import Resource
from conformance.providers.local.translate.context import MeshView, normalize_host
from conformance.providers.local.translate.destination import duration

__all__ = ["DEFAULT_RETRY_POLICY", "FAULT_FILTER", "bound_virtual_service", "default_route", "http_routes"]

FAULT_FILTER = "envoy.filters.http.fault"
_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
_PREVIOUS_HOSTS = [{
    "name": "envoy.retry_host_predicates.previous_hosts",
    "typed_config": any_config("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"),
}]
DEFAULT_RETRY_POLICY: dict[str, Any] = {
    "retry_on": _RETRY_ON,
    "num_retries": 2,
    "retriable_status_codes": [503],
    "retry_host_predicate": _PREVIOUS_HOSTS,
    "host_selection_retry_max_attempts": "5",
}


def cluster_name(port: int, host: str, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{host}"


def _gateway_ref(name: str, namespace: str) -> str:
    return name if "/" in name or name == "mesh" else f"{namespace}/{name}"


def bound_virtual_service(view: MeshView, host: str, gateway: str = "mesh") -> Resource | None:
    """The (oldest) VirtualService for ``host`` bound to ``gateway`` ("mesh" or "namespace/name")."""
    for vs in view.store.of_kind("VirtualService"):
        gateways = [_gateway_ref(str(g), vs.namespace) for g in vs.spec.get("gateways") or ["mesh"]]
        if gateway not in gateways:
            continue
        hosts = [normalize_host(str(h), vs.namespace) for h in vs.spec.get("hosts") or []]
        if any(h == host or h == "*" or (h.startswith("*.") and host.endswith(h[1:])) for h in hosts):
            return vs
    return None


def retry_policy(retries: Mapping[str, Any] | None, defects: frozenset[Defect]) -> dict[str, Any]:
    if Defect.RETRIES_DISABLED in defects:
        return {"num_retries": 0}
    if retries is None:
        return DEFAULT_RETRY_POLICY
    attempts = int(retries.get("attempts", 2))
    policy: dict[str, Any] = {
        "num_retries": attempts,
        "retry_host_predicate": _PREVIOUS_HOSTS,
        "host_selection_retry_max_attempts": "5",
    }
    if attempts == 0:
        return {"num_retries": 0}
    conditions, codes = [], []
    for condition in str(retries.get("retryOn") or "").split(","):
        condition = condition.strip()
        if condition.isdigit():
            codes.append(int(condition))
        elif condition:
            conditions.append(condition)
    if codes:
        conditions.append("retriable-status-codes")
        policy["retriable_status_codes"] = codes
    if not conditions and not codes:
        conditions, policy["retriable_status_codes"] = [_RETRY_ON], [503]
    policy["retry_on"] = ",".join(conditions)
    if retries.get("perTryTimeout"):
        policy["per_try_timeout"] = duration(retries["perTryTimeout"], 0)
    if retries.get("retryRemoteLocalities"):
        policy["retry_priority"] = {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": any_config("envoy.extensions.retry.priority.previous_priorities.v3."
                                       "PreviousPrioritiesConfig", update_frequency=2),
        }
    return policy


def _percent(section: Mapping[str, Any]) -> dict[str, Any]:
    value = float((section.get("percentage") or {}).get("value", 100.0))
    return {"numerator": round(value * 10000), "denominator": "MILLION"}


def _fault(fault: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if "delay" in fault:
        config["delay"] = {"fixed_delay": duration(fault["delay"].get("fixedDelay"), 0),
                           "percentage": _percent(fault["delay"])}
    if "abort" in fault:
        config["abort"] = {"http_status": int(fault["abort"]["httpStatus"]), "percentage": _percent(fault["abort"])}
    return any_config("envoy.extensions.filters.http.fault.v3.HTTPFault", **config)


def _string_match(spec: Mapping[str, Any]) -> dict[str, Any]:
    if "exact" in spec:
        return {"exact": str(spec["exact"])}
    if "prefix" in spec:
        return {"prefix": str(spec["prefix"])}
    return {"safe_regex": {"regex": str(spec["regex"])}}


def _matches(route: Mapping[str, Any], port: int) -> list[dict[str, Any]]:
    """Envoy route matches for one http route on ``port`` (empty: the route does not apply to the port)."""
    found = []
    for match in route.get("match") or [{}]:
        if "port" in match and int(match["port"]) != port:
            continue
        envoy: dict[str, Any] = {"prefix": "/"}
        uri = match.get("uri")
        if uri:
            envoy = {"path": str(uri["exact"])} if "exact" in uri else (
                {"prefix": str(uri["prefix"])} if "prefix" in uri else {"safe_regex": {"regex": str(uri["regex"])}})
        headers = [{"name": name, "string_match": _string_match(spec)}
                   for name, spec in (match.get("headers") or {}).items()]
        if match.get("method"):
            headers.append({"name": ":method", "string_match": _string_match(match["method"])})
        if headers:
            envoy["headers"] = headers
        found.append(envoy)
    return found


def _action(route: Mapping[str, Any], vs: Resource, port: int, view: MeshView) -> dict[str, Any]:
    destinations = route.get("route") or []
    targets = []
    for item in destinations:
        destination = item["destination"]
        host = normalize_host(str(destination["host"]), vs.namespace)
        ports = view.service_ports(host)
        default_port = ports[0] if len(ports) == 1 else port  # Istio: a single-port service needs no port
        target_port = int((destination.get("port") or {}).get("number", default_port))
        targets.append((cluster_name(target_port, host, str(destination.get("subset", ""))),
                        int(item.get("weight", 100 if len(destinations) == 1 else 0))))
    action: dict[str, Any] = {"timeout": duration(route.get("timeout"), 0)}
    if len(targets) == 1:
        action["cluster"] = targets[0][0]
    else:
        action["weighted_clusters"] = {"clusters": [{"name": n, "weight": w} for n, w in targets if w > 0]}
    action["retry_policy"] = retry_policy(route.get("retries"), view.defects)
    return action


def http_routes(view: MeshView, vs: Resource, port: int) -> list[dict[str, Any]]:
    """The Envoy routes of a VirtualService for traffic to ``port``."""
    routes: list[dict[str, Any]] = []
    for index, route in enumerate(vs.spec.get("http") or []):
        for match in _matches(route, port):
            envoy: dict[str, Any] = {"name": str(route.get("name") or f"{vs.name}.{index}"), "match": match,
                                     "route": _action(route, vs, port, view)}
            if route.get("fault"):
                envoy["typed_per_filter_config"] = {FAULT_FILTER: _fault(route["fault"])}
            routes.append(envoy)
    return routes


def default_route(cluster: str, defects: frozenset[Defect]) -> list[dict[str, Any]]:
    """What a host without a VirtualService gets: everything to its cluster, with the default retries."""
    return [{"name": "default", "match": {"prefix": "/"},
             "route": {"cluster": cluster, "timeout": "0s", "retry_policy": retry_policy(None, defects)}}]


def route_targets(routes: Sequence[Mapping[str, Any]]) -> set[str]:
    """Every cluster the routes send to."""
    names: set[str] = set()
    for route in routes:
        action = route.get("route") or {}
        if "cluster" in action:
            names.add(action["cluster"])
        for weighted in (action.get("weighted_clusters") or {}).get("clusters", []):
            names.add(weighted["name"])
    return names
