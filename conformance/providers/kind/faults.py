"""Faults on kind: through the probe, through the API server, and inside the node containers.

- 503 / delay, kill, scale: :class:`WorkloadFaults` (shared with the existing provider).
- East-west gateway down: scale ``istio-eastwestgateway`` to 0 (and back), or delete its pod.
- Link latency and partition between two clusters: ``tc netem`` and ``iptables`` inside the source cluster's
  node containers (``docker exec``), matching only traffic to the other cluster's node and MetalLB slice.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from conformance.providers.kind.manifests import EAST_WEST_GATEWAY
from conformance.providers.kube.faults import WorkloadFaults

if TYPE_CHECKING:
    from conformance.providers.kind.provider import KindProvider

__all__ = ["KindFaults"]

_COMMENT = "meshconf-partition"


class KindFaults(WorkloadFaults):
    """Workload faults, plus the east-west gateway and the links between clusters."""

    def __init__(self, provider: KindProvider) -> None:
        super().__init__(provider)
        self.provider = provider
        self._cut: set[tuple[str, str]] = set()
        self._delayed: set[str] = set()
        self._gateways_down: set[str] = set()

    def set_gateway(self, cluster: str, up: bool) -> None:
        if up:
            self.gateway_up(cluster)
        else:
            self.gateway_down(cluster)
        if up:
            self._gateways_down.discard(cluster)
        else:
            self._gateways_down.add(cluster)

    def set_link(self, a: str, b: str, rtt_ms: float | None = None, cut: bool | None = None) -> None:
        """Latency: half the round trip added on each side's node (tc netem); cut: DROP both ways (iptables)."""
        if rtt_ms is not None:
            for source, destination in ((a, b), (b, a)):
                self.remove_latency(source)
                if rtt_ms > 0:
                    self.add_latency(source, destination, rtt_ms / 2)
            self._delayed.update((a, b))
        if cut is True:
            self.partition(a, b)
            self._cut.add((a, b))
        elif cut is False:
            self.heal(a, b)
            self._cut.discard((a, b))

    def reset(self) -> None:
        """Every link healed and undelayed, every east-west gateway up."""
        for a, b in list(self._cut):
            self.set_link(a, b, cut=False)
        for cluster in list(self._delayed):
            self.remove_latency(cluster)
        self._delayed.clear()
        for cluster in list(self._gateways_down):
            self.set_gateway(cluster, up=True)

    def gateway_down(self, cluster: str) -> None:
        self.provider.api(cluster).scale("istio-system", EAST_WEST_GATEWAY, 0)

    def gateway_up(self, cluster: str) -> None:
        api = self.provider.api(cluster)
        api.scale("istio-system", EAST_WEST_GATEWAY, 1)
        api.wait_rollout("istio-system", EAST_WEST_GATEWAY, self.provider.probe_wait_s)

    def delete_gateway_pod(self, cluster: str) -> list[str]:
        return self.provider.api(cluster).delete_pods("istio-system", {"app": EAST_WEST_GATEWAY})

    def add_latency(self, source: str, destination: str, delay_ms: float) -> None:
        """Delay every packet from ``source``'s node to ``destination`` (its node and load balancers)."""
        node = f"{source}-control-plane"
        self.provider.docker(node, "tc", "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "prio")
        self.provider.docker(node, "tc", "qdisc", "add", "dev", "eth0", "parent", "1:3", "handle", "30:",
                             "netem", "delay", f"{delay_ms:g}ms")
        for target in self._targets(destination):
            self.provider.docker(node, "tc", "filter", "add", "dev", "eth0", "protocol", "ip", "parent", "1:0",
                                 "prio", "3", "u32", "match", "ip", "dst", target, "flowid", "1:3")

    def remove_latency(self, source: str) -> None:
        self.provider.docker(f"{source}-control-plane", "tc", "qdisc", "del", "dev", "eth0", "root",
                             ignore_failure=True)

    def partition(self, one: str, other: str) -> None:
        """Drop traffic between two clusters, both ways."""
        for source, destination in ((one, other), (other, one)):
            for target in self._targets(destination):
                for chain in ("FORWARD", "OUTPUT"):
                    self.provider.docker(f"{source}-control-plane", "iptables", "-I", chain, "-d", target,
                                         "-m", "comment", "--comment", _COMMENT, "-j", "DROP")

    def heal(self, one: str, other: str) -> None:
        for source, destination in ((one, other), (other, one)):
            for target in self._targets(destination):
                for chain in ("FORWARD", "OUTPUT"):
                    self.provider.docker(f"{source}-control-plane", "iptables", "-D", chain, "-d", target,
                                         "-m", "comment", "--comment", _COMMENT, "-j", "DROP", ignore_failure=True)

    def _targets(self, cluster: str) -> list[str]:
        addresses = self.provider.addresses()[cluster]
        first = ipaddress.ip_address(addresses.pool_first)
        slice_ = ipaddress.ip_network(f"{first - 1}/27", strict=False)
        return [f"{self.provider.node_address(cluster)}/32", str(slice_)]
