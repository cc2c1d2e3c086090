"""The kind install plan: Istio's documented multi-cluster install as numbered steps, from the topology.

One function per step, in the order Istio's own CI follows (``prow/integ-suite-kind.sh`` ->
``common/scripts/kind_provisioner.sh``: create the clusters in parallel, read each node's address on the
``kind`` network, MetalLB one cluster at a time, routes between clusters of one network) and then Istio's
multi-cluster guides (plug-in CA -> install primaries -> east-west gateways and exposed services -> remote
clusters -> remote secrets -> wait until synced; those steps are the kube layer's, ``kube/istio_steps.py``,
shared with k3s). meshconf adds a kernel check for netem, image preloading, the
topology's link RTT (after the wait) and the probe workloads. ``meshconf plan`` prints it; ``KindProvider.up``
runs the same steps through the runner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.providers.kind import images as i
from conformance.providers.kind import links
from conformance.providers.kind import manifests as m
from conformance.providers.kind.addresses import DEFAULT_KIND_SUBNET, ClusterAddresses, cluster_addresses
from conformance.providers.kube.istio_steps import (
    SMOKE_NAMESPACE,
    IstioContext,
    east_west_gateways,
    install_primaries,
    install_remotes,
    plug_in_ca,
    remote_secrets,
    smoke_probes,
    wait_synced,
)
from conformance.providers.kube.steps import Command, Manifest, Step, Until
from conformance.topology import Cluster, Topology

__all__ = ["SMOKE_NAMESPACE", "PlanContext", "build_plan", "context_name", "delete_cluster", "kind_config_docs",
           "link_targets", "node_variable", "teardown", "variable"]

NETEM_HINT = ("the host kernel lacks a tc module meshconf needs to emulate the link between clusters (sch_netem, "
              "sch_prio, cls_u32): install the kernel's extra modules (e.g. `sudo apt-get install linux-modules-"
              "extra-$(uname -r)`), then `sudo modprobe sch_netem sch_prio cls_u32`; `meshconf doctor` checks them")


def context_name(cluster: str) -> str:
    """The kubeconfig context kind creates for a cluster."""
    return f"kind-{cluster}"


def node_variable(node: str) -> str:
    """The variable that holds a node container's address on the kind network."""
    return f"{node.upper().replace('-', '_')}_IP"


def variable(cluster: str) -> str:
    """The variable that holds a cluster's control-plane (API server) address on the kind network."""
    return node_variable(f"{cluster}-control-plane")


@dataclass
class PlanContext(IstioContext):
    """Everything a plan depends on. ``kind_subnet`` is assumed until read from docker at run time."""

    node_image: str = m.NODE_IMAGES[m.DEFAULT_KUBERNETES]
    kind_subnet: str = DEFAULT_KIND_SUBNET
    kind_subnet_known: bool = False
    shipped_configs: Path | None = None
    """``kind-configs/<topology>/`` when its files are used as they are."""
    addresses: dict[str, ClusterAddresses] = field(default_factory=dict)
    east_west_address_note = "pinned MetalLB address"

    def __post_init__(self) -> None:
        self.addresses = cluster_addresses(self.topology, self.kind_subnet)

    def install_overlay(self, cluster: Cluster) -> dict[str, Any]:
        return m.install_overlay(cluster, self.topology, self.addresses, self.revision, hub=self.hub,
                                 tag=self.istio_version)

    def east_west_gateway(self, cluster: Cluster) -> dict[str, Any]:
        return m.east_west_gateway(cluster, self.topology, self.addresses[cluster.name], self.revision, hub=self.hub,
                                   tag=self.istio_version)

    def api_server(self, cluster: str) -> str:
        """The control plane's address on the kind network (captured at run time) and kubeadm's port."""
        return f"https://${{{variable(cluster)}}}:6443"

    def context_name(self, cluster: str) -> str:
        return context_name(cluster)


