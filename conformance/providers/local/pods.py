"""Pods of the local mesh: a probe process (the app) and, in the mesh, its Envoy sidecar."""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path

from conformance.errors import ProviderError
from conformance.probe import probe_source
from conformance.provider import ProbeSpec
from conformance.providers.local.addresses import CONTROL_PORT, OUTBOUND_PORT, PodAddresses
from conformance.providers.local.envoy import EnvoyProxy
from conformance.providers.local.model import Workload
from conformance.providers.local.processes import Child, Supervisor
from conformance.topology import Cluster

__all__ = ["PodLauncher"]


class PodLauncher:
    """Starts a pod's processes under the supervisor and waits until they are ready."""

    def __init__(self, run_dir: Path, supervisor: Supervisor, ready_s: float) -> None:
        self.run_dir = run_dir
        self.supervisor = supervisor
        self.ready_s = ready_s

    def new_workload(self, spec: ProbeSpec, cluster: Cluster, zone: str, addresses: PodAddresses) -> Workload:
        name = f"{spec.service}-{spec.version}-{secrets.token_hex(3)}"
        return Workload(name=name, spec=spec, cluster=cluster, zone=zone, addresses=addresses)

    def folder(self, workload: Workload) -> Path:
        return self.run_dir / "pods" / workload.cluster.name / workload.name

    def details(self, workload: Workload) -> dict[str, str]:
        """What a client needs to reach the pod's control port and (in the mesh) its sidecar."""
        details = {"control": f"{workload.addresses.pod_ip}:{CONTROL_PORT}", "loopback": workload.addresses.loopback}
        if workload.in_mesh:
            details["outbound"] = f"{workload.addresses.loopback}:{OUTBOUND_PORT}"
        return details

    def start_probe(self, workload: Workload) -> None:
        folder = self.folder(workload)
        folder.mkdir(parents=True, exist_ok=True)
        # In the mesh the app listens on the pod's loopback and its sidecar on the pod IP (the capture);
        # out of the mesh the app listens on the pod IP itself.
        app_address = workload.addresses.loopback if workload.in_mesh else workload.addresses.pod_ip
        self.supervisor.start(f"{workload.name}/probe", "probe", [
            sys.executable, str(probe_source()),
            "--cluster", workload.cluster.name, "--network", workload.cluster.network,
            "--region", workload.cluster.region, "--zone", workload.zone,
            "--namespace", workload.namespace, "--service", workload.spec.service,
            "--version", workload.spec.version, "--instance", workload.name,
            "--service-account", workload.service_account,
            "--address", app_address, "--ports", ",".join(map(str, workload.spec.ports)),
            "--control-address", workload.addresses.pod_ip, "--control-port", str(CONTROL_PORT),
            "--ready-file", str(folder / "probe.ready"),
        ], folder / "probe.log")

    def wait_probe(self, workload: Workload) -> None:
        ready = self.folder(workload) / "probe.ready"
        deadline = time.monotonic() + self.ready_s
        while not ready.exists():
            child = self.supervisor.get(f"{workload.name}/probe")
            if child is not None and not child.running():
                raise ProviderError(f"probe {workload.name} exited during start-up: {child.log_tail(3)}")
            if time.monotonic() > deadline:
                raise ProviderError(f"probe {workload.name} not ready after {self.ready_s:.0f}s")
            time.sleep(0.01)

    def start_envoy(self, envoy: EnvoyProxy, binary: Path) -> Child:
        """Start an Envoy whose bootstrap ``envoy.prepare`` wrote; it fetches its config from its control plane."""
        return self.supervisor.start(f"{envoy.name}/envoy", "envoy", envoy.argv(binary), envoy.workdir / "envoy.log")
