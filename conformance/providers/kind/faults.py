"""Faults on kind: through the probe, through the API server, and inside the node containers.

- 503 / delay, kill, scale: :class:`WorkloadFaults` (shared with the existing provider).
- East-west gateway down: scale ``istio-eastwestgateway`` to 0 (and back), or delete its pod.
- Link latency and partition between two clusters: inside every node container of both clusters (the nodes
  ``kind get nodes`` lists), on traffic to the other cluster's nodes, pods, services and load balancers
  (``links.py``). Latency changes the netem qdiscs the plan's ``links`` step set up; ``reset`` puts the
  topology's round trip back, not zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conformance.providers.kind import links
from conformance.providers.kind.manifests import EAST_WEST_GATEWAY
from conformance.providers.kube.faults import WorkloadFaults

if TYPE_CHECKING:
    from conformance.providers.kind.provider import KindProvider

__all__ = ["KindFaults"]


class KindFaults(WorkloadFaults):
    """Workload faults, plus the east-west gateway and the links between clusters."""

    def __init__(self, provider: KindProvider) -> None:
        super().__init__(provider)
        self.provider = provider
        self._cut: set[tuple[str, str]] = set()
        self._changed: set[tuple[str, str]] = set()
        self._gateways_down: set[str] = set()

    def set_gateway(self, cluster: str, up: bool) -> None:
        if up:
            self.gateway_up(cluster)
            self._gateways_down.discard(cluster)
        else:
            self.gateway_down(cluster)
            self._gateways_down.add(cluster)

    def set_link(self, a: str, b: str, rtt_ms: float | None = None, cut: bool | None = None) -> None:
        """Latency: half the round trip on each side's nodes (tc netem); cut: DROP both ways (iptables)."""
        if rtt_ms is not None:
            self.set_delay(a, b, rtt_ms / 2)
            self.set_delay(b, a, rtt_ms / 2)
            self._changed.add((a, b))
        if cut is True:
            self.partition(a, b)
            self._cut.add((a, b))
        elif cut is False:
            self.heal(a, b)
            self._cut.discard((a, b))

    def reset(self) -> None:
        """Every link healed and back at the topology's round trip, every east-west gateway up."""
        for a, b in list(self._cut):
            self.set_link(a, b, cut=False)
        baseline = self.provider.topology.link_rtt_ms
        for a, b in list(self._changed):
            self.set_link(a, b, rtt_ms=baseline)
        self._changed.clear()
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

    def set_delay(self, source: str, destination: str, delay_ms: float) -> None:
        """Delay every packet ``source``'s nodes send to ``destination`` by ``delay_ms`` (one way)."""
        others = self._others(source)
        for node in self.provider.nodes(source):
            self.provider.docker(node, *links.change_delay(others, destination, delay_ms))

    def partition(self, one: str, other: str) -> None:
        """Drop traffic between two clusters, both ways, on every node of each."""
        for source, destination in ((one, other), (other, one)):
            targets = self.provider.link_targets(destination)
            for node in self.provider.nodes(source):
                for argv in links.partition(targets):
                    self.provider.docker(node, *argv)

    def heal(self, one: str, other: str) -> None:
        for source, destination in ((one, other), (other, one)):
            targets = self.provider.link_targets(destination)
            for node in self.provider.nodes(source):
                for argv in links.heal(targets):
                    self.provider.docker(node, *argv, ignore_failure=True)

    def _others(self, cluster: str) -> list[str]:
        return [name for name in self.provider.topology.cluster_names if name != cluster]
