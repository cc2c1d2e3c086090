"""Endpoints (EDS) as a proxy sees them: network-aware, subset-filtered, locality-prioritised.

- Same network: the pod itself. Another network: that network's east-west gateway (port 15443) stands in
  for all of its pods of the service, with their count as weight, as Istio's split horizon EDS does.
- A target in another cluster is reached through the link between the two clusters (a relay that can add
  latency or be cut), so the network is emulated honestly on the path.
- Locality failover (DestinationRule localityLbSetting, with outlier detection): priority 0 for the proxy's
  own zone, then its region, then others; ``failover`` from/to and ``failoverPriority`` labels as Istio
  orders them; ``distribute`` sets locality weights instead.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conformance.providers.local.defects import Defect
from conformance.providers.local.model import Workload
from conformance.providers.local.translate.context import MeshView
from conformance.providers.local.translate.mtls import endpoint_uses_mtls

__all__ = ["EAST_WEST_PORT", "Endpoint", "Locality", "load_assignment", "service_endpoints"]

EAST_WEST_PORT = 15443


@dataclass(frozen=True)
class Locality:
    region: str
    zone: str
    cluster: str
    network: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def topology_labels(self) -> dict[str, str]:
        """A proxy's or endpoint's labels as failoverPriority sees them."""
        return {
            **self.labels,
            "topology.kubernetes.io/region": self.region,
            "topology.kubernetes.io/zone": self.zone,
            "topology.istio.io/cluster": self.cluster,
            "topology.istio.io/network": self.network,
        }


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    locality: Locality
    mtls: bool
    weight: int = 1
    name: str = ""


def service_endpoints(view: MeshView, proxy: Locality, members: Sequence[Workload], port: int,
                      subset_labels: Mapping[str, str]) -> list[Endpoint]:
    """The endpoints of ``members`` (a service's pods) on ``port`` that a proxy at ``proxy`` connects to."""
    chosen = [w for w in members if all(w.labels.get(k) == v for k, v in subset_labels.items())]
    if Defect.NO_CROSS_CLUSTER_ENDPOINTS in view.defects:
        chosen = [w for w in chosen if w.cluster.name == proxy.cluster]
    direct: list[Endpoint] = []
    remote: dict[str, list[Workload]] = {}
    for workload in chosen:
        if workload.cluster.network == proxy.network or not view.east_west:
            address, real_port = view.reach(proxy.cluster, workload.cluster.name, workload.addresses.pod_ip, port)
            direct.append(Endpoint(address, real_port, _locality(workload),
                                   endpoint_uses_mtls(view.store, workload, port, view.defects), 1, workload.name))
        elif workload.in_mesh:  # out-of-mesh pods are not reachable through an east-west gateway
            remote.setdefault(workload.cluster.name, []).append(workload)
    for cluster_name, workloads in sorted(remote.items()):
        gateway = view.east_west.get(cluster_name)
        if gateway is None:
            continue  # that cluster has no east-west gateway: its pods are unreachable from here
        address, real_port = view.reach(proxy.cluster, cluster_name, gateway, EAST_WEST_PORT)
        first = workloads[0]
        mtls = Defect.PLAINTEXT_CROSS_NETWORK not in view.defects
        direct.append(Endpoint(address, real_port, _locality(first), mtls, len(workloads),
                               f"east-west-gateway.{cluster_name}"))
    return direct


def _locality(workload: Workload) -> Locality:
    return Locality(workload.cluster.region, workload.zone, workload.cluster.name, workload.cluster.network,
                    workload.labels)


def _priority(proxy: Locality, endpoint: Locality, setting: Mapping[str, Any]) -> int:
    labels = setting.get("failoverPriority") or []
    if labels:
        mine, theirs = proxy.topology_labels(), endpoint.topology_labels()
        matched = 0
        for label in labels:
            key, _, value = str(label).partition("=")
            expected = value if value else mine.get(key)
            if expected is None or theirs.get(key) != expected:
                break
            matched += 1
        return len(labels) - matched
    if endpoint.region == proxy.region:
        return 0 if endpoint.zone == proxy.zone else 1
    for rule in setting.get("failover") or []:
        if rule.get("from") == proxy.region:
            return 2 if endpoint.region == rule.get("to") else 3
    return 2


def _distribution(proxy: Locality, setting: Mapping[str, Any]) -> Mapping[str, int] | None:
    for rule in setting.get("distribute") or []:
        if fnmatch.fnmatch(f"{proxy.region}/{proxy.zone}/", _glob(str(rule.get("from", "")))):
            return {str(k): int(v) for k, v in (rule.get("to") or {}).items()}
    return None


def _glob(pattern: str) -> str:
    """Istio locality patterns ``region/zone/subzone`` with ``*``; we have no subzones."""
    parts = pattern.split("/")
    while len(parts) < 3:
        parts.append("*")
    return "/".join(parts[:2]) + "/" + ("*" if parts[2] == "*" else parts[2])


def _first_match(key: tuple[str, str], distribution: Mapping[str, int]) -> str | None:
    return next((p for p in distribution if fnmatch.fnmatch(f"{key[0]}/{key[1]}/", _glob(p))), None)


def load_assignment(name: str, endpoints: Sequence[Endpoint], proxy: Locality,
                    setting: Mapping[str, Any] | None) -> dict[str, Any]:
    """A ClusterLoadAssignment: one locality group per (region, zone, priority)."""
    groups: dict[tuple[str, str], list[Endpoint]] = {}
    for endpoint in endpoints:
        groups.setdefault((endpoint.locality.region, endpoint.locality.zone), []).append(endpoint)
    distribution = _distribution(proxy, setting) if setting else None
    localities: list[dict[str, Any]] = []
    priorities: dict[tuple[str, str], int] = {}
    weights: dict[tuple[str, str], int] = {}
    for key, members in groups.items():
        locality = members[0].locality
        if distribution is not None:
            pattern = _first_match(key, distribution)
            if pattern is None or distribution[pattern] <= 0:
                continue  # a locality the rule gives no traffic to is left out, as in Istio
            sharing = sum(1 for k in groups if _first_match(k, distribution) == pattern)
            weights[key] = max(1, round(distribution[pattern] / sharing))
        elif setting is not None:
            priorities[key] = _priority(proxy, locality, setting)
    ordered = sorted(set(priorities.values()))
    for key, members in sorted(groups.items()):
        if distribution is not None and key not in weights:
            continue
        group: dict[str, Any] = {
            "locality": {"region": key[0], "zone": key[1]},
            "lb_endpoints": [_lb_endpoint(e) for e in members],
        }
        if key in priorities:
            group["priority"] = ordered.index(priorities[key])  # Envoy needs contiguous priorities
        if key in weights:
            group["load_balancing_weight"] = weights[key]
        localities.append(group)
    return {"cluster_name": name, "endpoints": localities}


def _lb_endpoint(endpoint: Endpoint) -> dict[str, Any]:
    metadata: dict[str, Any] = {"istio": {"workload": endpoint.name}}
    if endpoint.mtls:
        metadata["envoy.transport_socket_match"] = {"tlsMode": "istio"}
    return {
        "endpoint": {"address": {"socket_address": {"address": endpoint.address, "port_value": endpoint.port}}},
        "metadata": {"filter_metadata": metadata},
        "load_balancing_weight": endpoint.weight,
    }


def uses_locality_weights(setting: Mapping[str, Any] | None, proxy: Locality) -> bool:
    return bool(setting) and _distribution(proxy, setting or {}) is not None