def delete_cluster(cluster: str, kubeconfig: str) -> tuple[str, ...]:
    """``kind delete cluster`` with the run's own kubeconfig: without it kind edits the user's default one."""
    return ("kind", "delete", "cluster", "--name", cluster, "--kubeconfig", kubeconfig)


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
            cluster=cluster.name, attempts=3,
            before_retry=delete_cluster(cluster.name, ctx.kubeconfig)))
    return Step(0, "clusters", "Create the kind clusters", "each with its own pod and service subnets; "
                "kind writes their contexts into the run's own kubeconfig (never ~/.kube/config)", tuple(commands),
                tuple(manifests), parallel=True)


def node_addresses(ctx: PlanContext) -> Step:
    """kind_provisioner.sh reads each control plane's address with ``docker inspect``; meshconf reads every
    node's (routes and link faults need the workers' too). The host's kubeconfig stays on the 127.0.0.1 port
    kind publishes, which the host reaches on Linux and on Docker Desktop alike; the address on the kind
    network is what the other clusters use (remote secrets' ``--server``)."""
    commands = []
    for cluster in ctx.topology.clusters:
        nodes = m.node_names(cluster)
        commands.append(Command(("kind", "get", "nodes", "--name", cluster.name), cluster=cluster.name,
                                attempts=3, until=Until("nodes", nodes)))
        commands += [Command(("docker", "inspect", "-f", "{{.NetworkSettings.Networks.kind.IPAddress}}", node),
                             cluster=cluster.name, capture=node_variable(node)) for node in nodes]
    return Step(0, "addresses", "Read every node's address on the docker kind network",
                "routes, remote secrets and link delays use them; the host keeps kind's 127.0.0.1 kubeconfig",
                tuple(commands))


def kernel_check(ctx: PlanContext) -> Step:
    """netem is a kernel module of the host (node containers share its kernel); some cloud kernels lack it.
    A throwaway qdisc on a node's loopback loads it, or fails before anything else is installed."""
    commands: list[Command] = []
    if len(ctx.topology.clusters) > 1:
        node = m.node_names(ctx.topology.clusters[0])[0]
        cluster = ctx.topology.clusters[0].name
        probe = links.shape(["probe"], [0.0], [["127.0.0.2/32"]], device="lo")
        commands = [Command(("docker", "exec", node, *argv), cluster=cluster, ignore_failure=ignore,
                            hint=None if ignore else NETEM_HINT) for argv, ignore in probe]
        commands.append(Command(("docker", "exec", node, "tc", "qdisc", "del", "dev", "lo", "root"), cluster=cluster))
    return Step(0, "kernel", "Check that the kernel can delay packets (tc prio, netem, u32)",
                "the link between clusters is emulated with these; try them on a node's loopback and fail now, with "
                "the fix, if the kernel lacks one", tuple(commands))


def plan_images(ctx: PlanContext) -> list[i.Image]:
    """Every image the clusters run that does not come with kind: MetalLB, Istio, the probe, Locust."""
    return [*(i.Image(name) for name in i.METALLB_IMAGES), *i.istio_images(ctx.istio_version, ctx.image_hub),
            i.Image(ctx.probe_image), i.locust_image(ctx.image_hub, ctx.locust_dockerfile)]


def preload(images: Sequence[i.Image], clusters: Sequence[Cluster]) -> list[Command]:
    """Pull (or build) each image once on the host, unless it is there, then copy it into every cluster."""
    commands = []
    for image in images:
        have = ("docker", "image", "inspect", image.name)
        if image.dockerfile is None:
            commands.append(Command(("docker", "pull", image.name), attempts=3, skip_if=have))
        else:
            build_args = [arg for key, value in image.build_args for arg in ("--build-arg", f"{key}={value}")]
            commands.append(Command(("docker", "build", "-t", image.name, *build_args, "-f", str(image.dockerfile),
                                     str(image.dockerfile.parent)), skip_if=have))
    commands += [Command(("kind", "load", "docker-image", *(image.name for image in images), "--name", cluster.name),
                         cluster=cluster.name) for cluster in clusters]
    return commands


