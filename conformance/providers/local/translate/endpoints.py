"""Endpoints (EDS) as a proxy sees them: network-aware, subset-filtered, locality-prioritised.

- Same network: the pod itself. Another network: that network's east-west gateway (port 15443) stands in
  for its pods of the service, one gateway endpoint per locality with their count as weight, as Istio's
  split horizon EDS does (``pilot/pkg/xds/endpoints/ep_filters.go``).
- A target in another cluster is reached through the link between the two clusters (a relay that can add
  latency or be cut), so the network is emulated honestly on the path.
- Endpoints are grouped by locality (region/zone), each group weighted by the sum of its endpoints' weights
  (``endpoint_builder.go``). A DestinationRule's ``localityLbSetting`` then changes them exactly as Istio's
  ``pilot/pkg/networking/core/loadbalancer/loadbalancer.go`` does: ``distribute`` sets the groups' weights
  (with or without outlier detection); otherwise, only when outlier detection is set, ``failoverPriority``
  gives each endpoint a priority from its labels (combined with ``failover`` when both are set) and
  ``failover`` / the default orders localities by zone, region, then the ``failover`` target region.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conformance.providers.local.defects import Defect
from conformance.providers.local.model import Workload
from conformance.providers.local.translate.context import MeshView
from conformance.providers.local.translate.mtls import endpoint_uses_mtls

__all__ = ["EAST_WEST_PORT", "Endpoint", "Locality", "LocalityLb", "load_assignment", "service_endpoints",
           "uses_locality_weights"]

EAST_WEST_PORT = 15443
REGION = "topology.kubernetes.io/region"
ZONE = "topology.kubernetes.io/zone"
CLUSTER = "topology.istio.io/cluster"
NETWORK = "topology.istio.io/network"


@dataclass(frozen=True)
class Locality:
    region: str
    zone: str
    cluster: str
    network: str
    labels: Mapping[str, str] = field(default_factory=dict)
    """The pod's (or ServiceEntry endpoint's, or proxy's) own labels."""

    def topology_labels(self) -> dict[str, str]:
        """The labels Istio matches a proxy or a pod by: its own plus the topology labels Istio adds
        (``labelutil.AugmentLabels``: only non-empty values; a pod's own network label wins). There is no
        ``kubernetes.io/hostname``: the local mesh has no nodes."""
        labels = dict(self.labels)
        for key, value in ((REGION, self.region), (ZONE, self.zone), (CLUSTER, self.cluster)):
            if value:
                labels[key] = value
        if self.network and not labels.get(NETWORK):
            labels[NETWORK] = self.network
        return labels


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    locality: Locality
    mtls: bool
    weight: int = 1
    name: str = ""
    labels: Mapping[str, str] | None = None
    """Istio's labels of this endpoint (what subsets and failoverPriority match); None: the pod's,
    ``locality.topology_labels()``."""

    def istio_labels(self) -> Mapping[str, str]:
        return self.locality.topology_labels() if self.labels is None else self.labels


@dataclass(frozen=True)
class LocalityLb:
    """The localityLbSetting in effect for one cluster (Istio's ``GetLocalityLbSetting``: the DestinationRule's,
    else the mesh default ``{enabled: true}``), and whether failover applies: Istio applies ``failover``,
    ``failoverPriority`` and the default locality priorities only when outlier detection is set, because
    Envoy would otherwise never leave a failed locality; ``distribute`` applies either way."""

    setting: Mapping[str, Any]
    failover: bool


