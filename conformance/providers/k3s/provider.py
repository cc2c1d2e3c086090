"""K3sProvider: k3s clusters in Docker (testcontainers), running Istio installed the way Istio documents it.

``up()`` runs the plan (``plan.py``): the Docker steps through testcontainers (``containers.py``), the rest
through the runner; everything after that (applying check YAML, probe workloads, the probe control port,
Envoy admin, diagnostics) goes through the Kubernetes API, as for kind (``kube/mesh.py``). ``down()`` removes
the run's containers and network; if meshconf is killed first, Ryuk does (unless the mesh was to be kept).

What it offers: multi-cluster, multi-network (east-west gateways on ServiceLB addresses), ingress, workload and
gateway faults, mesh-wide config, certificate rotation. Not link RTT nor link faults: the rancher/k3s image
has no ``tc`` that can run netem, so the link between clusters is not emulated, and checks that need it skip.
Like kind, the host must reach container addresses on the docker network (ingress calls go to a node's
address): Linux with Docker Engine; Docker Desktop is refused with one line.
"""

from __future__ import annotations

import os
import platform
import secrets
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from conformance.certs import MeshCA, write_private
from conformance.config import RunConfig
from conformance.doctor import host_reaches_containers
from conformance.errors import ConformanceError, EnvironmentBroken, ProviderError, UsageError
from conformance.probe import probe_source
from conformance.provider import Feature, MeshDescription
from conformance.providers.k3s.addresses import cluster_addresses, free_subnet
from conformance.providers.k3s.containers import K3sDocker, K3sRunner, image_file
from conformance.providers.k3s.nodes import K3S_IMAGE, K3S_KUBERNETES, KUBECONFIG_PATH, Node, node_specs
from conformance.providers.k3s.plan import (
    API_STEPS,
    NETWORK,
    PlanContext,
    build_plan,
    context_name,
    plan_images,
    teardown,
)
from conformance.providers.k3s.settings import K3sSettings
from conformance.providers.k3s.verification import NOT_RUN, VERIFICATION
from conformance.providers.kube import images as i
from conformance.providers.kube.api import KubeAPI
from conformance.providers.kube.faults import GatewayFaults
from conformance.providers.kube.istio_manifests import needs_east_west_gateway
from conformance.providers.kube.mesh import KubeMesh
from conformance.providers.kube.runner import Runner, run_steps
from conformance.providers.kube.steps import Step, render_plan
from conformance.runstate import RunState, new_run_dir
from conformance.topology import Role, Topology

__all__ = ["K3sProvider", "plan_context"]


def _shown(path: Path) -> Path:
    relative = Path(os.path.relpath(path))
    return path if str(relative).startswith("..") else relative


def plan_context(config: RunConfig, topology: Topology, ca: MeshCA, istioctl: str = "istioctl",
                 subnet: str | None = None, for_print: bool = False) -> PlanContext:
    settings = config.settings_as(K3sSettings)
    if not settings.istio_version:
        raise UsageError("the k3s provider needs --istio-version (e.g. --istio-version 1.28.0)")
    kwargs: dict[str, Any] = {"subnet": subnet, "subnet_known": True} if subnet else {}
    return PlanContext(topology, settings.istio_version, ca, probe_source().read_text(), istioctl=istioctl,
                       image_hub=settings.image_hub,
                       locust_dockerfile=_shown(i.LOCUST_DOCKERFILE) if for_print else i.LOCUST_DOCKERFILE, **kwargs)


def _numbered(step: Step, number: int) -> Step:
    return Step(number, step.key, step.title, step.why, step.commands, step.manifests, step.parallel)


