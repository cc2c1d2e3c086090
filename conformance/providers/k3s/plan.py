"""The k3s install plan: k3s clusters in Docker, then Istio's documented multi-cluster install on them.

Istio's "Install Multi-Primary / Primary-Remote (on different networks)" guides assume nothing about the
clusters beyond Kubernetes with LoadBalancer Services; this plan makes such clusters with k3s in Docker
(testcontainers), one server container per cluster and an agent per further zone, all on one docker network:

1. pull (or build) every image the mesh runs once on the host and save it under the run directory;
2. create the run's docker network with a /24 of its own (node addresses are pinned, ``addresses.py``);
3. start each cluster's nodes (``nodes.py``: pod/service subnets as kind's, ``--disable=traefik``, ServiceLB on);
4. merge each server's kubeconfig into the run's own, and wait until every node is Ready;
5. ``k3s ctr images import`` the saved images in every node, so no node pulls them;
6. route pod and service subnets between clusters of one network (clusters on different networks get none);

then the kube layer's Istio steps (``kube/istio_steps.py``, the same as kind's: plug-in CA, istioctl install,
east-west gateways and exposed services, remote profile, remote secrets, wait until synced) and the smoke
probes. Steps 1-4 are Docker API calls the provider makes through testcontainers: the plan prints each as the
docker command that does the same. ``meshconf plan --provider k3s`` prints it; ``K3sProvider.up`` runs it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conformance.providers.k3s.addresses import DEFAULT_SUBNET, ClusterAddresses, cluster_addresses
from conformance.providers.k3s.containers import image_file
from conformance.providers.k3s.nodes import IMAGES_MOUNT, KUBECONFIG_PATH, RUN_LABEL, Node, node_specs
from conformance.providers.kube import images as i
from conformance.providers.kube import istio_manifests as istio
from conformance.providers.kube.istio_steps import (
    IstioContext,
    east_west_gateways,
    install_primaries,
    install_remotes,
    plug_in_ca,
    remote_secrets,
    smoke_probes,
    wait_synced,
)
from conformance.providers.kube.steps import Command, Step
from conformance.topology import Cluster

__all__ = ["API_STEPS", "EAST_WEST_STATUS_PORT", "NETWORK", "PlanContext", "build_plan", "context_name",
           "plan_images", "teardown"]

NETWORK = "meshconf-k3s"
"""The run's docker network (one k3s run at a time per Docker host, as kind's clusters are one per name)."""
EAST_WEST_STATUS_PORT = 15022
"""The east-west gateway Service's status port on k3s. ServiceLB holds a LoadBalancer's ports on the node itself
(klipper-lb's host ports), and the ingress gateway's Service already has 15021 there: a second Service with
15021 would stay pending (klipper-lb's README, "If there are no free host ports, the service load balancer will
stay in pending"). The gateway still answers readiness on 15021 (its targetPort); nothing in the mesh calls the
Service's status port."""
RUN_NAME = "$RUN_NAME"
"""The run directory's name (``k3s-<id>``), which labels the run's containers and network."""
API_STEPS = frozenset({"images", "network", "clusters", "kubeconfig"})
"""Steps the provider runs as Docker API calls (testcontainers), not as commands."""
_API = "Docker API, through testcontainers"


def context_name(cluster: str) -> str:
    """The cluster's context in the run's kubeconfig."""
    return f"k3s-{cluster}"


@dataclass
class PlanContext(IstioContext):
    """Everything a plan depends on: the Istio steps' context, and the k3s nodes. ``subnet`` is assumed until
    ``up`` chose the network's."""

    subnet: str = DEFAULT_SUBNET
    subnet_known: bool = False
    east_west_address_note = "its server's address: ServiceLB gives a LoadBalancer Service its nodes' addresses"
    addresses: dict[str, ClusterAddresses] = field(default_factory=dict)
    nodes: dict[str, list[Node]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.addresses = cluster_addresses(self.topology, self.subnet)
        self.nodes = node_specs(self.topology, self.addresses)
        if self.image_hub:
            self.nodes = {c: [_on_hub(n, self.image_hub) for n in nodes] for c, nodes in self.nodes.items()}

    @property
    def images_dir(self) -> str:
        return "$RUN/images"

    def all_nodes(self) -> list[Node]:
        return [node for nodes in self.nodes.values() for node in nodes]

    def context_name(self, cluster: str) -> str:
        return context_name(cluster)

    def install_overlay(self, cluster: Cluster) -> dict[str, Any]:
        east_west = {name: a.east_west_address for name, a in self.addresses.items()}
        return istio.install_overlay(cluster, self.topology, east_west, self.revision, hub=self.hub,
                                     tag=self.istio_version)

    def east_west_gateway(self, cluster: Cluster) -> dict[str, Any]:
        return istio.east_west_gateway(cluster, self.topology, self.revision, hub=self.hub, tag=self.istio_version,
                                       status_port=EAST_WEST_STATUS_PORT)

    def api_server(self, cluster: str) -> str:
        """The server's pinned address on the run's network (also in its certificate: ``--tls-san``)."""
        return f"https://{self.addresses[cluster].server}:6443"


def _on_hub(node: Node, hub: str) -> Node:
    return Node(node.cluster, node.name, node.role, node.address, node.args, node.env, i.hub_image(node.image, hub))


def plan_images(ctx: PlanContext) -> list[i.Image]:
    """Every image the mesh runs that k3s does not bring: Istio, the probe, Locust."""
    return [*i.istio_images(ctx.istio_version, ctx.image_hub), i.Image(ctx.probe_image),
            i.locust_image(ctx.image_hub, ctx.locust_dockerfile)]


# -- the steps ----------------------------------------------------------------------------------------------


def save_images(ctx: PlanContext) -> Step:
    commands = []
    for image in plan_images(ctx):
        if image.dockerfile is None:
            commands.append(Command(("docker", "pull", image.name), api=f"{_API}; unless the host has it"))
        else:
            build_args = [arg for key, value in image.build_args for arg in ("--build-arg", f"{key}={value}")]
            commands.append(Command(("docker", "build", "-t", image.name, *build_args, "-f", str(image.dockerfile),
                                     str(image.dockerfile.parent)), api=f"{_API}; unless the host has it"))
        commands.append(Command(("docker", "save", image.name, "-o", f"{ctx.images_dir}/{image_file(image.name)}"),
                                api=_API))
    hub = f"the Docker Hub mirror {ctx.image_hub}" if ctx.image_hub else "Docker Hub"
    return Step(0, "images", "Pull every image once on the host and save it in the run directory",
                f"{hub} limits pulls; every node mounts {ctx.images_dir} read-only and imports them (the preload "
                "step), so no node pulls them. k3s's own images (pause, CoreDNS, klipper-lb) are pulled by each node",
                tuple(commands))


def create_network(ctx: PlanContext) -> Step:
    gateway = str(ipaddress.ip_network(ctx.subnet)[1])
    where = "" if ctx.subnet_known else (" (assumed: at run time, the first /24 from 172.30.0.0/24 on that no docker "
                                         "network overlaps)")
    return Step(0, "network", "Create the run's docker network",
                f"subnet {ctx.subnet}{where}, so every node's address is pinned; labelled with testcontainers' session "
                "(Ryuk removes it if meshconf dies) and the run",
                (Command(("docker", "network", "create", "--driver", "bridge", "--subnet", ctx.subnet, "--gateway",
                          gateway, "--label", f"{RUN_LABEL}={RUN_NAME}", NETWORK), api=f"{_API} (Network)"),))


def start_clusters(ctx: PlanContext) -> Step:
    commands = []
    for node in ctx.all_nodes():
        how = ("K3SContainer; returns once k3s logs \"Node controller sync successful\"" if node.role == "server"
               else "DockerContainer; joins its server")
        commands.append(Command(node.docker_run(NETWORK, ctx.images_dir, RUN_NAME), cluster=node.cluster,
                                api=f"{_API} ({how})"))
    return Step(0, "clusters", "Start the k3s nodes: a server per cluster, an agent per further zone",
                "pod and service subnets per cluster as kind's; traefik off (Istio's gateways are the ingress); "
                "ServiceLB on: LoadBalancer Services get their nodes' addresses; ${K3S_TOKEN} is made for the run "
                "and never printed", tuple(commands), parallel=True)


def merge_kubeconfigs(ctx: PlanContext) -> Step:
    commands = [Command(("cat", KUBECONFIG_PATH), cluster=cluster.name, container=ctx.nodes[cluster.name][0].name,
                        api=f"{_API}; merged into {ctx.kubeconfig} (0600) as context {context_name(cluster.name)}, "
                            f"server {ctx.api_server(cluster.name)}; never printed")
                for cluster in ctx.topology.clusters]
    return Step(0, "kubeconfig", "Merge every server's kubeconfig into the run's own",
                "one kubeconfig the host and the remote secrets use, at each server's address on the network "
                "(never ~/.kube/config)", tuple(commands))


def nodes_ready(ctx: PlanContext) -> Step:
    commands = [Command(ctx.kubectl(c.name, "wait", "--for=condition=Ready", "node", "--all", "--timeout=180s"),
                        cluster=c.name, attempts=3) for c in ctx.topology.clusters]
    return Step(0, "nodes", "Wait until every node of every cluster is Ready",
                "agents join their server after it started", tuple(commands), parallel=True)


def import_images(ctx: PlanContext) -> Step:
    files = [image_file(image.name) for image in plan_images(ctx)]
    commands = [Command(("k3s", "ctr", "images", "import", f"{IMAGES_MOUNT}/{name}"), cluster=node.cluster,
                        container=node.name) for node in ctx.all_nodes() for name in files]
    return Step(0, "preload", "Import the saved images into every node's containerd",
                "k3s's air-gap way (`k3s ctr images import`); the manifests' IfNotPresent then finds them",
                tuple(commands), parallel=True)


def routes(ctx: PlanContext) -> Step:
    commands = []
    clusters = ctx.topology.clusters
    for index, one in enumerate(clusters):
        for other in clusters[index + 1:]:
            if one.network != other.network:
                continue
            for here, there in ((one, other), (other, one)):
                target = ctx.addresses[there.name]
                # on every node: pods of `here` reach `there`'s pods and services through its server, whose
                # own flannel and kube-proxy take them on (kind_provisioner.sh's connect_kind_clusters, on k3s)
                for node in ctx.nodes[here.name]:
                    for subnet in (target.pod_subnet, target.service_subnet):
                        commands.append(Command(("ip", "route", "add", subnet, "via", target.server),
                                                cluster=here.name, container=node.name))
    return Step(0, "routes", "Route pod and service subnets between clusters on the same network",
                "clusters on different networks get no routes: their traffic must use east-west gateways",
                tuple(commands))


STEPS: tuple[Callable[[PlanContext], Step], ...] = (
    save_images, create_network, start_clusters, merge_kubeconfigs, nodes_ready, import_images, routes,
    plug_in_ca, install_primaries, east_west_gateways, install_remotes, remote_secrets, wait_synced, smoke_probes,
)


def teardown(ctx: PlanContext) -> Step:
    """What ``down()`` (``K3sProvider.cleanup``) removes at the end of the run, or ``meshconf down`` later."""
    names = [node.name for node in ctx.all_nodes()]
    return Step(0, "teardown", "At the end (or `meshconf down RUN`): remove the run's containers and network",
                "only what the run recorded; a run killed before it could (its mesh not kept) is removed by Ryuk",
                (Command(("docker", "rm", "--force", "--volumes", *names), api=_API),
                 Command(("docker", "network", "rm", NETWORK), api=_API)))


def build_plan(ctx: PlanContext) -> list[Step]:
    """Every step, numbered from 1. Steps with nothing to do for this topology are kept (printed as such)."""
    steps = []
    for number, make in enumerate(STEPS, start=1):
        step = make(ctx)
        steps.append(Step(number, step.key, step.title, step.why, step.commands, step.manifests, step.parallel))
    return steps