def service_endpoints(view: MeshView, proxy: Locality, members: Sequence[Workload], port: int,
                      subset_labels: Mapping[str, str]) -> list[Endpoint]:
    """The endpoints of ``members`` (a service's pods) on ``port`` that a proxy at ``proxy`` connects to."""
    chosen = [w for w in members if _selected(_locality(w).topology_labels(), subset_labels)]
    if Defect.NO_CROSS_CLUSTER_ENDPOINTS in view.defects:
        chosen = [w for w in chosen if w.cluster.name == proxy.cluster]
    direct: list[Endpoint] = []
    remote: dict[tuple[str, str], list[Workload]] = {}
    for workload in chosen:
        if workload.cluster.network == proxy.network or not view.east_west:
            address, real_port = view.reach(proxy.cluster, workload.cluster.name, workload.addresses.pod_ip, port)
            direct.append(Endpoint(address, real_port, _locality(workload),
                                   endpoint_uses_mtls(view.store, workload, port, view.defects), 1, workload.name))
        elif workload.in_mesh:  # out-of-mesh pods are not reachable through an east-west gateway
            remote.setdefault((workload.cluster.name, workload.zone), []).append(workload)
    for (cluster_name, _zone), workloads in sorted(remote.items()):
        gateway = view.east_west.get(cluster_name)
        if gateway is None:
            continue  # that cluster has no east-west gateway: its pods are unreachable from here
        address, real_port = view.reach(proxy.cluster, cluster_name, gateway, EAST_WEST_PORT)
        first = workloads[0]
        mtls = Defect.PLAINTEXT_CROSS_NETWORK not in view.defects
        # Istio's gateway endpoint carries only the cluster and network labels, not the pods' own
        labels = {CLUSTER: cluster_name, NETWORK: first.cluster.network}
        direct.append(Endpoint(address, real_port, _locality(first), mtls, len(workloads),
                               f"east-west-gateway.{cluster_name}", labels))
    return direct


