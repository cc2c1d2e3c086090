"""KindProvider: kind clusters running Istio, installed the way Istio documents it.

``up()`` runs the plan (``plan.py``) through the runner; everything after that (applying check YAML, probe
workloads, the probe control port, Envoy admin, diagnostics) goes through the Kubernetes API (``kube.api``).
Only clusters this run created are ever deleted, and the run's state is kept until ``kind get clusters``
confirms they are gone (``meshconf down`` retries); ``--reuse`` attaches to existing clusters of the
topology's names and leaves them in place.

The host must reach container addresses on the docker ``kind`` network (ingress calls and load go to MetalLB
addresses there): Linux with Docker Engine. Docker Desktop (macOS, Windows, and Docker Desktop on Linux) runs
containers in a VM the host cannot route to, so ``up`` refuses it with one line (``meshconf doctor`` too).
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from conformance.certs import MeshCA
from conformance.config import RunConfig
from conformance.doctor import host_reaches_containers
from conformance.errors import ConformanceError, EnvironmentBroken, ProviderError, UsageError
from conformance.probe import probe_source
from conformance.provider import Feature, MeshDescription
from conformance.providers.kind import images as i
from conformance.providers.kind import manifests as m
from conformance.providers.kind.addresses import DEFAULT_KIND_SUBNET, ClusterAddresses, cluster_addresses
from conformance.providers.kind.diagnostics import write_diagnostics
from conformance.providers.kind.faults import KindFaults
from conformance.providers.kind.lifecycle import fault_steps
from conformance.providers.kind.mesh import KindMesh
from conformance.providers.kind.plan import (
    PlanContext,
    build_plan,
    context_name,
    delete_cluster,
    node_variable,
    teardown,
)
from conformance.providers.kind.settings import KindSettings
from conformance.providers.kind.verification import NOT_RUN, VERIFICATION
from conformance.providers.kube.api import KubeAPI
from conformance.providers.kube.meshconfig import STATE_KEY, restore_mesh_configs
from conformance.providers.kube.runner import Runner, SubprocessRunner, run_steps
from conformance.providers.kube.steps import Step, render_argv, render_plan
from conformance.runstate import RunState, new_run_dir
from conformance.topology import Topology

__all__ = ["KindProvider"]

_REPO = Path(__file__).resolve().parents[3]


def _shown(path: Path) -> Path:
    """Relative to the working directory when that is shorter (what a user would type)."""
    relative = Path(os.path.relpath(path))
    return path if str(relative).startswith("..") else relative


def shipped_configs(topology: Topology, for_print: bool = False) -> Path | None:
    """``kind-configs/<topology>/`` of the repository, if it ships configs for every cluster."""
    folder = _REPO / "kind-configs" / topology.name
    if not all((folder / f"{c.name}.yaml").is_file() for c in topology.clusters):
        return None
    return _shown(folder) if for_print else folder


def plan_context(config: RunConfig, topology: Topology, ca: MeshCA, istioctl: str = "istioctl",
                 kind_subnet: str | None = None, for_print: bool = False) -> PlanContext:
    settings = config.settings_as(KindSettings)
    if not settings.istio_version:
        raise UsageError("the kind provider needs --istio-version (e.g. --istio-version 1.28.0)")
    node_image = settings.kind_node_image or m.NODE_IMAGES[m.DEFAULT_KUBERNETES]
    shipped = None if settings.kind_node_image else shipped_configs(topology, for_print)
    return PlanContext(topology, settings.istio_version, ca, probe_source().read_text(), istioctl=istioctl,
                       node_image=node_image, shipped_configs=shipped,
                       kind_subnet=kind_subnet or DEFAULT_KIND_SUBNET, kind_subnet_known=kind_subnet is not None,
                       image_hub=settings.image_hub,
                       locust_dockerfile=_shown(i.LOCUST_DOCKERFILE) if for_print else i.LOCUST_DOCKERFILE)


def _numbered(step: Step, number: int) -> Step:
    return Step(number, step.key, step.title, step.why, step.commands, step.manifests, step.parallel)


def _plan_header(ctx: PlanContext) -> list[str]:
    return [
        f"tools: kind {m.KIND_VERSION}, node image {ctx.node_image}, istioctl {ctx.istio_version} "
        "(downloaded into ~/.cache/meshconf/istioctl and sha256-checked unless --istioctl is given)",
        f"images: from {'the Docker Hub mirror ' + ctx.image_hub if ctx.image_hub else 'Docker Hub'} "
        "(--image-hub), pulled once on the host and loaded into every cluster",
        "host: Linux with Docker Engine (ingress and load reach MetalLB addresses on the kind network; "
        "Docker Desktop is refused)",
        "RUN = the run directory meshconf creates (~/.local/state/meshconf/runs/kind-<id>); "
        "${X_IP} = values captured at run time",
        f"Nothing below has been run. Secret data is shown as <redacted: N bytes>. Verification: {NOT_RUN}; "
        "each step says what the tests prove instead.",
    ]


class KindProvider(KindMesh):
    """kind clusters + istioctl, per Istio's multi-cluster install guides."""

    name = "kind"
    OFFERS = frozenset(Feature) - {Feature.SIDECAR_ENTRY}  # what features() can return (LINK_RTT once netem is on)
    Settings = KindSettings

    def __init__(self, config: RunConfig, topology: Topology, run_dir: Path | None = None,
                 runner: Runner | None = None) -> None:
        super().__init__(config, topology, run_dir)
        self.settings = config.settings_as(KindSettings)
        self.runner = runner or SubprocessRunner()
        self._apis: dict[str, KubeAPI] = {}
        self._nodes: dict[str, list[str]] = {}
        self._faults = KindFaults(self)
        self._upgrade: tuple[str, list[Step], dict[str, str]] | None = None

    # -- plan ----------------------------------------------------------------------------------------------

    @classmethod
    def plan(cls, config: RunConfig, topology: Topology) -> str:
        """The whole install as printable steps; runs nothing. Secret data is redacted."""
        with tempfile.TemporaryDirectory(prefix="meshconf-plan-") as scratch:
            ctx = plan_context(config, topology, MeshCA.create(Path(scratch)), istioctl="istioctl", for_print=True)
            header = [
                f"meshconf plan: provider kind, topology {topology.name}, Istio {ctx.istio_version}",
                "clusters: " + ", ".join(f"{c.name} ({c.role}, {c.network}, {c.region}/{c.zone})"
                                         for c in topology.clusters)
                + f"; link round trip {topology.link_rtt_ms:g} ms",
                *_plan_header(ctx),
            ]
            steps = build_plan(ctx)
            steps.append(_numbered(teardown(ctx), len(steps) + 1))
            faults = [_numbered(s, len(steps) + s.number) for s in fault_steps(ctx, config.timeouts.control_plane_s)]
            primary = topology.primaries[0].name
            section = ["", f"Faults the lifecycle checks run once the mesh is up (not part of the bring-up; shown for "
                           f"{primary}" + (f" and {topology.cluster_names[-1]}" if len(topology.clusters) > 1 else "")
                           + ", each check picks its own clusters):"]
            return (render_plan(header, steps, verification=VERIFICATION)
                    + render_plan(section, faults, verification=VERIFICATION))

    @classmethod
    def at_version(cls, config: RunConfig, version: str | None) -> RunConfig:
        """kind installs ``version`` (``--from``), and after the canary runs ``--to``."""
        if not version:
            raise UsageError("meshconf upgrade --provider kind needs --from, the Istio to install first "
                             "(e.g. --from 1.27.3)")
        return replace(config, settings=replace(config.settings_as(KindSettings), istio_version=version))

    @classmethod
    def upgrade_plan(cls, config: RunConfig, topology: Topology, to_version: str) -> str:
        """The V1 install plan (``--from``, see :meth:`at_version`) followed by the canary steps to ``to_version``;
        runs nothing."""
        from conformance.providers.kind.upgrade import upgrade_steps
        from conformance.upgrade import HELD_CONNECTIONS

        with tempfile.TemporaryDirectory(prefix="meshconf-plan-") as scratch:
            ca = MeshCA.create(Path(scratch))
            version = config.settings_as(KindSettings).istio_version
            ctx = plan_context(config, topology, ca, istioctl=f"istioctl-{version}", for_print=True)
            steps = build_plan(ctx)
            steps += upgrade_steps(ctx, to_version, f"istioctl-{to_version}", len(steps) + 1)
            steps.append(_numbered(teardown(ctx), len(steps) + 1))
            canary = next(s.number for s in steps if s.key == "preload")
            restart = next(s.number for s in steps if s.key == "restart")
            header = [f"meshconf upgrade plan: provider kind, topology {topology.name}, Istio {version} "
                      f"-> {to_version} (canary by revision)",
                      f"before step {canary}: the catalogue runs on {version} (out/before); from step "
                      f"{canary + 1} to step {restart} {HELD_CONNECTIONS} keep-alive connections between workloads "
                      f"that are not restarted are held across clusters (lost connections allowed: "
                      f"{config.budgets.upgrade_connection_resets}, --budget upgrade_connection_resets)",
                      f"after step {restart}: the catalogue runs on {to_version} (out/after), then `meshconf gate`",
                      "istioctl-<V> = istioctl of that version (downloaded and sha256-checked).",
                      *_plan_header(ctx)[1:]]
            return render_plan(header, steps, verification=VERIFICATION)

    istioctl_to: Path | None = None
    """V2's istioctl for the upgrade steps (a seam for tests); None: downloaded and sha256-checked."""

    def prepare_upgrade(self, to_version: str, say: Callable[[str], None]) -> None:
        """The canary's first step, before the clock: V2's images pulled once and loaded into every cluster."""
        steps, variables = self._canary(to_version)
        assert self.run_dir is not None
        run_steps(self.runner, steps[:1], self.run_dir, variables, say)

    def upgrade_mesh(self, to_version: str, say: Callable[[str], None]) -> None:
        """The canary by revision (``upgrade.py``): V2 beside V1, the east-west gateways, the default tag, the
        smoke workloads restarted."""
        steps, variables = self._canary(to_version)
        assert self.run_dir is not None
        run_steps(self.runner, steps[1:], self.run_dir, variables, say)

    def _canary(self, to_version: str) -> tuple[list[Step], dict[str, str]]:
        """The canary steps for this run (its CA, istioctl and kind subnet), and the run's captured variables."""
        if self._upgrade is None or self._upgrade[0] != to_version:
            from conformance.providers.kind.upgrade import upgrade_steps
            from conformance.providers.kube.istioctl import resolve_istioctl

            if self.run_dir is None:
                raise EnvironmentBroken("the kind provider is not up: upgrade_mesh needs a mesh (call up() first)")
            state = RunState(self.run_dir).read()
            ctx = plan_context(self.config, self.topology, MeshCA.load(self.run_dir / "ca"), str(state["istioctl"]),
                               state.get("kind_subnet"))
            istioctl = self.istioctl_to or resolve_istioctl(to_version)
            self._upgrade = (to_version, upgrade_steps(ctx, to_version, str(istioctl), 1),
                             dict(state.get("variables", {})))
        return self._upgrade[1], self._upgrade[2]

    @classmethod
    def validate(cls, config: RunConfig, topology: Topology) -> None:
        if not config.settings_as(KindSettings).istio_version:
            raise UsageError("the kind provider needs --istio-version (e.g. --istio-version 1.28.0)")

    @classmethod
    def preflight(cls, config: RunConfig, topology: Topology) -> list[str]:
        """What would stop ``up()`` on this machine: see ``preflight.py`` (and ``meshconf doctor``)."""
        from conformance.providers.kind.preflight import preflight

        return preflight(config, topology)

    # -- lifecycle -----------------------------------------------------------------------------------------

    def up(self, owner_pid: int | None = None, progress: Callable[[str], None] | None = None) -> None:
        say = progress or (lambda _line: None)
        from conformance.providers.kube.istioctl import resolve_istioctl

        if not self.settings.istio_version:
            raise UsageError("the kind provider needs --istio-version (e.g. --istio-version 1.28.0)")
        self._check_host()
        istioctl = resolve_istioctl(self.settings.istio_version, self.settings.istioctl)
        existing = self._existing_clusters()
        wanted = set(self.topology.cluster_names)
        reuse = bool(self.settings.reuse and wanted <= existing)
        if wanted & existing and not reuse:
            raise UsageError(f"kind clusters {', '.join(sorted(wanted & existing))} already exist; pass --reuse to "
                             "use them, or delete them with `kind delete cluster --name ...`")
        self.run_dir = new_run_dir("kind")
        state = RunState(self.run_dir)
        ca = MeshCA.create(self.run_dir / "ca")
        state.update(provider="kind", topology=self.config.topology, istio_version=self.settings.istio_version,
                     istioctl=str(istioctl), created=[] if reuse else sorted(wanted), reused=reuse, variables={})
        variables: dict[str, str] = {}
        steps = build_plan(plan_context(self.config, self.topology, ca, istioctl=str(istioctl)))

        def run(keys: set[str]) -> None:
            assert self.run_dir is not None
            run_steps(self.runner, [s for s in steps if s.key in keys], self.run_dir, variables, say)

        try:
            if reuse:
                say(f"kind: reusing clusters {', '.join(sorted(wanted))}")
                for cluster in self.topology.cluster_names:
                    self._run(["kind", "export", "kubeconfig", "--name", cluster, "--kubeconfig",
                               str(self.run_dir / "kubeconfig")])
                run({"addresses"})
            else:
                run({"clusters", "addresses", "kernel", "images"})
            # MetalLB slices, link targets and routes depend on the kind network's real subnet
            subnet = self._kind_subnet()
            steps = build_plan(plan_context(self.config, self.topology, ca, str(istioctl), subnet))
            if reuse:
                run({"wait", "links", "probes"})
            else:
                run({s.key for s in steps} - {"clusters", "addresses", "kernel", "images"})
            state.update(variables=variables, kind_subnet=subnet, link_rtt_ms=self.topology.link_rtt_ms, ready=True)
        except BaseException:
            state.update(variables=variables)
            if not self.config.keep:
                try:
                    self.down()
                except ConformanceError as exc:  # the failure that brought us here is the one to report
                    say(f"kind: cleanup after the failure did not finish: {exc}")
            raise
        say(f"kind: mesh up; run directory {self.run_dir}")

    @classmethod
    def cleanup(cls, run_dir: Path, runner: Runner | None = None) -> list[int]:
        """Delete the clusters this run created (and nothing else), then its directory. Returns no PIDs.

        ``kind delete cluster`` gets the run's own kubeconfig, so the user's ``~/.kube/config`` is never edited.
        The state is removed only once ``kind get clusters`` no longer lists any of them; otherwise it keeps
        the clusters still there and ProviderError says to run ``meshconf down`` again.
        """
        runner = runner or SubprocessRunner()
        state = RunState(run_dir)
        created = [str(c) for c in state.read().get("created", [])]
        changed = set(state.read().get(STATE_KEY) or {}) - set(created)
        if changed:  # reused clusters outlive the run: put back the MeshConfig it changed there
            restore_mesh_configs({c: KubeAPI(context_name(c), run_dir / "kubeconfig") for c in changed}, state)
        for cluster in created:
            runner.run(list(delete_cluster(cluster, str(run_dir / "kubeconfig"))))
        if created:
            listed = runner.run(["kind", "get", "clusters"])
            if listed.returncode != 0:
                raise ProviderError(f"`kind get clusters` failed after deleting {', '.join(created)}, so their "
                                    f"deletion is unconfirmed: {(listed.stderr or listed.stdout).strip()[:200]}; "
                                    f"run `meshconf down {run_dir}` again")
            remaining = sorted(set(created) & {line.strip() for line in listed.stdout.splitlines()})
            if remaining:
                state.update(created=remaining)
                raise ProviderError(f"kind clusters {', '.join(remaining)} still exist after `kind delete cluster`; "
                                    f"run `meshconf down {run_dir}` to retry")
        state.remove()
        return []

    def down(self) -> None:
        if self.run_dir is None:
            return
        self.cleanup(self.run_dir, self.runner)
        self._apis.clear()

    # -- contract ------------------------------------------------------------------------------------------

    def describe(self) -> MeshDescription:
        version = self.settings.istio_version or "?"
        image = self.settings.kind_node_image or m.NODE_IMAGES[m.DEFAULT_KUBERNETES]
        kubernetes = image.split(":")[1].split("@")[0] if ":" in image else None
        return MeshDescription(provider=self.name, topology=self.topology.name, implementation="istio",
                               mesh_version=version, proxy_version=f"istio-proxy {version}",
                               kubernetes_version=kubernetes, details={"kind": m.KIND_VERSION, "nodeImage": image})

    def features(self) -> frozenset[Feature]:
        features = {Feature.OUT_OF_MESH_WORKLOADS, Feature.MESH_WIDE_CONFIG, Feature.CERT_ROTATION,
                    Feature.WORKLOAD_FAULTS, Feature.INGRESS_GATEWAY}
        if len(self.topology.clusters) > 1:
            features |= {Feature.MULTI_CLUSTER, Feature.LINK_FAULTS}
            # only once the links step has applied the topology's round trip (netem on every node)
            applied = RunState(self.run_dir).read().get("link_rtt_ms") if self.run_dir else None
            if applied and float(applied) > 0:
                features.add(Feature.LINK_RTT)
        if self.topology.multi_network:
            features.add(Feature.MULTI_NETWORK)
        if any(m.needs_east_west_gateway(c, self.topology) for c in self.topology.clusters):
            features |= {Feature.EAST_WEST_GATEWAY, Feature.GATEWAY_FAULTS}
        return frozenset(features)

    @property
    def faults(self) -> KindFaults:
        return self._faults

    def diagnostics(self, dest: Path, namespaces: Sequence[str]) -> list[Path]:
        return write_diagnostics(self, dest, namespaces)

    # -- plumbing ------------------------------------------------------------------------------------------

    def api(self, cluster: str) -> KubeAPI:
        if self.run_dir is None:
            raise EnvironmentBroken("the kind mesh is not up (call up() or attach() first)")
        if cluster not in self._apis:
            self._apis[cluster] = KubeAPI(context_name(cluster), self.run_dir / "kubeconfig")
        return self._apis[cluster]

    def fault_context(self) -> PlanContext:
        """The plan's context at run time (the real istioctl, the kind network's subnet), for fault commands."""
        if self.run_dir is None:
            raise EnvironmentBroken("the kind mesh is not up (call up() or attach() first)")
        state = RunState(self.run_dir).read()
        return plan_context(self.config, self.topology, MeshCA.load(self.run_dir / "ca"),
                            str(state.get("istioctl", "istioctl")), state.get("kind_subnet"))

    def variables(self) -> dict[str, str]:
        return dict(RunState(self.run_dir).read().get("variables", {})) if self.run_dir else {}

    def nodes(self, cluster: str) -> list[str]:
        """The node containers of ``cluster``, as ``kind get nodes`` lists them (workers included)."""
        if cluster not in self._nodes:
            listed = self._run(["kind", "get", "nodes", "--name", cluster])
            self._nodes[cluster] = sorted(line.strip() for line in listed.splitlines() if line.strip())
            if not self._nodes[cluster]:
                raise EnvironmentBroken(f"`kind get nodes --name {cluster}` lists no nodes; is the cluster gone?")
        return self._nodes[cluster]

    def node_address(self, node: str) -> str:
        """A node container's address on the kind network (recorded at ``up``, else asked from docker)."""
        address = self.variables().get(node_variable(node))
        if not address:
            address = self._run(["docker", "inspect", "-f", "{{.NetworkSettings.Networks.kind.IPAddress}}",
                                 node]).strip()
        if not address:
            raise EnvironmentBroken(f"node {node} has no address on the docker kind network")
        return address

    def link_targets(self, cluster: str) -> list[str]:
        """Traffic "to ``cluster``": its nodes, its pod and service subnets, its MetalLB slice (plan.link_targets)."""
        addresses = self.addresses()[cluster]
        return [*(f"{self.node_address(node)}/32" for node in self.nodes(cluster)), addresses.pod_subnet,
                addresses.service_subnet, addresses.pool_cidr]

    def addresses(self) -> dict[str, ClusterAddresses]:
        subnet = RunState(self.run_dir).read().get("kind_subnet") if self.run_dir else None
        return cluster_addresses(self.topology, subnet) if subnet else cluster_addresses(self.topology)

    def docker(self, node: str, *argv: str, ignore_failure: bool = False) -> str:
        return self._run(["docker", "exec", node, *argv], ignore_failure=ignore_failure)

    def istioctl(self, cluster: str, *argv: str) -> str:
        binary = RunState(self.run_dir).read().get("istioctl", "istioctl") if self.run_dir else "istioctl"
        return self._run([binary, *argv, "--kubeconfig", str(self.run_dir / "kubeconfig" if self.run_dir else ""),
                          "--context", context_name(cluster)], ignore_failure=True)

    def _run(self, argv: list[str], ignore_failure: bool = False) -> str:
        result = self.runner.run(argv)
        if result.returncode != 0 and not ignore_failure:
            raise ProviderError(f"`{render_argv(argv)}` failed: {(result.stderr or result.stdout).strip()[:300]}")
        return result.stdout

    def _check_host(self) -> None:
        """Refuse hosts that cannot reach container addresses (one line, before anything is created)."""
        docker_os = self.runner.run(["docker", "info", "--format", "{{.OperatingSystem}}"]).stdout.strip()
        reason = host_reaches_containers(platform.system(), docker_os)
        if reason:
            raise EnvironmentBroken(f"the kind provider cannot run here: {reason}")

    def _existing_clusters(self) -> set[str]:
        result = self.runner.run(["kind", "get", "clusters"])
        if result.returncode != 0:
            raise EnvironmentBroken(f"`kind get clusters` failed: {result.stderr.strip()[:200]} "
                                    "(is Docker running? see `meshconf doctor`)")
        return {line.strip() for line in result.stdout.splitlines() if line.strip()}

    def _kind_subnet(self) -> str:
        text = self._run(["docker", "network", "inspect", "kind", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"])
        for subnet in text.split():
            if ":" not in subnet:
                return subnet
        raise EnvironmentBroken(f"the docker kind network has no IPv4 subnet ({text.strip()!r})")

