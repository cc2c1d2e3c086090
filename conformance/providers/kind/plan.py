"""The kind install plan: Istio's documented multi-cluster install as numbered steps, from the topology.

One function per step, in the order Istio's guides and its own CI follow (DESIGN.md, "kind: real clusters"):
clusters -> kubeconfigs -> load balancers -> routes -> plug-in CA -> install primaries -> east-west gateways
and exposed services -> remote clusters -> remote secrets -> wait until synced -> probe workloads.
``meshconf plan`` prints it; ``KindProvider.up`` runs the same steps through the runner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.certs import MeshCA
from conformance.provider import ProbeSpec
from conformance.providers.kind import manifests as m
from conformance.providers.kind.addresses import DEFAULT_KIND_SUBNET, ClusterAddresses, cluster_addresses
from conformance.providers.kind.steps import Command, Manifest, Step
from conformance.providers.kube.probes import probe_docs, probe_workload_name
from conformance.topology import Cluster, Role, Topology

__all__ = ["SMOKE_NAMESPACE", "PlanContext", "build_plan", "context_name", "kind_config_docs", "variable"]

SMOKE_NAMESPACE = "meshconf-smoke"
_ISTIOD_WAIT = "300s"


def context_name(cluster: str) -> str:
    """The kubeconfig context kind creates for a cluster."""
    return f"kind-{cluster}"


def variable(cluster: str) -> str:
    """The variable that holds a cluster's control-plane address on the kind network."""
    return f"{cluster.upper().replace('-', '_')}_API_IP"


@dataclass
class PlanContext:
    """Everything a plan depends on. ``kind_subnet`` is assumed until read from docker at run time."""

    topology: Topology
    istio_version: str
    ca: MeshCA
    probe_source: str
    istioctl: str = "istioctl"
    node_image: str = m.NODE_IMAGES[m.DEFAULT_KUBERNETES]
    kind_subnet: str = DEFAULT_KIND_SUBNET
    kind_subnet_known: bool = False
    shipped_configs: Path | None = None
    """``kind-configs/<topology>/`` when its files are used as they are."""
    revision: str | None = None
    addresses: dict[str, ClusterAddresses] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.addresses = cluster_addresses(self.topology, self.kind_subnet)

    @property
    def kubeconfig(self) -> str:
        return "$RUN/kubeconfig"

    def kubectl(self, cluster: str, *args: str) -> tuple[str, ...]:
        return ("kubectl", "--kubeconfig", self.kubeconfig, "--context", context_name(cluster), *args)

    def istioctl_cmd(self, cluster: str, *args: str) -> tuple[str, ...]:
        return (self.istioctl, *args, "--kubeconfig", self.kubeconfig, "--context", context_name(cluster))


def kind_config_docs(topology: Topology, node_image: str = m.NODE_IMAGES[m.DEFAULT_KUBERNETES],
                     kind_subnet: str = DEFAULT_KIND_SUBNET) -> dict[str, dict[str, Any]]:
    """The kind config of every cluster (what kind-configs/<topology>/ ships)."""
    addresses = cluster_addresses(topology, kind_subnet)
    return {c.name: m.kind_cluster_config(c, addresses[c.name], node_image) for c in topology.clusters}


# -- the steps ----------------------------------------------------------------------------------------------


def create_clusters(ctx: PlanContext) -> Step:
    configs = kind_config_docs(ctx.topology, ctx.node_image, ctx.kind_subnet)
    manifests, commands = [], []
    for cluster in ctx.topology.clusters:
        shipped = ctx.shipped_configs / f"{cluster.name}.yaml" if ctx.shipped_configs else None
        manifest = Manifest(f"kind/{cluster.name}.yaml", (configs[cluster.name],),
                            location=str(shipped) if shipped else None)
        manifests.append(manifest)
        commands.append(Command(
            ("kind", "create", "cluster", "--name", cluster.name, "--config", manifest.shown_path,
             "--kubeconfig", ctx.kubeconfig, "--wait", "180s"),
            cluster=cluster.name, attempts=3, before_retry=("kind", "delete", "cluster", "--name", cluster.name)))
    return Step(0, "clusters", "Create the kind clusters", "each with its own pod and service subnets; "
                "kind writes their contexts into the run's own kubeconfig", tuple(commands), tuple(manifests),
                parallel=True)


def rewrite_kubeconfigs(ctx: PlanContext) -> Step:
    commands = []
    for cluster in ctx.topology.clusters:
        commands += [
            Command(("docker", "inspect", "-f", "{{.NetworkSettings.Networks.kind.IPAddress}}",
                     f"{cluster.name}-control-plane"), cluster=cluster.name, capture=variable(cluster.name)),
            Command(("kubectl", "config", "set-cluster", context_name(cluster.name),
                     f"--server=https://${{{variable(cluster.name)}}}:6443", "--kubeconfig", ctx.kubeconfig),
                    cluster=cluster.name),
        ]
    return Step(0, "kubeconfig", "Point each kubeconfig at the control-plane container on the kind network",
                "one kubeconfig that works from the host and from the other clusters (remote secrets use it)",
                tuple(commands))