def load_images(ctx: PlanContext) -> Step:
    hub = f"the Docker Hub mirror {ctx.image_hub}" if ctx.image_hub else "Docker Hub"
    return Step(0, "images", "Pull every image once on the host and load it into every cluster",
                f"{hub} limits pulls; `kind load docker-image` copies each image into every node, so no node "
                "pulls it", tuple(preload(plan_images(ctx), ctx.topology.clusters)))


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
                # kind_provisioner.sh's connect_kind_clusters, on every node (not only the control plane):
                # the other cluster's control plane forwards to its workers over its own kindnet routes
                for node in m.node_names(here):
                    for subnet in (target.pod_subnet, target.service_subnet):
                        commands.append(Command(
                            ("docker", "exec", node, "ip", "route", "add", subnet, "via",
                             f"${{{variable(there.name)}}}"), cluster=here.name))
    return Step(0, "routes", "Route pod and service subnets between clusters on the same network",
                "clusters on different networks get no routes: their traffic must use east-west gateways",
                tuple(commands))


def link_targets(ctx: PlanContext, cluster: Cluster) -> list[str]:
    """What "traffic to ``cluster``" is on the kind network: its nodes, pod and service subnets, MetalLB slice."""
    addresses = ctx.addresses[cluster.name]
    nodes = [f"${{{node_variable(node)}}}/32" for node in m.node_names(cluster)]
    return [*nodes, addresses.pod_subnet, addresses.service_subnet, addresses.pool_cidr]


def link_rtt(ctx: PlanContext) -> Step:
    """The topology's ``linkRttMs`` between every pair of clusters: half of it on each side's nodes."""
    commands = []
    clusters = ctx.topology.clusters
    if len(clusters) > 1:
        for cluster in clusters:
            others = [c for c in clusters if c.name != cluster.name]
            names = [c.name for c in others]
            delays = [ctx.topology.link_rtt_ms / 2] * len(others)
            targets = [link_targets(ctx, c) for c in others]
            for node in m.node_names(cluster):
                commands += [Command(("docker", "exec", node, *argv), cluster=cluster.name, ignore_failure=ignore)
                             for argv, ignore in links.shape(names, delays, targets)]
    return Step(0, "links", f"Give the link between clusters its round trip ({ctx.topology.link_rtt_ms:g} ms)",
                "netem delays half the round trip on each side, on traffic to the other cluster's nodes, pods, "
                "services and load balancers; link faults change these delays", tuple(commands), parallel=True)


STEPS: tuple[Callable[[PlanContext], Step], ...] = (
    create_clusters, node_addresses, kernel_check, load_images, load_balancers, routes, plug_in_ca,
    install_primaries, east_west_gateways, install_remotes, remote_secrets, wait_synced, link_rtt, smoke_probes,
)


def teardown(ctx: PlanContext) -> Step:
    """What ``down()`` (``KindProvider.cleanup``) runs at the end of the run, or ``meshconf down`` later."""
    commands = [Command(delete_cluster(c.name, ctx.kubeconfig), cluster=c.name) for c in ctx.topology.clusters]
    commands.append(Command(("kind", "get", "clusters")))
    return Step(0, "teardown", "At the end (or `meshconf down RUN`): delete the clusters this run created",
                "never clusters it did not create (--reuse); the run's state is kept until `kind get clusters` "
                "no longer lists them, so `meshconf down` can retry", tuple(commands))


def build_plan(ctx: PlanContext) -> list[Step]:
    """Every step, numbered from 1. Steps with nothing to do for this topology are kept (printed as such)."""
    steps = []
    for number, make in enumerate(STEPS, start=1):
        step = make(ctx)
        steps.append(Step(number, step.key, step.title, step.why, step.commands, step.manifests, step.parallel))
    return steps
