"""Workload faults through the Kubernetes API and the probe (kind and existing providers).

- 503 / delay: the probe's ``/mode`` on its control port (pod proxy).
- Scale (0 removes every instance) and kill (delete a pod; the Deployment starts a new one).
- Gateways and links: only where the provider can reach the network (kind); elsewhere a clear error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conformance.errors import ProviderError
from conformance.provider import ProbeHandle
from conformance.providers.kube.probes import probe_workload_name

if TYPE_CHECKING:
    from conformance.providers.kube.mesh import KubeMesh

__all__ = ["WorkloadFaults"]


class WorkloadFaults:
    def __init__(self, mesh: KubeMesh) -> None:
        self.mesh = mesh

    def set_mode(self, probe: ProbeHandle, status: int | None = None, delay_ms: int = 0) -> None:
        for index in range(len(probe.instances)):
            self.mesh.probe_control(probe, "POST", "/mode", {"status": status, "delay_ms": delay_ms}, instance=index)

    def scale(self, probe: ProbeHandle, replicas: int) -> ProbeHandle:
        api = self.mesh.api(probe.cluster)
        name = probe_workload_name(probe.spec)
        api.scale(probe.namespace, name, replicas)
        if replicas == 0:
            return ProbeHandle(probe.spec, ())
        return self.mesh.handle(probe.spec, api.wait_rollout(probe.namespace, name, self.mesh.probe_wait_s))

    def kill(self, probe: ProbeHandle, instance: int = 0) -> None:
        """Delete one pod of the workload (its Deployment starts a new one)."""
        pod = probe.instances[instance % len(probe.instances)].name
        self.mesh.api(probe.cluster).delete_pod(probe.namespace, pod)

    def set_gateway(self, cluster: str, up: bool) -> None:
        raise ProviderError(f"this provider cannot take {cluster}'s east-west gateway down (no gateway faults)")

    def set_link(self, a: str, b: str, rtt_ms: float | None = None, cut: bool | None = None) -> None:
        raise ProviderError(f"this provider cannot change the network between {a} and {b} (no link faults)")

    def reset(self) -> None:
        """Nothing to undo: workload faults end with the check's namespace."""