def load_balancers(ctx: PlanContext) -> Step:
    where = "" if ctx.kind_subnet_known else " (assumed; read at run time with `docker network inspect kind`)"
    commands, manifests = [], []
    for cluster in ctx.topology.clusters:
        manifest = Manifest(f"{cluster.name}/metallb-pool.yaml",
                            tuple(m.metallb_pool(cluster, ctx.addresses[cluster.name])))
        manifests.append(manifest)
        commands += [
            Command(ctx.kubectl(cluster.name, "apply", "-f", m.METALLB_MANIFEST), cluster=cluster.name, attempts=3),
            Command(ctx.kubectl(cluster.name, "wait", "-n", "metallb-system", "pod", "-l", "app=metallb",
                                "--for=condition=Ready", "--timeout=120s"), cluster=cluster.name, attempts=10),
            Command(ctx.kubectl(cluster.name, "apply", "-f", manifest.shown_path), cluster=cluster.name, attempts=5),
        ]
    return Step(0, "load-balancers", "Install MetalLB, one cluster at a time",
                f"each cluster gets its own slice of the kind network {ctx.kind_subnet}{where}",
                tuple(commands), tuple(manifests))


def routes(ctx: PlanContext) -> Step:
    commands = []
    clusters = ctx.topology.clusters
    for index, one in enumerate(clusters):
        for other in clusters[index + 1:]:
            if one.network != other.network:
                continue
            for here, there in ((one, other), (other, one)):
                target = ctx.addresses[there.name]
                for subnet in (target.pod_subnet, target.service_subnet):
                    commands.append(Command(
                        ("docker", "exec", f"{here.name}-control-plane", "ip", "route", "add", subnet, "via",
                         f"${{{variable(there.name)}}}"), cluster=here.name))
    return Step(0, "routes", "Route pod and service subnets between clusters on the same network",
                "clusters on different networks get no routes: their traffic must use east-west gateways",
                tuple(commands))


def plug_in_ca(ctx: PlanContext) -> Step:
    commands, manifests = [], []
    for cluster in ctx.topology.clusters:
        namespace = Manifest(f"{cluster.name}/istio-system.yaml", (m.istio_system_namespace(cluster),))
        secret = Manifest(f"{cluster.name}/cacerts.yaml",
                          (m.cacerts_secret(ctx.ca.intermediate(cluster.name)),), sensitive=True)
        manifests += [namespace, secret]
        commands.append(Command(ctx.kubectl(cluster.name, "apply", "-f", namespace.shown_path, "-f",
                                            secret.shown_path), cluster=cluster.name))
    return Step(0, "ca", "Plug in the shared root CA and label istio-system with each cluster's network",
                "cacerts = the cluster's intermediate (conformance.certs), the shared root, the chain",
                tuple(commands), tuple(manifests))


def _install(ctx: PlanContext, clusters: list[Cluster]) -> tuple[list[Command], list[Manifest]]:
    commands, manifests = [], []
    for cluster in clusters:
        overlay = Manifest(f"{cluster.name}/istio.yaml",
                           (m.install_overlay(cluster, ctx.topology, ctx.addresses, ctx.revision),))
        manifests.append(overlay)
        commands.append(Command(ctx.istioctl_cmd(cluster.name, "install", "-y", "-f", overlay.shown_path),
                                cluster=cluster.name))
    return commands, manifests


def install_primaries(ctx: PlanContext) -> Step:
    commands, manifests = _install(ctx, list(ctx.topology.primaries))
    return Step(0, "install", f"Install Istio {ctx.istio_version} in every primary cluster",
                "meshID, clusterName and network per cluster; short workload cert TTL for the rotation check",
                tuple(commands), tuple(manifests), parallel=True)


def _gateway(ctx: PlanContext, cluster: Cluster) -> tuple[list[Command], list[Manifest]]:
    gateway = Manifest(f"{cluster.name}/eastwest-gateway.yaml",
                       (m.east_west_gateway(cluster, ctx.topology, ctx.addresses[cluster.name], ctx.revision),))
    commands = [
        Command(ctx.istioctl_cmd(cluster.name, "install", "-y", "-f", gateway.shown_path), cluster=cluster.name),
        Command(ctx.kubectl(cluster.name, "-n", "istio-system", "rollout", "status",
                            f"deployment/{m.EAST_WEST_GATEWAY}", f"--timeout={_ISTIOD_WAIT}"), cluster=cluster.name),
    ]
    manifests = [gateway]
    exposed: list[dict[str, Any]] = []
    if ctx.topology.multi_network:
        exposed.append(m.expose_services())
    if m.serves_remotes(cluster, ctx.topology):
        exposed += m.expose_istiod()
    if exposed:
        expose = Manifest(f"{cluster.name}/expose.yaml", tuple(exposed))
        manifests.append(expose)
        commands.append(Command(ctx.kubectl(cluster.name, "apply", "-f", expose.shown_path), cluster=cluster.name))
    return commands, manifests


