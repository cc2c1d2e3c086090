"""Workload faults through the Kubernetes API and the probe (kind, k3s and existing providers).

- 503 / delay: the probe's ``/mode`` on its control port (pod proxy).
- Scale (0 removes every instance) and kill (delete a pod; the Deployment starts a new one).
- East-west gateway down and up (:class:`GatewayFaults`): scale ``istio-eastwestgateway`` in istio-system to 0
  and back, where meshconf installed it (k3s; kind has the same in its own faults, with its links).
- Links: only where the provider can reach the network (kind); elsewhere a clear error.
- Control planes: restart, stop, start and status of istiod through the API (``kube/lifecycle.py``) on existing
  clusters when mesh-wide changes are allowed; kind runs its own commands. Remote secrets and the root CA belong
  to whoever runs the clusters: only kind, which made them, changes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from conformance.errors import ProviderError
from conformance.provider import ControlPlaneStatus, ProbeHandle, RootStep, TrustRoots
from conformance.providers.kube.istio_manifests import EAST_WEST_GATEWAY, ISTIO_SYSTEM
from conformance.providers.kube.lifecycle import KubeControlPlanes
from conformance.providers.kube.probes import probe_workload_name

if TYPE_CHECKING:
    from conformance.providers.kube.mesh import KubeMesh

__all__ = ["ControlPlaneFaults", "GatewayFaults", "WorkloadFaults"]


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

    def restart_control_plane(self, cluster: str) -> None:
        raise ProviderError(f"this provider does not restart {cluster}'s control plane (no control-plane faults)")

    def set_control_plane(self, cluster: str, up: bool) -> None:
        raise ProviderError(f"this provider does not stop or start {cluster}'s control plane (no control-plane "
                            "faults)")

    def control_plane_status(self, cluster: str) -> ControlPlaneStatus:
        raise ProviderError(f"this provider does not read {cluster}'s control plane (no control-plane faults)")

    def rotate_remote_secret(self, cluster: str, remote: str) -> None:
        raise ProviderError(f"this provider does not change {cluster}'s remote secrets (they are not meshconf's)")

    def break_remote_secret(self, cluster: str, remote: str) -> None:
        raise ProviderError(f"this provider does not change {cluster}'s remote secrets (they are not meshconf's)")

    def restore_remote_secret(self, cluster: str, remote: str) -> None:
        raise ProviderError(f"this provider does not change {cluster}'s remote secrets (they are not meshconf's)")

    def migrate_root(self, step: RootStep, namespaces: Sequence[str]) -> TrustRoots:
        raise ProviderError("this provider does not replace the mesh's root CA (it is not meshconf's)")


class ControlPlaneFaults(WorkloadFaults):
    """Workload faults, and istiod restarted, stopped, started and read through the API."""

    def __init__(self, mesh: KubeMesh, control_planes: KubeControlPlanes) -> None:
        super().__init__(mesh)
        self.control_planes = control_planes

    def restart_control_plane(self, cluster: str) -> None:
        self.control_planes.restart(cluster)

    def set_control_plane(self, cluster: str, up: bool) -> None:
        self.control_planes.set(cluster, up)

    def control_plane_status(self, cluster: str) -> ControlPlaneStatus:
        return self.control_planes.status(cluster)

    def reset(self) -> None:
        """Every istiod this run stopped is started again."""
        self.control_planes.reset()


class GatewayFaults(WorkloadFaults):
    """Workload faults, and each cluster's east-west gateway taken down and brought back (scaled to 0 and 1)."""

    def __init__(self, mesh: KubeMesh) -> None:
        super().__init__(mesh)
        self._gateways_down: set[str] = set()

    def set_gateway(self, cluster: str, up: bool) -> None:
        api = self.mesh.api(cluster)
        if up:
            api.scale(ISTIO_SYSTEM, EAST_WEST_GATEWAY, 1)
            api.wait_rollout(ISTIO_SYSTEM, EAST_WEST_GATEWAY, self.mesh.probe_wait_s)
            self._gateways_down.discard(cluster)
        else:
            api.scale(ISTIO_SYSTEM, EAST_WEST_GATEWAY, 0)
            self._gateways_down.add(cluster)

    def reset(self) -> None:
        """Every east-west gateway this run took down is up again."""
        for cluster in sorted(self._gateways_down):
            self.set_gateway(cluster, up=True)
