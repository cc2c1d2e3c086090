"""KindProvider: kind clusters running Istio, installed the way Istio documents it.

``up()`` runs the plan (``plan.py``) through the runner; everything after that (applying check YAML, probe
workloads, the probe control port, Envoy admin, diagnostics) goes through the Kubernetes API (``kube.api``).
Only clusters this run created are ever deleted; ``--reuse`` attaches to existing clusters of the topology's
names and leaves them in place.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from conformance.certs import MeshCA
from conformance.config import RunConfig
from conformance.errors import EnvironmentBroken, ProviderError, UsageError
from conformance.probe import probe_source
from conformance.provider import Feature, MeshDescription
from conformance.providers.kind import manifests as m
from conformance.providers.kind.addresses import DEFAULT_KIND_SUBNET, ClusterAddresses, cluster_addresses
from conformance.providers.kind.diagnostics import write_diagnostics
from conformance.providers.kind.faults import KindFaults
from conformance.providers.kind.plan import PlanContext, build_plan, context_name, variable
from conformance.providers.kind.runner import Runner, SubprocessRunner, run_steps
from conformance.providers.kind.steps import render_argv, render_plan
from conformance.providers.kube.api import KubeAPI
from conformance.providers.kube.mesh import KubeMesh
from conformance.runstate import RunState, new_run_dir, runs_root
from conformance.topology import Topology

__all__ = ["KindProvider"]

_REPO = Path(__file__).resolve().parents[3]


def shipped_configs(topology: Topology, for_print: bool = False) -> Path | None:
    """``kind-configs/<topology>/`` of the repository, if it ships configs for every cluster.

    ``for_print``: relative to the working directory when that is shorter (what a user would type).
    """
    folder = _REPO / "kind-configs" / topology.name
    if not all((folder / f"{c.name}.yaml").is_file() for c in topology.clusters):
        return None
    if for_print:
        relative = Path(os.path.relpath(folder))
        return folder if str(relative).startswith("..") else relative
    return folder


def plan_context(config: RunConfig, topology: Topology, ca: MeshCA, istioctl: str = "istioctl",
                 kind_subnet: str | None = None, for_print: bool = False) -> PlanContext:
    if not config.istio_version:
        raise UsageError("the kind provider needs --istio-version (e.g. --istio-version 1.28.0)")
    node_image = config.kind_node_image or m.NODE_IMAGES[m.DEFAULT_KUBERNETES]
    shipped = None if config.kind_node_image else shipped_configs(topology, for_print)
    return PlanContext(topology, config.istio_version, ca, probe_source().read_text(), istioctl=istioctl,
                       node_image=node_image, shipped_configs=shipped,
                       kind_subnet=kind_subnet or DEFAULT_KIND_SUBNET, kind_subnet_known=kind_subnet is not None)


class KindProvider(KubeMesh):
    """kind clusters + istioctl, per Istio's multi-cluster install guides."""

    name = "kind"
    OFFERS = frozenset(Feature) - {Feature.SIDECAR_ENTRY, Feature.LINK_RTT}  # what features() can return

    def __init__(self, config: RunConfig, topology: Topology, run_dir: Path | None = None,
                 runner: Runner | None = None) -> None:
        super().__init__(config, topology)
        self.run_dir = run_dir
        self.runner = runner or SubprocessRunner()
        self._apis: dict[str, KubeAPI] = {}
        self._faults = KindFaults(self)

    # -- plan ----------------------------------------------------------------------------------------------

    @classmethod
    def plan(cls, config: RunConfig, topology: Topology) -> str:
        """The whole install as printable steps; runs nothing. Secret data is redacted."""
        with tempfile.TemporaryDirectory(prefix="meshconf-plan-") as scratch:
            ctx = plan_context(config, topology, MeshCA.create(Path(scratch)), istioctl="istioctl", for_print=True)
            header = [
                f"meshconf plan: provider kind, topology {topology.name}, Istio {ctx.istio_version}",
                "clusters: " + ", ".join(f"{c.name} ({c.role}, {c.network}, {c.region}/{c.zone})"
                                         for c in topology.clusters),
                f"tools: kind {m.KIND_VERSION}, node image {ctx.node_image}, istioctl {ctx.istio_version} "
                "(downloaded into ~/.cache/meshconf/istioctl and sha256-checked unless --istioctl is given)",
                "RUN = the run directory meshconf creates (~/.local/state/meshconf/runs/kind-<id>); "
                "${X_API_IP} = values captured at run time",
                "Nothing below has been run. Secret data is shown as <redacted: N bytes>.",
            ]
            return render_plan(header, build_plan(ctx))

    @classmethod
    def upgrade_plan(cls, config: RunConfig, topology: Topology, to_version: str) -> str:
        """The V1 install plan followed by the canary steps to ``to_version``; runs nothing."""
        from conformance.providers.kind.upgrade import upgrade_steps

        with tempfile.TemporaryDirectory(prefix="meshconf-plan-") as scratch:
            ca = MeshCA.create(Path(scratch))
            ctx = plan_context(config, topology, ca, istioctl=f"istioctl-{config.istio_version}", for_print=True)
            steps = build_plan(ctx)
            steps += upgrade_steps(ctx, to_version, f"istioctl-{to_version}", len(steps) + 1)
            header = [f"meshconf upgrade plan: provider kind, topology {topology.name}, Istio {config.istio_version} "
                      f"-> {to_version} (canary by revision)",
                      f"before step {len(steps) - 3}: the catalogue runs on {config.istio_version} (out/before); "
                      f"after step {len(steps)}: it runs on {to_version} (out/after), then `meshconf gate`",
                      "istioctl-<V> = istioctl of that version (downloaded and sha256-checked). Nothing has been run."]
            return render_plan(header, steps)

    @classmethod
    def upgrade(cls, config: RunConfig, topology: Topology, to_version: str, out: Path,
                progress: Callable[[str], None]) -> int:
        from conformance.providers.kind.upgrade import run_upgrade

        return run_upgrade(config, topology, to_version, out, progress)

    # -- lifecycle -----------------------------------------------------------------------------------------

    def up(self, owner_pid: int | None = None, progress: Callable[[str], None] | None = None) -> None:
        say = progress or (lambda _line: None)
        from conformance.providers.kind.istioctl import resolve_istioctl

        if not self.config.istio_version:
            raise UsageError("the kind provider needs --istio-version (e.g. --istio-version 1.28.0)")
        istioctl = resolve_istioctl(self.config.istio_version, self.config.istioctl)
        existing = self._existing_clusters()
        wanted = set(self.topology.cluster_names)
        reuse = bool(self.config.reuse and wanted <= existing)
        if wanted & existing and not reuse:
            raise UsageError(f"kind clusters {', '.join(sorted(wanted & existing))} already exist; pass --reuse to "
                             "use them, or delete them with `kind delete cluster --name ...`")
        self.run_dir = new_run_dir("kind")
        state = RunState(self.run_dir)
        ca = MeshCA.create(self.run_dir / "ca")
        state.update(provider="kind", topology=self.config.topology, istio_version=self.config.istio_version,
                     istioctl=str(istioctl), created=[] if reuse else sorted(wanted), reused=reuse, variables={})
        variables: dict[str, str] = {}
        ctx = plan_context(self.config, self.topology, ca, istioctl=str(istioctl))
        steps = build_plan(ctx)
        try:
            if reuse:
                say(f"kind: reusing clusters {', '.join(sorted(wanted))}")
                for cluster in self.topology.cluster_names:
                    self._run(["kind", "export", "kubeconfig", "--name", cluster, "--kubeconfig",
                               str(self.run_dir / "kubeconfig")])
                run_steps(self.runner, [s for s in steps if s.key == "kubeconfig"], self.run_dir, variables, say)
                subnet = self._kind_subnet()
                steps = build_plan(plan_context(self.config, self.topology, ca, str(istioctl), subnet))
                run_steps(self.runner, [s for s in steps if s.key in ("wait", "probes")], self.run_dir, variables,
                          say)
            else:
                run_steps(self.runner, steps[:2], self.run_dir, variables, say)
                subnet = self._kind_subnet()
                steps = build_plan(plan_context(self.config, self.topology, ca, str(istioctl), subnet))
                run_steps(self.runner, steps[2:], self.run_dir, variables, say)
            state.update(variables=variables, kind_subnet=subnet, ready=True)
        except BaseException:
            state.update(variables=variables)
            if not self.config.keep:
                self.down()
            raise
        say(f"kind: mesh up; run directory {self.run_dir}")

    @classmethod
    def attach(cls, config: RunConfig, topology: Topology, run_dir: Path) -> KindProvider:
        data = RunState(run_dir).read()
        if not data.get("ready"):
            raise EnvironmentBroken(f"no ready kind mesh recorded in {run_dir} (start one with `meshconf up`)")
        return cls(config, topology, run_dir)

    @classmethod
    def cleanup(cls, run_dir: Path, runner: Runner | None = None) -> list[int]:
        """Delete the clusters this run created (and nothing else), then its directory. Returns no PIDs."""
        state = RunState(run_dir)
        for cluster in state.read().get("created", []):
            (runner or SubprocessRunner()).run(["kind", "delete", "cluster", "--name", str(cluster)])
        state.remove()
        return []

    @classmethod
    def leftovers(cls) -> list[Path]:
        root = runs_root()
        return sorted(p for p in root.glob("kind-*") if RunState(p).owned()) if root.is_dir() else []

    def down(self) -> None:
        if self.run_dir is None:
            return
        self.cleanup(self.run_dir, self.runner)
        self._apis.clear()

    def __enter__(self) -> KindProvider:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- contract ------------------------------------------------------------------------------------------

    def describe(self) -> MeshDescription:
        version = self.config.istio_version or "?"
        image = self.config.kind_node_image or m.NODE_IMAGES[m.DEFAULT_KUBERNETES]
        kubernetes = image.split(":")[1].split("@")[0] if ":" in image else None
        return MeshDescription(provider=self.name, topology=self.topology.name, implementation="istio",
                               mesh_version=version, proxy_version=f"istio-proxy {version}",
                               kubernetes_version=kubernetes, details={"kind": m.KIND_VERSION, "nodeImage": image})

    def features(self) -> frozenset[Feature]:
        features = {Feature.OUT_OF_MESH_WORKLOADS, Feature.MESH_WIDE_CONFIG, Feature.CERT_ROTATION,
                    Feature.WORKLOAD_FAULTS, Feature.INGRESS_GATEWAY}
        if len(self.topology.clusters) > 1:
            features |= {Feature.MULTI_CLUSTER, Feature.LINK_FAULTS}
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

    def variables(self) -> dict[str, str]:
        return dict(RunState(self.run_dir).read().get("variables", {})) if self.run_dir else {}

    def node_address(self, cluster: str) -> str:
        address = self.variables().get(variable(cluster))
        if not address:
            raise EnvironmentBroken(f"the address of {cluster}'s node is not recorded; was the mesh brought up?")
        return address

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