def _gateways(ctx: PlanContext, clusters: Sequence[Cluster]) -> tuple[list[Command], list[Manifest]]:
    """Commands and manifests of the east-west gateway of each of ``clusters`` that needs one."""
    commands: list[Command] = []
    manifests: list[Manifest] = []
    for cluster in clusters:
        if m.needs_east_west_gateway(cluster, ctx.topology):
            more_commands, more_manifests = _gateway(ctx, cluster)
            commands += more_commands
            manifests += more_manifests
    return commands, manifests


def east_west_gateways(ctx: PlanContext) -> Step:
    commands, manifests = _gateways(ctx, ctx.topology.primaries)
    return Step(0, "east-west", "Install east-west gateways and expose services through them",
                "15443 AUTO_PASSTHROUGH for *.local across networks; istiod on 15012/15017 for remote clusters",
                tuple(commands), tuple(manifests), parallel=True)


def install_remotes(ctx: PlanContext) -> Step:
    remotes = [c for c in ctx.topology.clusters if c.role is Role.REMOTE]
    commands, manifests = _install(ctx, remotes)
    gateway_commands, gateway_manifests = _gateways(ctx, remotes)
    return Step(0, "remotes", "Install the remote profile in every remote cluster",
                "remotePilotAddress = its primary's east-west gateway (pinned MetalLB address)",
                tuple(commands + gateway_commands), tuple(manifests + gateway_manifests))


def remote_secrets(ctx: PlanContext) -> Step:
    commands = []
    for primary in ctx.topology.primaries:
        for other in ctx.topology.clusters:
            if other.name == primary.name:
                continue
            commands.append(Command(
                ctx.istioctl_cmd(other.name, "create-remote-secret", f"--name={other.name}"),
                cluster=primary.name, pipe_to=ctx.kubectl(primary.name, "apply", "-f", "-")))
    return Step(0, "remote-secrets", "Give every control plane a remote secret for every other cluster",
                "istioctl create-remote-secret piped straight into kubectl apply: the credentials are never "
                "written or printed", tuple(commands))


def wait_synced(ctx: PlanContext) -> Step:
    commands = []
    for primary in ctx.topology.primaries:
        commands += [
            Command(ctx.kubectl(primary.name, "-n", "istio-system", "rollout", "status", "deployment/istiod",
                                f"--timeout={_ISTIOD_WAIT}"), cluster=primary.name),
            Command(ctx.istioctl_cmd(primary.name, "remote-clusters"), cluster=primary.name, attempts=36,
                    until="every cluster is synced"),
        ]
    return Step(0, "wait", "Wait until every istiod is ready and sees every cluster",
                "`istioctl remote-clusters` must list every cluster as synced", tuple(commands))


def smoke_probes(ctx: PlanContext) -> Step:
    commands, manifests = [], []
    for cluster in ctx.topology.clusters:
        spec = ProbeSpec(service="smoke", namespace=SMOKE_NAMESPACE, cluster=cluster.name)
        docs = probe_docs(spec, cluster, ctx.probe_source)
        manifest = Manifest(f"{cluster.name}/smoke-probe.yaml", tuple(docs),
                            elide={"probe.py": f"<workloads/probe/probe.py, {len(ctx.probe_source.encode())} bytes>"})
        manifests.append(manifest)
        commands += [
            Command(ctx.kubectl(cluster.name, "apply", "-f", manifest.shown_path), cluster=cluster.name),
            Command(ctx.kubectl(cluster.name, "-n", SMOKE_NAMESPACE, "rollout", "status",
                                f"deployment/{probe_workload_name(spec)}", "--timeout=180s"), cluster=cluster.name),
        ]
    return Step(0, "probes", "Deploy a probe workload in every cluster (sidecar injected)",
                "python:3.12-alpine with probe.py from a ConfigMap; each check deploys its own the same way",
                tuple(commands), tuple(manifests), parallel=True)


STEPS: tuple[Callable[[PlanContext], Step], ...] = (
    create_clusters, rewrite_kubeconfigs, load_balancers, routes, plug_in_ca, install_primaries,
    east_west_gateways, install_remotes, remote_secrets, wait_synced, smoke_probes,
)


def build_plan(ctx: PlanContext) -> list[Step]:
    """Every step, numbered from 1. Steps with nothing to do for this topology are kept (printed as such)."""
    steps = []
    for number, make in enumerate(STEPS, start=1):
        step = make(ctx)
        steps.append(Step(number, step.key, step.title, step.why, step.commands, step.manifests, step.parallel))
    return steps
