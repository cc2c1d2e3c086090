"""The local mesh itself: control planes, workloads, gateways, links, all owned by one process.

Every change (apply, delete, deploy, scale, faults) runs under one lock. After a change every proxy's config
is recomputed by the control plane that configures it (its cluster's, or its primary's for a remote
cluster) and pushed over the proxy's ADS stream (:mod:`.ads`); the change returns once every connected
proxy whose config changed has ACKed it and its listeners accept connections. A NACK fails the change with
Envoy's reason. A proxy whose control plane is down gets the change when it reconnects, as with istiod.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from conformance.certs import MeshCA, RootStep, WorkloadCert
from conformance.config import RunConfig
from conformance.errors import ProviderError, UsageError
from conformance.istio import doc_ref, validate_document
from conformance.istio.schema import load_schemas
from conformance.provider import ProbeSpec
from conformance.providers.local.addresses import ADMIN_PORT, AddressPlan, PodAddresses, claim_slot
from conformance.providers.local.ads import ControlPlane, EventLoopThread, Push
from conformance.providers.local.defects import Defect
from conformance.providers.local.envoy import EnvoyProxy, XdsSnapshot, envoy_binary
from conformance.providers.local.jwks import JwksResolver
from conformance.providers.local.kubelet import Kubelet
from conformance.providers.local.links import Links
from conformance.providers.local.meshconfig import MeshConfigs
from conformance.providers.local.model import ROOT_NAMESPACE, ConfigStore, Registry, Workload
from conformance.providers.local.pods import PodLauncher
from conformance.providers.local.processes import Supervisor
from conformance.providers.local.remotes import ApiServer, RemoteClusters
from conformance.providers.local.settings import LocalSettings
from conformance.providers.local.support import check_supported
from conformance.providers.local.translate import MeshView, build_sidecar
from conformance.providers.local.translate.gateways import build_east_west, build_ingress, gateway_labels
from conformance.providers.local.translate.tls import secrets
from conformance.providers.local.xds import Converter, ProxyResources, ads_source, split
from conformance.topology import Topology

__all__ = ["MeshRuntime", "Proxy"]

GATEWAY_ACCOUNTS = {"ingress": "istio-ingressgateway-service-account",
                    "east-west": "istio-eastwestgateway-service-account"}
DIAGNOSTIC_PUSHES = 500
"""Pushes per control plane in a diagnostics dump (the most recent)."""
SLOW_PUSH_MARGIN_S = 2.0
"""slow-config-push holds every config push back this much longer than the authz propagation budget."""


@dataclass
class Proxy:
    """An Envoy of the mesh: a workload's sidecar, or a cluster's ingress / east-west gateway."""

    kind: str
    workload: Workload
    envoy: EnvoyProxy
    cert: WorkloadCert
    running: bool = True


class MeshRuntime:
    """The local mesh. The daemon calls it under :attr:`lock`."""

    def __init__(self, run_dir: Path, topology: Topology, config: RunConfig, defects: frozenset[Defect],
                 on_processes: Any) -> None:
        self.run_dir = run_dir
        self.topology = topology
        self.config = config
        self.defects = defects
        self.lock = threading.RLock()
        self.registry = Registry()
        self.stores = {c.name: ConfigStore() for c in topology.clusters}
        self.mesh_configs = MeshConfigs(topology)
        self.jwks = JwksResolver(lambda cluster, host, port: self.resolve(cluster, host, port))
        self.supervisor = Supervisor(run_dir, on_processes)
        self.binary = envoy_binary(config.settings_as(LocalSettings).envoy_binary)
        self.proxies: dict[str, Proxy] = {}
        self.gateways: dict[tuple[str, str], Proxy] = {}  # (cluster, kind) -> gateway
        self.ca: MeshCA | None = None
        self.addresses = AddressPlan(topology.cluster_names)
        self.links: Links | None = None
        self.pods: PodLauncher | None = None
        self._slot_lock: IO[str] | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="verify")
        self._xds_loop: EventLoopThread | None = None
        self._converter = Converter()
        self.control_planes: dict[str, ControlPlane] = {}
        """Primary cluster -> its control plane's ADS server."""
        self.api_servers: dict[str, ApiServer] = {}
        """Cluster -> its API server (what remote secrets point at)."""
        self.remotes: dict[str, RemoteClusters] = {}
        """Primary cluster -> its remote secrets and the remote clusters built from them."""
        self.root_step: RootStep | None = None
        """The last step of a root migration taken (None: the mesh's first root only)."""
        self._generation = 0
        """Pushes so far (the resets-connections-on-unrelated-push defect stamps it into every listener)."""
        self.kubelet: Kubelet | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def up(self) -> None:
        slot, self._slot_lock = claim_slot()
        self.addresses = AddressPlan(self.topology.cluster_names, slot)
        self.links = Links(self.addresses.infrastructure, self.topology.link_rtt_ms)
        load_schemas()
        self.ca = MeshCA.create(self.run_dir / "ca")
        self.pods = PodLauncher(self.run_dir, self.supervisor, self.config.timeouts.probe_ready_s)
        self._xds_loop = EventLoopThread()
        for cluster in self.topology.clusters:
            self.ca.intermediate(cluster.name)
            api = ApiServer(cluster.name, self.addresses.infrastructure(cluster.name), self.registry)
            api.start()
            self.api_servers[cluster.name] = api
        for cluster in self.topology.primaries:
            plane = ControlPlane(cluster.name, self.addresses.infrastructure(cluster.name), self._xds_loop,
                                 self._converter)
            plane.start()
            self.control_planes[cluster.name] = plane
            remotes = self.remotes[cluster.name] = RemoteClusters(
                cluster.name, self.run_dir / "remote-secrets" / cluster.name, self._reach_from(cluster.name),
                self.registry, self.defects)
            for other in self.topology.cluster_names:  # istioctl create-remote-secret, applied to the primary
                if other != cluster.name:
                    api = self.api_servers[other]
                    remotes.write(other, api.url, api.issue())
                    remotes.load(other)
        kinds = ["ingress", "east-west"] if self.topology.multi_network else ["ingress"]
        for cluster in self.topology.clusters:
            for kind in kinds:
                self._start_gateway(cluster.name, kind)
        self.sync()
        self.kubelet = Kubelet(self.supervisor, self.lock, self.restart_process)
        self.kubelet.start()

    def down(self) -> None:
        if self.kubelet is not None:
            self.kubelet.stop()
        self.supervisor.stop_all(self.config.timeouts.teardown_s)
        for plane in self.control_planes.values():
            plane.stop()
        for api in self.api_servers.values():
            api.close()
        if self._xds_loop is not None:
            self._xds_loop.close()
        if self.links is not None:
            self.links.close()
        self._pool.shutdown(wait=False)
        if self._slot_lock is not None:
            self._slot_lock.close()  # releases the address slot

    # -- config --------------------------------------------------------------------------------------------

    def view(self, cluster_name: str) -> MeshView:
        """The view of the control plane that configures proxies in ``cluster_name``."""
        cluster = self.topology.cluster(cluster_name)
        config_cluster = self.topology.cluster(cluster.config_cluster)
        east_west = {c: p.workload.addresses.pod_ip for (c, kind), p in self.gateways.items() if kind == "east-west"}
        remotes = self.remotes.get(config_cluster.name)
        return MeshView(
            cluster=config_cluster,
            store=self.stores[config_cluster.name],
            registry=self.registry,
            visible=remotes.visible() if remotes is not None else frozenset({config_cluster.name}),
            hidden=remotes.hidden() if remotes is not None else frozenset(),
            trust_domain=self.topology.trust_domain,
            defects=self.defects,
            trust_root=self.trust_bundle(),
            east_west=east_west,
            links=self.links.relay if self.links is not None else None,
            mesh_config=self.mesh_configs.of(config_cluster.name),
            jwks=self.jwks.for_cluster(config_cluster.name),
        )

    def trust_bundle(self) -> bytes:
        """The roots every proxy is given to trust (its ``ROOTCA`` secret): the CA's trust bundle."""
        if self.ca is None:
            return b""
        if Defect.DROPS_OLD_ROOT_EARLY in self.defects and self.root_step in (RootStep.NEW_INTERMEDIATES,
                                                                              RootStep.OLD_ROOT_REMOVED):
            return self.ca.root_pem  # the newest root alone, while workloads still hold the old one's certificates
        return self.ca.trust_bundle

    def _reach_from(self, primary: str) -> Any:
        def reach(cluster: str, address: str, port: int) -> tuple[str, int]:
            assert self.links is not None
            return self.links.relay(primary, cluster, address, port)
        return reach

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
            self.sync("config", self._config_push_delay())

    def delete(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        changed = False
        for doc in docs:
            _require_namespace(doc)
            for cluster in clusters:
                changed |= self.stores[self.topology.cluster(cluster).name].remove(doc)
        if changed:
            self.sync("config", self._config_push_delay())

    def _config_push_delay(self) -> float:
        if Defect.SLOW_CONFIG_PUSH not in self.defects:
            return 0.0
        return self.config.budgets.authz_propagation_s + SLOW_PUSH_MARGIN_S

    def set_mesh_config(self, patch: Mapping[str, Any], clusters: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Patch the MeshConfig of the control planes of ``clusters``; returns their undo patches."""
        undo = self.mesh_configs.patch(patch, clusters)
        self.sync()
        return undo

    def snapshot(self, proxy: Proxy) -> XdsSnapshot:
        view = self.view(proxy.workload.cluster.name)
        source = ads_source
        if proxy.kind == "sidecar":
            snapshot = build_sidecar(view, proxy.workload, proxy.cert, source)
        else:
            build = build_ingress if proxy.kind == "ingress" else build_east_west
            snapshot = build(view, proxy.workload, source)
            snapshot.secrets = secrets(proxy.cert, view.trust_root)
        if Defect.RESETS_CONNECTIONS_ON_UNRELATED_PUSH in self.defects:
            for listener in snapshot.listeners:  # a value that differs on every push: Envoy replaces the listener
                listener["stat_prefix"] = f"push-{self._generation}"
        return snapshot

    def resources(self, proxy: Proxy) -> ProxyResources:
        """A proxy's config as xDS resources (CDS, EDS, LDS, RDS, SDS)."""
        return split(self.snapshot(proxy))

    def sync(self, reason: str = "sync", delay_s: float = 0.0) -> None:
        """Recompute every running proxy's config and push it; return when every changed proxy ACKed it.

        Raises ConfigNotApplied when a proxy NACKs (with Envoy's reason) or does not ACK in time.
        """
        self._generation += 1
        batches: dict[str, dict[str, tuple[str, ProxyResources]]] = {}
        wanted: dict[str, tuple[Proxy, ProxyResources]] = {}
        for proxy in self.proxies.values():
            if proxy.running:
                resources = self.resources(proxy)
                batches.setdefault(proxy.workload.cluster.config_cluster, {})[proxy.envoy.node_id] = (
                    proxy.envoy.name, resources)
                wanted[proxy.envoy.name] = (proxy, resources)
        pushes = [self.control_planes[cluster].update(batch, reason, delay_s) for cluster, batch in batches.items()]
        self._await(pushes, wanted)

    def _await(self, pushes: Sequence[Push], wanted: Mapping[str, tuple[Proxy, ProxyResources]]) -> None:
        timeout = self.config.timeouts.config_apply_s
        for push in pushes:
            push.wait(timeout)
        checks = [self._pool.submit(wanted[name][0].envoy.wait_listening, wanted[name][1].listen_addresses(),
                                    timeout) for push in pushes for name in push.acked_ms if name in wanted]
        for check in checks:
            check.result()

    # -- proxies -------------------------------------------------------------------------------------------

    def _start_proxy(self, proxy: Proxy) -> None:
        """Start a proxy's Envoy; return once it has its config from its control plane and listens."""
        assert self.pods is not None
        plane = self.control_planes[proxy.workload.cluster.config_cluster]
        if not plane.up:
            raise ProviderError(f"the control plane of cluster {plane.cluster} is down: {proxy.envoy.name} "
                                "cannot get its config (bring the control plane back first)")
        self.proxies[proxy.envoy.name] = proxy
        resources = self.resources(proxy)
        proxy.envoy.prepare()
        push = plane.update({proxy.envoy.node_id: (proxy.envoy.name, resources)}, "start", await_connect=True)
        child = self.pods.start_envoy(proxy.envoy, self.binary)
        ready_s = self.config.timeouts.probe_ready_s
        push.wait(ready_s, alive=child.running, log=proxy.envoy.log_hint)
        proxy.envoy.wait_listening(resources.listen_addresses(), ready_s, child.running)
        proxy.running = True

    def _forget(self, proxy: Proxy) -> None:
        self.control_planes[proxy.workload.cluster.config_cluster].forget([proxy.envoy.node_id])

    def issue(self, workload: Workload) -> WorkloadCert:
        assert self.ca is not None
        account = workload.service_account
        if Defect.WRONG_SPIFFE_IDENTITY in self.defects and workload.namespace != ROOT_NAMESPACE:
            account = "default"
        ttl = dt.timedelta(seconds=min(3600.0, self.config.budgets.cert_ttl_s))
        # the CA of the control plane that serves the workload: a remote cluster's is its primary's istiod
        signer = self.ca.intermediate(workload.cluster.config_cluster)
        return signer.issue(self.topology.trust_domain, workload.namespace, account, ttl)

    def _start_gateway(self, cluster_name: str, kind: str) -> None:
        cluster = self.topology.cluster(cluster_name)
        address = self.addresses.infrastructure(cluster_name)
        spec = ProbeSpec(service=f"istio-{kind.replace('-', '')}gateway", namespace=ROOT_NAMESPACE,
                         cluster=cluster_name, service_account=GATEWAY_ACCOUNTS[kind], labels=gateway_labels(kind))
        workload = Workload(f"{spec.service}.{cluster_name}", spec, cluster, cluster.zone,
                            PodAddresses(address, self.addresses.infrastructure(cluster_name)))
        folder = self.run_dir / "gateways" / cluster_name / kind
        envoy = EnvoyProxy(workload.name, folder, (workload.addresses.loopback, ADMIN_PORT), _node(workload, kind),
                           self._xds_address(cluster_name))
        proxy = Proxy(kind, workload, envoy, self.issue(workload))
        self.gateways[(cluster_name, kind)] = proxy
        self._start_proxy(proxy)

    def gateway_address(self, cluster: str, kind: str) -> str:
        proxy = self.gateways.get((self.topology.cluster(cluster).name, kind))
        if proxy is None:
            raise UsageError(f"cluster {cluster} has no {kind} gateway in topology {self.topology.name}")
        return proxy.workload.addresses.pod_ip

    def set_gateway(self, cluster: str, kind: str, up: bool) -> None:
        """Take a gateway down (stop its Envoy) or bring it back."""
        proxy = self.gateways.get((self.topology.cluster(cluster).name, kind))
        if proxy is None:
            raise UsageError(f"cluster {cluster} has no {kind} gateway in topology {self.topology.name}")
        if up and not proxy.running:
            self._start_proxy(proxy)
        elif not up and proxy.running:
            proxy.running = False
            self.supervisor.stop(f"{proxy.envoy.name}/envoy")
            self._forget(proxy)

    # -- control planes (stopped, started and restarted by lifecycle.py) --------------------------------------

    def control_plane(self, cluster: str) -> ControlPlane:
        """The control plane of a primary cluster. Raises UsageError for a remote cluster."""
        found = self.topology.cluster(cluster)
        if found.config_cluster != found.name:
            raise UsageError(f"cluster {found.name} is a remote cluster: its proxies get their config from the "
                             f"control plane of {found.config_cluster}")
        return self.control_planes[found.name]

    def control_plane_status(self, cluster: str) -> dict[str, Any]:
        """Up and ready or not, every remote cluster's sync status (``istioctl remote-clusters``), and for each
        proxy: connected, in sync, versions, NACKs."""
        plane = self.control_plane(cluster)
        status = plane.status()
        status["ready"] = plane.up
        status["remoteClusters"] = self.remotes[plane.cluster].status()
        return status

    def _xds_address(self, cluster: str) -> tuple[str, int]:
        plane = self.control_planes[self.topology.cluster(cluster).config_cluster]
        return plane.address, plane.port

    # -- workloads -----------------------------------------------------------------------------------------

    def deploy(self, spec: ProbeSpec) -> list[Workload]:
        assert self.pods is not None
        cluster = self.topology.cluster(spec.cluster)
        zone = spec.zone or cluster.zone
        if zone not in cluster.zones:
            raise UsageError(f"cluster {cluster.name} has no zone {zone!r}; its zones: {', '.join(cluster.zones)}")
        if spec.replicas < 0:
            raise UsageError(f"replicas must be >= 0, got {spec.replicas}")
        if spec.namespace == ROOT_NAMESPACE:
            raise UsageError(f"probes cannot run in {ROOT_NAMESPACE}, the mesh's root namespace")
        self.registry.add_service(cluster.name, spec.namespace, spec.service, spec.ports)
        started = []
        for _ in range(spec.replicas):
            workload = self.pods.new_workload(spec, cluster, zone, self.addresses.pod(cluster.name))
            self.registry.add(workload)
            try:
                self.pods.start_probe(workload)
                if workload.in_mesh:
                    envoy = EnvoyProxy(workload.name, self.pods.folder(workload) / "sidecar",
                                       (workload.addresses.loopback, ADMIN_PORT), _node(workload, "sidecar"),
                                       self._xds_address(cluster.name))
                    self._start_proxy(Proxy("sidecar", workload, envoy, self.issue(workload)))
                self.pods.wait_probe(workload)
            except BaseException:
                self.stop_workload(workload.name)
                raise
            started.append(workload)
        self.sync("endpoints")
        return started

    def instances(self, spec: ProbeSpec) -> list[Workload]:
        """The running pods of a probe workload (same service, version, namespace and cluster)."""
        return [w for w in self.registry.workloads({spec.cluster})
                if (w.spec.service, w.spec.version, w.namespace) == (spec.service, spec.version, spec.namespace)]

    def scale(self, spec: ProbeSpec, replicas: int) -> list[Workload]:
        """Scale a probe workload in its cluster; 0 removes every pod (and its endpoints)."""
        current = self.instances(spec)
        if replicas < len(current):
            for workload in current[replicas:]:
                self.stop_workload(workload.name, sync=False)
            self.sync("endpoints")
        elif replicas > len(current):
            self.deploy(ProbeSpec(**{**spec.__dict__, "replicas": replicas - len(current)}))
        return self.instances(spec)

    def kill(self, name: str) -> None:
        """Kill a pod's processes abruptly; its endpoint stays (as until Kubernetes notices): a crash."""
        proxy = self.proxies.get(name)
        if proxy is not None:
            proxy.running = False
        self.supervisor.kill(f"{name}/envoy")
        self.supervisor.kill(f"{name}/probe")

    def restart_process(self, name: str) -> None:
        """Start a pod's process again after it died on its own (the kubelet calls this, under the lock): its
        probe, or its Envoy, which fetches its config from its control plane again."""
        assert self.pods is not None
        pod, _, process = name.rpartition("/")
        if process == "probe":
            workload = self.registry.get(pod)
            if workload is None:
                raise ProviderError(f"{pod} is no longer deployed")
            self.pods.start_probe(workload)
            self.pods.wait_probe(workload)
            return
        proxy = self.proxies.get(pod)
        if proxy is None:
            raise ProviderError(f"{pod} has no proxy any more")
        proxy.running = False
        self.supervisor.stop(name)
        self._forget(proxy)
        self._start_proxy(proxy)

    def stop_workload(self, name: str, sync: bool = False) -> None:
        self.registry.remove(name)
        proxy = self.proxies.pop(name, None)
        self.supervisor.stop(f"{name}/envoy")
        self.supervisor.stop(f"{name}/probe")
        if proxy is not None:
            self._forget(proxy)
        if sync:
            self.sync("endpoints")

    def delete_namespace(self, namespace: str) -> None:
        for workload in self.registry.remove_namespace(namespace):
            self.stop_workload(workload.name)
        for store in self.stores.values():
            store.remove_namespace(namespace)
        self.sync("namespace deleted")

    def resolve(self, cluster: str, host: str, port: int) -> list[str]:
        """What kube-proxy gives an out-of-mesh caller in ``cluster``: that cluster's endpoints only."""
        return [
            f"{w.addresses.pod_ip}:{port}" for w in self.registry.workloads({cluster})
            if w.spec.host == host and port in w.spec.ports
        ]

    # -- identities ----------------------------------------------------------------------------------------

    def rotate_certificates(self, namespace: str | None = None) -> dict[str, int]:
        """Issue new certificates to the sidecars (of ``namespace``); served through SDS at once."""
        serials = {}
        for name, proxy in self.proxies.items():
            if proxy.kind != "sidecar" or (namespace and proxy.workload.namespace != namespace):
                continue
            if Defect.NO_CERT_ROTATION not in self.defects:
                proxy.cert = self.issue(proxy.workload)
            serials[name] = proxy.cert.serial
        if Defect.ROTATION_DROPS_CONNECTIONS in self.defects:
            for name in serials:  # as an agent would that restarts its proxy to load a certificate, abruptly
                proxy = self.proxies[name]
                proxy.running = False
                self.supervisor.kill(f"{name}/envoy")
                self.supervisor.stop(f"{name}/envoy")
                self._start_proxy(proxy)
        self.sync("certificate rotation")
        return serials

    # -- introspection -------------------------------------------------------------------------------------

    def instance_details(self, workload: Workload) -> dict[str, str]:
        assert self.pods is not None
        details = self.pods.details(workload)
        if workload.in_mesh:
            details["admin"] = f"{workload.addresses.loopback}:{ADMIN_PORT}"
        return details

    def describe_state(self) -> dict[str, Any]:
        """Istio config per cluster, every workload and gateway, the links: a diagnostics summary (no secrets)."""
        return {
            "defects": sorted(self.defects),
            "config": {name: [r.doc for r in store] for name, store in self.stores.items()},
            "workloads": [
                {"name": w.name, "cluster": w.cluster.name, "namespace": w.namespace, "service": w.spec.service,
                 "version": w.spec.version, "serviceAccount": w.service_account, "inMesh": w.in_mesh,
                 "zone": w.zone, "podIP": w.addresses.pod_ip,
                 "running": self.proxies[w.name].running if w.name in self.proxies else None,
                 "controlPlane": w.cluster.config_cluster if w.in_mesh else None}
                for w in self.registry.workloads()
            ],
            "gateways": [{"cluster": c, "kind": k, "address": p.workload.addresses.pod_ip, "running": p.running,
                          "controlPlane": p.workload.cluster.config_cluster} for (c, k), p in self.gateways.items()],
            "links": self.links.describe() if self.links is not None else {},
            "controlPlanes": {name: self.control_plane_status(name) for name in self.control_planes},
            "trustBundleRoots": self.trust_bundle().count(b"BEGIN CERTIFICATE"),
            "rootMigrationStep": self.root_step,
            "remoteSecrets": {name: remotes.describe() for name, remotes in self.remotes.items()},
        }

    def diagnostics(self, dest: Path, namespaces: Sequence[str]) -> list[Path]:
        """Config dumps, stats, clusters, certs and logs of the namespaces' workloads and of every gateway."""
        dest.mkdir(parents=True, exist_ok=True)
        summary = dest / "mesh.json"
        summary.write_text(json.dumps(self.describe_state(), indent=1, default=str))
        pushes = dest / "xds-pushes.json"
        pushes.write_text(json.dumps({name: plane.timeline(DIAGNOSTIC_PUSHES)
                                      for name, plane in self.control_planes.items()}, indent=1))
        written = [summary, pushes]
        for workload in self.registry.workloads():
            if workload.namespace in namespaces:
                written += self._dump(dest / workload.cluster.name / workload.name, workload.name)
        for (cluster, kind), proxy in self.gateways.items():
            written += self._dump(dest / cluster / f"{kind}-gateway", proxy.envoy.name)
        return written

    def _dump(self, folder: Path, name: str) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for process in ("probe", "envoy"):
            child = self.supervisor.get(f"{name}/{process}")
            if child is not None:
                written.append(_write(folder / f"{process}.log", child.log_tail(400)))
        proxy = self.proxies.get(name)
        if proxy is None or not proxy.running:
            return written
        for path, file_name in (("/config_dump?include_eds", "config_dump.json"), ("/stats", "stats.txt"),
                                ("/clusters", "clusters.txt"), ("/certs", "certs.json"),
                                ("/listeners", "listeners.txt")):
            try:
                text = proxy.envoy.admin_get(path)
            except OSError as exc:
                text = f"could not read {path}: {exc}"
            written.append(_write(folder / file_name, text))
        return written


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _require_namespace(doc: Mapping[str, Any]) -> None:
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("namespace"):
        raise UsageError(f"{doc_ref(doc)}: metadata.namespace is required (the scenario sets it for checks)")


def _node(workload: Workload, kind: str) -> dict[str, Any]:
    """Envoy's node, in the form istio-agent gives it."""
    node_type = "sidecar" if kind == "sidecar" else "router"
    return {
        "id": f"{node_type}~{workload.addresses.pod_ip}~{workload.name}.{workload.namespace}~"
              f"{workload.namespace}.svc.cluster.local",
        "cluster": f"{workload.spec.service}.{workload.namespace}",
        "locality": {"region": workload.cluster.region, "zone": workload.zone},
        "metadata": {
            "NAME": workload.name, "INSTANCE_IPS": workload.addresses.pod_ip,
            "CLUSTER_ID": workload.cluster.name, "NETWORK": workload.cluster.network,
            "NAMESPACE": workload.namespace, "SERVICE_ACCOUNT": workload.service_account,
            "WORKLOAD_NAME": f"{workload.spec.service}-{workload.spec.version}",
            "LABELS": workload.labels, "MESH_ID": "mesh1",
        },
    }

