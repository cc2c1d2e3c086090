"""The local mesh itself: control planes, workloads and their sidecars, all owned by one process.

Every change (apply, delete, deploy, scale) runs under one lock: the mesh process is the only writer of every
xDS file. After a change every sidecar's config is recomputed by its cluster's control plane; the files
that changed are written, then each Envoy is verified to have loaded them before the change returns.
"""

from __future__ import annotations

import concurrent.futures
import json
import secrets
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from conformance.certs import MeshCA, WorkloadCert
from conformance.config import RunConfig
from conformance.errors import ProviderError, UsageError
from conformance.istio import doc_ref, validate_document
from conformance.istio.schema import load_schemas
from conformance.probe import probe_source
from conformance.provider import ProbeSpec
from conformance.providers.local.addresses import ADMIN_PORT, CONTROL_PORT, AddressPlan, claim_slot
from conformance.providers.local.defects import Defect
from conformance.providers.local.envoy import EnvoyProxy, envoy_binary
from conformance.providers.local.model import ConfigStore, Registry, Workload
from conformance.providers.local.processes import Supervisor
from conformance.providers.local.support import check_supported
from conformance.providers.local.translate import MeshView, build_sidecar
from conformance.topology import Role, Topology

__all__ = ["MeshRuntime"]


@dataclass
class Sidecar:
    proxy: EnvoyProxy
    cert: WorkloadCert


