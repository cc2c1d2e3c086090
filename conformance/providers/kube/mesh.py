"""KubeMesh: the provider contract on real Kubernetes clusters, shared by the kind and existing providers.

A subclass says how to reach each cluster's API server (:meth:`api`); this class does the rest the same way
for both: apply/delete YAML (server-side apply), probe workloads from ``probes.py``, the probe control port
through the API server's pod proxy, Envoy admin through ``pilot-agent request`` in the ``istio-proxy``
container, and per-namespace diagnostics (logs, events, Envoy dumps; never secrets).
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from conformance.config import RunConfig
from conformance.errors import ConformanceError, ProviderError, TimeoutExpired, UsageError
from conformance.istio import ISTIO_KINDS, validate_document
from conformance.meshconfig import validate_mesh_config
from conformance.probe import probe_source
from conformance.provider import Feature, ProbeHandle, ProbeInstance, ProbeSpec, Provider
from conformance.providers.kube.api import KubeAPI, Pod
from conformance.providers.kube.meshconfig import patch_mesh_config, restore_mesh_configs
from conformance.providers.kube.probes import (
    CONTROL_PORT,
    MANAGED_BY,
    probe_docs,
    probe_image,
    probe_workload_name,
)
from conformance.providers.kube.settings import KubeSettings
from conformance.runstate import RunState
from conformance.topology import Topology

__all__ = ["KubeMesh"]

_ENVOY_PATHS = {"config_dump.json": "config_dump", "clusters.txt": "clusters", "stats.txt": "stats"}


class KubeMesh(Provider):
    """The contract methods every Kubernetes-backed provider shares."""

    def __init__(self, config: RunConfig, topology: Topology, run_dir: Path | None = None) -> None:
        super().__init__(config, topology, run_dir)
        self.probe_wait_s = max(config.timeouts.probe_ready_s, 180.0)

    @abc.abstractmethod
    def api(self, cluster: str) -> KubeAPI:
        """The API server of ``cluster`` (kind: the run's kubeconfig; existing: the user's context)."""

    def mesh_config(self, patch: Mapping[str, Any], clusters: Sequence[str]) -> Mapping[str, Mapping[str, Any]]:
        """Patch the ``mesh`` key of istiod's ConfigMap in each control-plane cluster (``kube/meshconfig.py``)
        and wait until istiod serves it; returns the undo patch per control-plane cluster."""
        if Feature.MESH_WIDE_CONFIG not in self.features():
            raise UsageError(f"changing MeshConfig is mesh-wide and not allowed on provider {self.name}; rerun "
                             "with --allow-mesh-wide to permit it")
        validate_mesh_config(patch)
        state = RunState(self.run_dir) if self.run_dir is not None else None
        control_planes = dict.fromkeys(self.topology.cluster(c).config_cluster for c in clusters)
        return {cluster: patch_mesh_config(self.api(cluster), cluster, self.revision_for(cluster), patch, state,
                                           self.config.timeouts.mesh_config_s)
                for cluster in control_planes}

    def restore_mesh_configs(self) -> None:
        """Put back any MeshConfig this run changed and did not restore (see ``kube/meshconfig.py``)."""
        if self.run_dir is not None:
            restore_mesh_configs(self.api, RunState(self.run_dir))

    def revision_for(self, cluster: str) -> str | None:
        """The istiod revision probe namespaces in ``cluster`` are labelled for (None: ``istio-injection``)."""
        return None

    def apply(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        """Validate Istio documents offline, then server-side apply them in each cluster.

        Returns when every API server accepted them; checks await their effect (await_convergence).
        """
        for doc in docs:
            if doc.get("kind") in ISTIO_KINDS:
                validate_document(doc)
        for cluster in clusters:
            self.api(cluster).apply(docs)

    def delete(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        for cluster in clusters:
            self.api(cluster).delete(list(reversed(docs)))

    def deploy_probe(self, spec: ProbeSpec) -> ProbeHandle:
        cluster = self.topology.cluster(spec.cluster)
        api = self.api(cluster.name)
        hub = self.config.settings_as(KubeSettings).image_hub
        api.apply(probe_docs(spec, cluster, probe_source().read_text(), image=probe_image(hub),
                             revision=self.revision_for(cluster.name)))
        return self.handle(spec, api.wait_rollout(spec.namespace, probe_workload_name(spec), self.probe_wait_s))

    def handle(self, spec: ProbeSpec, pods: Sequence[Pod]) -> ProbeHandle:
        zone = spec.zone or self.topology.cluster(spec.cluster).zone
        return ProbeHandle(spec, tuple(ProbeInstance(p.name, p.ip, zone, {"pod": p.name, "node": p.node})
                                       for p in pods))

    def restart_probes(self, namespace: str, say: Callable[[str], None]) -> None:
        """Roll every Deployment meshconf created (its ``managed-by`` label) in ``namespace``, a ``meshconf-*``
        namespace, in every cluster, and wait for each rollout: pods come back with the proxy injection now
        gives them."""
        if not namespace.startswith("meshconf-"):
            raise UsageError(f"meshconf restarts probes only in its own meshconf-* namespaces, not {namespace!r}")
        for cluster in self.topology.cluster_names:
            api = self.api(cluster)
            for deployment in api.deployments(namespace, MANAGED_BY):
                name = str(deployment.metadata.name)
                say(f"restart {namespace}/{name} on {cluster}")
                api.restart_deployment(namespace, name)
                api.wait_rollout(namespace, name, self.probe_wait_s)

    def delete_namespace(self, namespace: str) -> None:
        for cluster in self.topology.cluster_names:
            self.api(cluster).delete_namespace(namespace, self.config.timeouts.teardown_s)

    def probe_control(self, probe: ProbeHandle, method: str, path: str, body: Mapping[str, Any] | None = None,
                      instance: int = 0, timeout_s: float = 60.0) -> Any:
        pod = _instance(probe, instance).name
        return self.api(probe.cluster).proxy(probe.namespace, pod, CONTROL_PORT, method, path, body, timeout_s)

    def forward(self, probe: ProbeHandle, request: Mapping[str, Any], instance: int = 0) -> Any:
        # In a cluster the sidecar captures the probe's outbound calls and DNS resolves service names.
        timeout = float(request.get("max_duration_ms", 60000)) / 1000 + 10
        return self.probe_control(probe, "POST", "/forward", request, instance=instance, timeout_s=timeout)

    def ingress_address(self, cluster: str) -> str:
        """The istio-ingressgateway Service's load-balancer address, port 80."""
        api = self.api(cluster)
        deadline = time.monotonic() + self.probe_wait_s
        while (address := api.load_balancer_address("istio-system", "istio-ingressgateway")) is None:
            if time.monotonic() > deadline:
                raise TimeoutExpired(f"istio-ingressgateway in {cluster} got no load-balancer address within "
                                     f"{self.probe_wait_s:.0f}s (is MetalLB running?)")
            time.sleep(2)
        return f"{address}:80"

    def rotate_certificates(self, namespace: str) -> Mapping[str, str]:
        """Istio cannot be told to rotate now: wait for istio-agent's scheduled rotation (the install sets a
        short SECRET_TTL) until every sidecar in ``namespace`` serves a new certificate."""
        before = self._serials(namespace)
        if not before:
            raise ProviderError(f"no sidecar in namespace {namespace} to rotate")
        deadline = time.monotonic() + self.config.timeouts.rotation_s
        while time.monotonic() < deadline:
            now = self._serials(namespace)
            if all(now.get(pod) not in (None, serial) for pod, serial in before.items()):
                return now
            time.sleep(5)
        raise TimeoutExpired(f"sidecars in {namespace} did not rotate their certificates within "
                             f"{self.config.timeouts.rotation_s:.0f}s (raise --timeout rotation_s, "
                             "or lower SECRET_TTL)")

    def _serials(self, namespace: str) -> dict[str, str]:
        serials: dict[str, str] = {}
        for cluster in self.topology.cluster_names:
            for pod in self.api(cluster).pods(namespace, {}):
                try:
                    certs = json.loads(self.api(cluster).exec(namespace, pod.name, "istio-proxy",
                                                              ["pilot-agent", "request", "GET", "certs"]))
                except (ProviderError, ValueError):
                    continue
                for entry in certs.get("certificates", []):
                    for cert in entry.get("cert_chain", [])[:1]:
                        serials[pod.name] = str(cert.get("serial_number", "")).lstrip("0")
        return serials

    def proxy_admin(self, probe: ProbeHandle, path: str, instance: int = 0) -> str:
        if not probe.in_mesh:
            raise ProviderError(f"{probe} has no sidecar, so no Envoy admin")
        pod = _instance(probe, instance).name
        return self.api(probe.cluster).exec(probe.namespace, pod, "istio-proxy",
                                            ["pilot-agent", "request", "GET", path.lstrip("/")])

    def environment_problems(self, namespaces: Sequence[str], since: float | None = None) -> list[str]:
        """Not inspected on Kubernetes yet (pod restarts and OOM kills would go here): always none."""
        return []

    def namespace_diagnostics(self, dest: Path, namespaces: Sequence[str]) -> list[Path]:
        """Logs (current + previous), events and Envoy dumps of every pod in ``namespaces``, per cluster."""
        written: list[Path] = []

        def write(path: Path, text: str) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)

        for cluster in self.topology.cluster_names:
            try:
                api = self.api(cluster)
                for namespace in namespaces:
                    folder = dest / cluster / namespace
                    write(folder / "events.txt", "\n".join(api.events(namespace)) + "\n")
                    for pod in api.pods(namespace, {}):
                        in_mesh = pod.labels.get("sidecar.istio.io/inject") != "false"
                        for container in ("probe", "istio-proxy") if in_mesh else ("probe",):
                            write(folder / pod.name / f"{container}.log", api.logs(namespace, pod.name, container))
                            write(folder / pod.name / f"{container}.previous.log",
                                  api.logs(namespace, pod.name, container, previous=True))
                        for file_name, path in _ENVOY_PATHS.items() if in_mesh else ():
                            try:
                                text = api.exec(namespace, pod.name, "istio-proxy",
                                                ["pilot-agent", "request", "GET", path])
                            except ConformanceError as exc:
                                text = f"(not available: {exc})"
                            write(folder / pod.name / file_name, text)
            except ConformanceError as exc:
                write(dest / cluster / "error.txt", f"{exc}\n")
        return written


def _instance(probe: ProbeHandle, index: int) -> ProbeInstance:
    if not probe.instances:
        raise ProviderError(f"{probe} has no running instance")
    return probe.instances[index % len(probe.instances)]