class K3sProvider(KubeMesh):
    """k3s in Docker through testcontainers + istioctl, per Istio's multi-cluster install guides."""

    name = "k3s"
    OFFERS = frozenset(Feature) - {Feature.SIDECAR_ENTRY, Feature.LINK_RTT, Feature.LINK_FAULTS,
                                   Feature.CONTROL_PLANE_FAULTS, Feature.REMOTE_SECRET_FAULTS,
                                   Feature.ROOT_CA_MIGRATION}
    """No link RTT or link faults: the rancher/k3s image has no tc that can run netem. No lifecycle faults
    (control planes, remote secrets, root CA) yet: its faults are the kube layer's GatewayFaults, which have none."""
    Settings = K3sSettings

    def __init__(self, config: RunConfig, topology: Topology, run_dir: Path | None = None,
                 host: Runner | None = None) -> None:
        """``host`` runs kubectl and istioctl (default: as processes); tests record them."""
        super().__init__(config, topology, run_dir)
        self.settings = config.settings_as(K3sSettings)
        self._docker: K3sDocker | None = None
        self.runner = K3sRunner(self.docker, host)
        self._apis: dict[str, KubeAPI] = {}
        self._faults = GatewayFaults(self)

    # -- plan ----------------------------------------------------------------------------------------------

    @classmethod
    def plan(cls, config: RunConfig, topology: Topology) -> str:
        """The whole bring-up as printable steps; runs nothing. Secret data is redacted."""
        cls.validate(config, topology)
        with tempfile.TemporaryDirectory(prefix="meshconf-plan-") as scratch:
            ctx = plan_context(config, topology, MeshCA.create(Path(scratch)), for_print=True)
            image = ctx.all_nodes()[0].image
            header = [
                f"meshconf plan: provider k3s, topology {topology.name}, Istio {ctx.istio_version}",
                "clusters: " + ", ".join(f"{c.name} ({c.role}, {c.network}, {c.region}/{', '.join(c.zones)})"
                                         for c in topology.clusters),
                f"tools: {image} (Kubernetes {K3S_KUBERNETES}) through testcontainers, istioctl {ctx.istio_version} "
                "(downloaded into ~/.cache/meshconf/istioctl and sha256-checked unless --istioctl is given), kubectl",
                f"images: from {'the Docker Hub mirror ' + ctx.image_hub if ctx.image_hub else 'Docker Hub'} "
                "(--image-hub), pulled once on the host and imported into every node",
                "host: Linux with Docker Engine (ingress and load reach node addresses on the run's network; "
                "Docker Desktop is refused)",
                f"link between clusters: not emulated (the topology's {topology.link_rtt_ms:g} ms round trip is not "
                "applied: the k3s image has no tc with netem); checks that need link RTT or link faults skip",
                "cleanup: Ryuk (testcontainers' reaper) removes the containers and network if meshconf is killed; "
                "a kept mesh (meshconf up, --keep) is removed by `meshconf down`",
                "RUN = the run directory meshconf creates (~/.local/state/meshconf/runs/k3s-<id>), $RUN_NAME its "
                "name; node addresses assume the network's subnet (chosen at run time)",
                f"Nothing below has been run. Secret data is shown as <redacted: N bytes>. Verification: {NOT_RUN}; "
                "each step says what the tests prove instead.",
            ]
            steps = build_plan(ctx)
            steps.append(_numbered(teardown(ctx), len(steps) + 1))
            return render_plan(header, steps, verification=VERIFICATION)

    @classmethod
    def validate(cls, config: RunConfig, topology: Topology) -> None:
        # --reuse and --kind-node-image are kind's settings: refused when the config is built
        if not config.settings_as(K3sSettings).istio_version:
            raise UsageError("the k3s provider needs --istio-version (e.g. --istio-version 1.28.0)")

    @classmethod
    def preflight(cls, config: RunConfig, topology: Topology) -> list[str]:
        """What would stop ``up()`` here: everything ``meshconf doctor`` marks as needed by k3s, one line each."""
        from conformance.doctor import examine
        from conformance.providers.kube.istioctl import given_istioctl_problem

        problems = [f"{f.name} {f.version}: {f.hint}; see `meshconf doctor --provider k3s`" for f in examine()
                    if "k3s" in f.needed_by and not f.found]
        settings = config.settings_as(K3sSettings)
        istioctl = given_istioctl_problem(settings.istioctl, settings.istio_version)
        return [*problems, istioctl] if istioctl else problems

    # -- lifecycle -----------------------------------------------------------------------------------------

    def docker(self) -> K3sDocker:
        """The Docker side (testcontainers); made on first use (attached runs only remove and read logs)."""
        if self._docker is None:
            self._docker = K3sDocker(reap=None)
        return self._docker

    def up(self, owner_pid: int | None = None, progress: Callable[[str], None] | None = None) -> None:
        """Bring the clusters and Istio up. With ``owner_pid`` the mesh dies with this process (Ryuk removes it
        if meshconf is killed); without, it is kept for ``meshconf run --attach`` until ``meshconf down``."""
        from conformance.providers.kube.istioctl import resolve_istioctl

        say = progress or (lambda _line: None)
        self.validate(self.config, self.topology)
        assert self.settings.istio_version is not None
        self._docker = K3sDocker(reap=owner_pid is not None)
        docker = self._docker
        self._check_host(docker)
        istioctl = resolve_istioctl(self.settings.istio_version, self.settings.istioctl)
        names = [n.name for nodes in node_specs(self.topology, cluster_addresses(self.topology)).values()
                 for n in nodes]
        left = docker.existing(names)
        if left:
            raise UsageError(f"k3s nodes {', '.join(left)} already exist (another run's): `meshconf down` it, or "
                             f"`docker rm -f {' '.join(left)}`")
        self.run_dir = new_run_dir("k3s")
        run_dir = self.run_dir
        state = RunState(run_dir)
        ca = MeshCA.create(run_dir / "ca")
        state.update(provider="k3s", topology=self.config.topology, istio_version=self.settings.istio_version,
                     istioctl=str(istioctl), reaped=docker.reap, containers=[], network=None)
        try:
            ctx = plan_context(self.config, self.topology, ca, istioctl=str(istioctl))
            for image in plan_images(ctx):
                say(f"k3s: image {image.name}")
                docker.ensure_image(image)
                docker.save_image(image.name, run_dir / "images" / image_file(image.name))
            docker.start_reaper()
            subnet = free_subnet(docker.used_subnets())
            ctx = plan_context(self.config, self.topology, ca, istioctl=str(istioctl), subnet=subnet)
            say(f"k3s: network {NETWORK} ({subnet})")
            state.update(network=NETWORK, subnet=subnet, containers=[n.name for n in ctx.all_nodes()])
            docker.create_network(NETWORK, subnet, run_dir.name)
            self._start_nodes(docker, ctx, run_dir, say)
            self._write_kubeconfig(docker, ctx, run_dir)
            steps = [s for s in build_plan(ctx) if s.key not in API_STEPS]
            run_steps(self.runner, steps, run_dir, {}, say)
            state.update(ready=True)
        except BaseException:
            if not self.config.keep:
                try:
                    self.down()
                except ConformanceError as exc:  # the failure that brought us here is the one to report
                    say(f"k3s: cleanup after the failure did not finish: {exc}")
            raise
        say(f"k3s: mesh up; run directory {run_dir}")

    def _start_nodes(self, docker: K3sDocker, ctx: PlanContext, run_dir: Path, say: Callable[[str], None]) -> None:
        """Every cluster's nodes side by side, each cluster's server before its agents."""
        token = secrets.token_hex(24)  # joins agents to their server; lives only in the containers' environment
        lock = threading.Lock()

        def start(nodes: list[Node]) -> None:
            for node in nodes:
                with lock:
                    say(f"k3s: start {node.name} ({node.role}, {node.address})")
                docker.start_node(node, run_dir / "images", run_dir.name, token)

        with ThreadPoolExecutor(max_workers=max(1, len(ctx.nodes))) as pool:
            for future in [pool.submit(start, nodes) for nodes in ctx.nodes.values()]:
                future.result()

    def _write_kubeconfig(self, docker: K3sDocker, ctx: PlanContext, run_dir: Path) -> None:
        """Each server's kubeconfig, renamed to its cluster and pointed at its address, in one file (0600)."""
        merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": [],
                                  "current-context": context_name(self.topology.clusters[0].name)}
        for cluster in self.topology.clusters:
            server = ctx.nodes[cluster.name][0].name
            read = docker.exec(server, ["cat", KUBECONFIG_PATH])
            try:
                data: Any = yaml.safe_load(read.stdout) if read.returncode == 0 else None
                entry, user = data["clusters"][0]["cluster"], data["users"][0]["user"]
            except (yaml.YAMLError, KeyError, IndexError, TypeError):
                raise ProviderError(f"{server} has no readable {KUBECONFIG_PATH} (exit {read.returncode})") from None
            name = context_name(cluster.name)
            merged["clusters"].append({"name": name, "cluster": {**entry, "server": ctx.api_server(cluster.name)}})
            merged["users"].append({"name": name, "user": user})
            merged["contexts"].append({"name": name, "context": {"cluster": name, "user": name}})
        write_private(run_dir / "kubeconfig", yaml.safe_dump(merged, sort_keys=False).encode())

    @classmethod
    def cleanup(cls, run_dir: Path, docker: K3sDocker | None = None) -> list[int]:
        """Remove the containers and the network the run recorded (nothing else), then its directory. Returns no
        PIDs. The state stays, and ProviderError says to run ``meshconf down`` again, while anything is left."""
        state = RunState(run_dir)
        data = state.read()
        containers, network = [str(c) for c in data.get("containers") or []], data.get("network")
        if containers or network:
            problems = (docker or K3sDocker(reap=None)).remove(containers, str(network) if network else None)
            if problems:
                raise ProviderError(f"the k3s run in {run_dir} is not all removed ({'; '.join(problems)}); run "
                                    f"`meshconf down {run_dir}` to retry")
        state.remove()
        return []

    def down(self) -> None:
        if self.run_dir is None:
            return
        self.cleanup(self.run_dir, self._docker)
        self._apis.clear()

    # -- contract ------------------------------------------------------------------------------------------

    def describe(self) -> MeshDescription:
        version = self.settings.istio_version or "?"
        return MeshDescription(provider=self.name, topology=self.topology.name, implementation="istio",
                               mesh_version=version, proxy_version=f"istio-proxy {version}",
                               kubernetes_version=K3S_KUBERNETES, details={"k3s": K3S_IMAGE})

    def features(self) -> frozenset[Feature]:
        features = {Feature.OUT_OF_MESH_WORKLOADS, Feature.MESH_WIDE_CONFIG, Feature.CERT_ROTATION,
                    Feature.WORKLOAD_FAULTS, Feature.INGRESS_GATEWAY}
        if len(self.topology.clusters) > 1:
            features.add(Feature.MULTI_CLUSTER)
        if self.topology.multi_network:
            features.add(Feature.MULTI_NETWORK)
        if any(needs_east_west_gateway(c, self.topology) for c in self.topology.clusters):
            features |= {Feature.EAST_WEST_GATEWAY, Feature.GATEWAY_FAULTS}
        return frozenset(features)

    @property
    def faults(self) -> GatewayFaults:
        return self._faults

    def diagnostics(self, dest: Path, namespaces: Sequence[str]) -> list[Path]:
        """The kube layer's per-namespace part, ``istioctl remote-clusters`` of every primary, and every node
        container's log (k3s's own: kubelet, containerd, flannel). Never secrets, never kubeconfigs."""
        written = self.namespace_diagnostics(dest, namespaces)
        data = RunState(self.run_dir).read() if self.run_dir else {}
        for cluster in self.topology.clusters:
            if cluster.role is Role.PRIMARY:
                path = dest / cluster.name / "remote-clusters.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(self._istioctl(cluster.name, "remote-clusters", data))
                written.append(path)
        for name in data.get("containers") or []:
            path = dest / "k3s-nodes" / f"{name}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                path.write_text(self.docker().logs(str(name)))
            except ConformanceError as exc:
                path.write_text(f"(not available: {exc})\n")
            written.append(path)
        return written

    # -- plumbing ------------------------------------------------------------------------------------------

    def api(self, cluster: str) -> KubeAPI:
        if self.run_dir is None:
            raise EnvironmentBroken("the k3s mesh is not up (call up() or attach() first)")
        if cluster not in self._apis:
            self._apis[cluster] = KubeAPI(context_name(cluster), self.run_dir / "kubeconfig")
        return self._apis[cluster]

    def _istioctl(self, cluster: str, command: str, data: dict[str, Any]) -> str:
        kubeconfig = self.run_dir / "kubeconfig" if self.run_dir else Path("kubeconfig")
        argv = [str(data.get("istioctl", "istioctl")), command, "--kubeconfig", str(kubeconfig),
                "--context", context_name(cluster)]
        result = self.runner.run(argv)
        return result.stdout or result.stderr

    def _check_host(self, docker: K3sDocker) -> None:
        """Refuse hosts that cannot reach container addresses (one line, before anything is created)."""
        try:
            docker_os = str(docker.client.info().get("OperatingSystem", ""))
        except Exception as exc:  # docker-py's errors, or a connection refused under them
            raise EnvironmentBroken(f"Docker does not answer: {str(exc)[:200]} (see `meshconf doctor --provider "
                                    "k3s`)") from None
        reason = host_reaches_containers(platform.system(), docker_os)
        if reason:
            raise EnvironmentBroken(f"the k3s provider cannot run here: {reason}")