class MeshRuntime:
    """The local mesh. Not thread-safe by itself: the daemon calls it under :attr:`lock`."""

    def __init__(self, run_dir: Path, topology: Topology, config: RunConfig, defects: frozenset[Defect],
                 on_processes: Any) -> None:
        self.run_dir = run_dir
        self.topology = topology
        self.config = config
        self.defects = defects
        self.lock = threading.RLock()
        self.registry = Registry()
        self.stores = {c.name: ConfigStore() for c in topology.clusters}
        self._slot_lock: IO[str] | None = None
        self.addresses = AddressPlan(topology.cluster_names)
        self.supervisor = Supervisor(run_dir, on_processes)
        self.binary = envoy_binary(config.envoy_binary)
        self.sidecars: dict[str, Sidecar] = {}
        self.ca: MeshCA | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="verify")

    # -- lifecycle ---------------------------------------------------------------------------------------

    def up(self) -> None:
        slot, self._slot_lock = claim_slot()
        self.addresses = AddressPlan(self.topology.cluster_names, slot)
        load_schemas()
        self.ca = MeshCA.create(self.run_dir / "ca")
        for cluster in self.topology.clusters:
            self.ca.intermediate(cluster.name)

    def down(self) -> None:
        self.supervisor.stop_all(self.config.timeouts.teardown_s)
        self._pool.shutdown(wait=False)
        if self._slot_lock is not None:
            self._slot_lock.close()  # releases the address slot

    # -- config --------------------------------------------------------------------------------------------

    def view(self, cluster_name: str) -> MeshView:
        """The view of the control plane that configures proxies in ``cluster_name``."""
        cluster = self.topology.cluster(cluster_name)
        config_cluster = self.topology.cluster(cluster.config_cluster)
        return MeshView(
            cluster=config_cluster,
            store=self.stores[config_cluster.name],
            registry=self.registry,
            visible=frozenset(self.topology.cluster_names),
            trust_domain=self.topology.trust_domain,
            defects=self.defects,
        )

    def apply(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        for doc in docs:
            _require_namespace(doc)
            validate_document(doc)
            check_supported(doc)
        targets = [self.topology.cluster(c).name for c in clusters]
        changed = False
        for doc in docs:
            for cluster in targets:
                changed |= self.stores[cluster].put(doc)
        if changed:
            self.sync()

    def delete(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        changed = False
        for doc in docs:
            _require_namespace(doc)
            for cluster in clusters:
                changed |= self.stores[self.topology.cluster(cluster).name].remove(doc)
        if changed:
            self.sync()

    def sync(self) -> None:
        """Recompute every sidecar's config; write what changed; verify every Envoy loaded it."""
        timeout = self.config.timeouts.config_apply_s
        changed = []
        for name, sidecar in self.sidecars.items():
            workload = self.registry.get(name)
            if workload is None:
                continue
            snapshot = build_sidecar(self.view(workload.cluster.name), workload, sidecar.cert,
                                     sidecar.proxy.config_source)
            if sidecar.proxy.write(snapshot):
                changed.append(sidecar.proxy)
        for future in [self._pool.submit(proxy.verify, timeout) for proxy in changed]:
            future.result()

    # -- workloads -----------------------------------------------------------------------------------------

    def deploy(self, spec: ProbeSpec) -> list[Workload]:
        cluster = self.topology.cluster(spec.cluster)
        zone = spec.zone or cluster.zone
        if zone not in cluster.zones:
            raise UsageError(f"cluster {cluster.name} has no zone {zone!r}; its zones: {', '.join(cluster.zones)}")
        if spec.replicas < 0:
            raise UsageError(f"replicas must be >= 0, got {spec.replicas}")
        self.registry.add_service(cluster.name, spec.namespace, spec.service, spec.ports)
        started = []
        for _ in range(spec.replicas):
            workload = Workload(
                name=f"{spec.service}-{spec.version}-{secrets.token_hex(3)}",
                spec=spec, cluster=cluster, zone=zone, addresses=self.addresses.pod(cluster.name),
            )
            try:
                self._start(workload)
            except BaseException:
                self.stop_workload(workload.name)
                raise
            started.append(workload)
        self.sync()
        return started

    def _start(self, workload: Workload) -> None:
        assert self.ca is not None
        folder = self.run_dir / "pods" / workload.cluster.name / workload.name
        folder.mkdir(parents=True, exist_ok=True)
        app_address = workload.addresses.loopback if workload.in_mesh else workload.addresses.pod_ip
        ready = folder / "probe.ready"
        self.supervisor.start(f"{workload.name}/probe", "probe", [
            sys.executable, str(probe_source()),
            "--cluster", workload.cluster.name, "--network", workload.cluster.network,
            "--region", workload.cluster.region, "--zone", workload.zone,
            "--namespace", workload.namespace, "--service", workload.spec.service,
            "--version", workload.spec.version, "--instance", workload.name,
            "--service-account", workload.service_account,
            "--address", app_address, "--ports", ",".join(map(str, workload.spec.ports)),
            "--control-address", workload.addresses.pod_ip, "--control-port", str(CONTROL_PORT),
            "--ready-file", str(ready),
        ], folder / "probe.log")
        if workload.in_mesh:
            account = "default" if Defect.WRONG_SPIFFE_IDENTITY in self.defects else workload.service_account
            cert = self.ca.intermediate(workload.cluster.name).issue(
                self.topology.trust_domain, workload.namespace, account
            )
            proxy = EnvoyProxy(workload.name, folder / "sidecar", (workload.addresses.loopback, ADMIN_PORT),
                               _node(workload))
            self.registry.add(workload)
            sidecar = Sidecar(proxy, cert)
            self.sidecars[workload.name] = sidecar
            proxy.prepare(build_sidecar(self.view(workload.cluster.name), workload, cert, proxy.config_source))
            child = self.supervisor.start(f"{workload.name}/envoy", "envoy", proxy.argv(self.binary),
                                          proxy.workdir / "envoy.log")
            proxy.wait_ready(self.config.timeouts.probe_ready_s, child.running)
        else:
            self.registry.add(workload)
        self._wait_file(ready, workload.name)

    def _wait_file(self, path: Path, name: str) -> None:
        deadline = time.monotonic() + self.config.timeouts.probe_ready_s
        while not path.exists():
            child = self.supervisor.get(f"{name}/probe")
            if child is not None and not child.running():
                raise ProviderError(f"probe {name} exited during start-up: {child.log_tail(3)}")
            if time.monotonic() > deadline:
                raise ProviderError(f"probe {name} not ready after {self.config.timeouts.probe_ready_s:.0f}s")
            time.sleep(0.01)

    def stop_workload(self, name: str) -> None:
        self.registry.remove(name)
        self.sidecars.pop(name, None)
        self.supervisor.stop(f"{name}/envoy")
        self.supervisor.stop(f"{name}/probe")

    def delete_namespace(self, namespace: str) -> None:
        for workload in self.registry.remove_namespace(namespace):
            self.sidecars.pop(workload.name, None)
            self.supervisor.stop(f"{workload.name}/envoy")
            self.supervisor.stop(f"{workload.name}/probe")
        for store in self.stores.values():
            store.remove_namespace(namespace)
        self.sync()

    def resolve(self, cluster: str, host: str, port: int) -> list[str]:
        """What kube-proxy gives an out-of-mesh caller in ``cluster``: that cluster's endpoints only."""
        return [
            f"{w.addresses.pod_ip}:{port}" for w in self.registry.workloads({cluster})
            if w.spec.host == host and port in w.spec.ports
        ]

    # -- introspection -------------------------------------------------------------------------------------

    def instance_details(self, workload: Workload) -> dict[str, str]:
        details = {
            "control": f"{workload.addresses.pod_ip}:{CONTROL_PORT}",
            "loopback": workload.addresses.loopback,
        }
        if workload.in_mesh:
            details["admin"] = f"{workload.addresses.loopback}:{ADMIN_PORT}"
            details["outbound"] = f"{workload.addresses.loopback}:15001"
        return details

    def describe_state(self) -> dict[str, Any]:
        """Istio config per cluster and every workload: a diagnostics summary (no secrets)."""
        return {
            "defects": sorted(self.defects),
            "config": {name: [r.doc for r in store] for name, store in self.stores.items()},
            "workloads": [
                {"name": w.name, "cluster": w.cluster.name, "namespace": w.namespace, "service": w.spec.service,
                 "version": w.spec.version, "serviceAccount": w.service_account, "inMesh": w.in_mesh,
                 "zone": w.zone, "podIP": w.addresses.pod_ip}
                for w in self.registry.workloads()
            ],
        }

    def diagnostics(self, dest: Path, namespaces: Sequence[str]) -> list[Path]:
        """Config dumps, stats, clusters, certs and logs of every workload in ``namespaces``."""
        written: list[Path] = []
        dest.mkdir(parents=True, exist_ok=True)
        summary = dest / "mesh.json"
        summary.write_text(json.dumps(self.describe_state(), indent=1, default=str))
        written.append(summary)
        for workload in self.registry.workloads():
            if workload.namespace not in namespaces:
                continue
            folder = dest / workload.cluster.name / workload.name
            folder.mkdir(parents=True, exist_ok=True)
            probe = self.supervisor.get(f"{workload.name}/probe")
            if probe is not None:
                written.append(_copy_text(folder / "probe.log", probe.log_tail(400)))
            sidecar = self.sidecars.get(workload.name)
            if sidecar is None:
                continue
            envoy = self.supervisor.get(f"{workload.name}/envoy")
            if envoy is not None:
                written.append(_copy_text(folder / "envoy.log", envoy.log_tail(400)))
            for path, file_name in (("/config_dump?include_eds", "config_dump.json"), ("/stats", "stats.txt"),
                                    ("/clusters", "clusters.txt"), ("/certs", "certs.json"),
                                    ("/listeners", "listeners.txt")):
                try:
                    text = sidecar.proxy.admin_get(path)
                except OSError as exc:
                    text = f"could not read {path}: {exc}"
                written.append(_copy_text(folder / file_name, text))
        return written


def _copy_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _require_namespace(doc: Mapping[str, Any]) -> None:
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("namespace"):
        raise UsageError(f"{doc_ref(doc)}: metadata.namespace is required (the scenario sets it for checks)")


def _node(workload: Workload) -> dict[str, Any]:
    """Envoy's node, in the form istio-agent gives it."""
    return {
        "id": f"sidecar~{workload.addresses.pod_ip}~{workload.name}.{workload.namespace}~"
              f"{workload.namespace}.svc.cluster.local",
        "cluster": f"{workload.spec.service}.{workload.namespace}",
        "locality": {"region": workload.cluster.region, "zone": workload.zone},
        "metadata": {
            "CLUSTER_ID": workload.cluster.name, "NETWORK": workload.cluster.network,
            "NAMESPACE": workload.namespace, "SERVICE_ACCOUNT": workload.service_account,
            "WORKLOAD_NAME": f"{workload.spec.service}-{workload.spec.version}",
            "LABELS": workload.labels, "MESH_ID": "mesh1",
        },
    }


def primary_clusters(topology: Topology) -> list[str]:
    return [c.name for c in topology.clusters if c.role is Role.PRIMARY]