def _selected(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def _locality(workload: Workload) -> Locality:
    return Locality(workload.cluster.region, workload.zone, workload.cluster.name, workload.cluster.network,
                    workload.labels)


# -- localityLbSetting, as pilot/pkg/networking/core/loadbalancer/loadbalancer.go applies it ----------------


@dataclass
class _Group:
    """One LocalityLbEndpoints: a locality's endpoints (or part of them, after failoverPriority)."""

    locality: Locality
    endpoints: list[Endpoint]
    weight: int
    priority: int = 0


def _locality_match(locality: Locality, rule: str) -> bool:
    """Istio's ``util.LocalityMatch``: ``region/zone/subzone`` with ``*`` or an omitted part matching all."""
    region, zone, subzone = [*rule.split("/"), "", ""][:3]
    return (region in ("*", locality.region) and zone in ("*", "", locality.zone)
            and subzone in ("*", ""))  # the local mesh has no subzones


def _apply_weights(groups: list[_Group], proxy: Locality, distribute: Iterable[Mapping[str, Any]]) -> None:
    """``applyLocalityWeights``: the first rule whose ``from`` matches the proxy sets each matched group's
    weight to ceil(its share of the rule's weight); groups no ``to`` matches get no endpoints."""
    for rule in distribute:
        if not _locality_match(proxy, str(rule.get("from", ""))):
            continue
        unmatched = list(groups)
        for pattern, weight in (rule.get("to") or {}).items():
            matched = [g for g in unmatched if _locality_match(g.locality, str(pattern))]
            total = sum(g.weight for g in matched)
            for group in matched:
                unmatched.remove(group)
                share = group.weight * int(weight) / total
                if share > 0:
                    group.weight = math.ceil(share)
        for group in unmatched:
            group.endpoints = []
        return


def _lb_priority(proxy: Locality, locality: Locality) -> int:
    """``util.LbPriority``: 0 same zone (and subzone), 1 same zone other subzone, 2 same region, 3 other."""
    if proxy.region == locality.region:
        return 0 if proxy.zone == locality.zone else 2
    return 3


def _apply_failover(groups: list[_Group], proxy: Locality, failover: Iterable[Mapping[str, Any]]) -> None:
    """``applyLocalityFailover``: priority by locality; another region than a ``failover`` rule's ``to`` (for
    the proxy's region) comes last; a priority already set (by failoverPriority) counts first."""
    rules = list(failover)
    for group in groups:
        priority = _lb_priority(proxy, group.locality)
        if priority == 3:
            rule = next((r for r in rules if r.get("from") == proxy.region), None)
            if rule is not None and group.locality.region != rule.get("to"):
                priority = 4
        group.priority = group.priority * 5 + priority
    _contiguous(groups)


def _label_priority(proxy_labels: Mapping[str, str], endpoint: Endpoint, priorities: Sequence[str]) -> int:
    """``applyFailoverPriorityPerLocality``: 0 if every label matches the proxy's value (or the ``label=value``
    override), else len(labels) - the index of the first that does not; a label both lack matches."""
    theirs = endpoint.istio_labels()
    for index, item in enumerate(priorities):
        parts = item.split("=")
        label = parts[0]
        mine = parts[1] if len(parts) == 2 else proxy_labels.get(label, "")
        if mine != theirs.get(label, ""):
            return len(priorities) - index
    return 0


def _apply_failover_priority(groups: list[_Group], proxy: Locality, priorities: Sequence[str]) -> list[_Group]:
    """``applyFailoverPriorities``: split each locality group by its endpoints' label priorities."""
    proxy_labels = proxy.topology_labels()
    split: list[_Group] = []
    for group in groups:
        by_priority: dict[int, list[Endpoint]] = {}
        for endpoint in group.endpoints:
            by_priority.setdefault(_label_priority(proxy_labels, endpoint, priorities), []).append(endpoint)
        for priority, members in sorted(by_priority.items()):
            split.append(_Group(group.locality, members, sum(e.weight for e in members), priority))
    _contiguous(split)
    return split


def _contiguous(groups: list[_Group]) -> None:
    """Envoy needs priorities 0..N without gaps; Istio renumbers them in order."""
    ordered = sorted({g.priority for g in groups})
    for group in groups:
        group.priority = ordered.index(group.priority)


def load_assignment(name: str, endpoints: Sequence[Endpoint], proxy: Locality,
                    locality: LocalityLb | None) -> dict[str, Any]:
    """A ClusterLoadAssignment: one group per locality (per priority, after failoverPriority), weighted."""
    by_locality: dict[tuple[str, str], list[Endpoint]] = {}
    for endpoint in endpoints:
        by_locality.setdefault((endpoint.locality.region, endpoint.locality.zone), []).append(endpoint)
    groups = [_Group(members[0].locality, members, sum(e.weight for e in members))
              for _, members in sorted(by_locality.items())]
    if locality is not None:
        setting = locality.setting
        if setting.get("distribute"):
            _apply_weights(groups, proxy, setting["distribute"])
        elif locality.failover:
            if setting.get("failoverPriority"):
                groups = _apply_failover_priority(groups, proxy, [str(p) for p in setting["failoverPriority"]])
                if setting.get("failover"):
                    _apply_failover(groups, proxy, setting["failover"])
            else:
                _apply_failover(groups, proxy, setting.get("failover") or [])
    return {"cluster_name": name, "endpoints": [
        {
            "locality": {"region": g.locality.region, "zone": g.locality.zone},
            "lb_endpoints": [_lb_endpoint(e) for e in g.endpoints],
            "load_balancing_weight": g.weight,
            "priority": g.priority,
        }
        for g in groups if g.endpoints
    ]}


def _lb_endpoint(endpoint: Endpoint) -> dict[str, Any]:
    metadata: dict[str, Any] = {"istio": {"workload": endpoint.name}}
    if endpoint.mtls:
        metadata["envoy.transport_socket_match"] = {"tlsMode": "istio"}
    return {
        "endpoint": {"address": {"socket_address": {"address": endpoint.address, "port_value": endpoint.port}}},
        "metadata": {"filter_metadata": metadata},
        "load_balancing_weight": endpoint.weight,
    }


def uses_locality_weights(locality: LocalityLb | None) -> bool:
    """Istio sets ``locality_weighted_lb_config`` for ``distribute``, and for ``failover`` or
    ``failoverPriority`` when failover applies (``applyLocalityLoadBalancer`` in cluster_traffic_policy.go)."""
    if locality is None:
        return False
    setting = locality.setting
    return bool(setting.get("distribute")) or (
        locality.failover and bool(setting.get("failover") or setting.get("failoverPriority")))
