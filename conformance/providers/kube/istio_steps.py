"""Istio's multi-cluster install on any Kubernetes, as plan steps: what every installing provider (kind, k3s)
runs once its clusters can reach each other, in the order of Istio's multi-cluster guides: plug-in CA ->
install primaries -> east-west gateways and exposed services -> remote clusters -> remote secrets -> wait
until synced, and meshconf's smoke probes.

A step reads what it needs from an :class:`IstioContext` (the provider's plan context): the topology and
version, how to call kubectl and istioctl for a cluster, the IstioOperators with that provider's load-balancer
details, and the API server address the other clusters' istiod uses (remote secrets' ``--server``).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.certs import MeshCA
from conformance.provider import ProbeSpec
from conformance.providers.kube import images as i
from conformance.providers.kube import istio_manifests as m
from conformance.providers.kube.probes import probe_docs, probe_workload_name
from conformance.providers.kube.steps import Command, Manifest, Step, Until
from conformance.topology import Cluster, Role, Topology

__all__ = ["ISTIOD_WAIT", "SMOKE_NAMESPACE", "IstioContext", "east_west_gateways", "install_primaries",
           "install_remotes", "plug_in_ca", "remote_secrets", "smoke_probes", "wait_synced"]

SMOKE_NAMESPACE = "meshconf-smoke"
ISTIOD_WAIT = "300s"


@dataclass
class IstioContext(abc.ABC):
    """What the Istio steps need from a provider's plan context; kind's and k3s's plan contexts extend it with
    how their clusters are made. Commands reach a cluster through the run's own kubeconfig (``$RUN/kubeconfig``),
    never the user's."""

    topology: Topology
    istio_version: str
    ca: MeshCA
    probe_source: str
    istioctl: str = "istioctl"
    image_hub: str | None = None
    """A Docker Hub mirror (``--image-hub``); None: Docker Hub."""
    revision: str | None = None
    locust_dockerfile: Path = i.LOCUST_DOCKERFILE

    east_west_address_note = "its east-west gateway's address"
    """How a remote cluster knows its primary's east-west gateway address, for the plan's words."""

    @abc.abstractmethod
    def context_name(self, cluster: str) -> str:
        """The cluster's context in the run's kubeconfig."""

    @abc.abstractmethod
    def install_overlay(self, cluster: Cluster) -> dict[str, Any]:
        """The IstioOperator of ``cluster`` at the plan's version (and revision)."""

    @abc.abstractmethod
    def east_west_gateway(self, cluster: Cluster) -> dict[str, Any]:
        """The east-west gateway IstioOperator of ``cluster``, with the provider's load-balancer details."""

    @abc.abstractmethod
    def api_server(self, cluster: str) -> str:
        """``https://ADDRESS:PORT`` of ``cluster``'s API server as the other clusters reach it."""

    @property
    def hub(self) -> str:
        """The IstioOperator ``hub`` (the images the plan preloads)."""
        return i.istio_hub(self.image_hub)

    @property
    def probe_image(self) -> str:
        return i.probe_image(self.image_hub)

    @property
    def kubeconfig(self) -> str:
        return "$RUN/kubeconfig"

    def kubectl(self, cluster: str, *args: str) -> tuple[str, ...]:
        return ("kubectl", "--kubeconfig", self.kubeconfig, "--context", self.context_name(cluster), *args)

    def istioctl_cmd(self, cluster: str, *args: str) -> tuple[str, ...]:
        return (self.istioctl, *args, "--kubeconfig", self.kubeconfig, "--context", self.context_name(cluster))


def plug_in_ca(ctx: IstioContext) -> Step:
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


def _install(ctx: IstioContext, clusters: list[Cluster]) -> tuple[list[Command], list[Manifest]]:
    commands, manifests = [], []
    for cluster in clusters:
        overlay = Manifest(f"{cluster.name}/istio.yaml", (ctx.install_overlay(cluster),))
        manifests.append(overlay)
        commands.append(Command(ctx.istioctl_cmd(cluster.name, "install", "-y", "-f", overlay.shown_path),
                                cluster=cluster.name))
    return commands, manifests


def install_primaries(ctx: IstioContext) -> Step:
    commands, manifests = _install(ctx, list(ctx.topology.primaries))
    return Step(0, "install", f"Install Istio {ctx.istio_version} in every primary cluster",
                "meshID, clusterName and network per cluster; short workload cert TTL for the rotation check; "
                "DNS proxying so ServiceEntry hosts resolve",
                tuple(commands), tuple(manifests), parallel=True)


def _gateway(ctx: IstioContext, cluster: Cluster) -> tuple[list[Command], list[Manifest]]:
    gateway = Manifest(f"{cluster.name}/eastwest-gateway.yaml", (ctx.east_west_gateway(cluster),))
    commands = [
        Command(ctx.istioctl_cmd(cluster.name, "install", "-y", "-f", gateway.shown_path), cluster=cluster.name),
        Command(ctx.kubectl(cluster.name, "-n", "istio-system", "rollout", "status",
                            f"deployment/{m.EAST_WEST_GATEWAY}", f"--timeout={ISTIOD_WAIT}"), cluster=cluster.name),
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


def _gateways(ctx: IstioContext, clusters: Sequence[Cluster]) -> tuple[list[Command], list[Manifest]]:
    """Commands and manifests of the east-west gateway of each of ``clusters`` that needs one."""
    commands: list[Command] = []
    manifests: list[Manifest] = []
    for cluster in clusters:
        if m.needs_east_west_gateway(cluster, ctx.topology):
            more_commands, more_manifests = _gateway(ctx, cluster)
            commands += more_commands
            manifests += more_manifests
    return commands, manifests


def east_west_gateways(ctx: IstioContext) -> Step:
    commands, manifests = _gateways(ctx, ctx.topology.primaries)
    return Step(0, "east-west", "Install east-west gateways and expose services through them",
                "15443 AUTO_PASSTHROUGH for *.local across networks; istiod on 15012/15017 for remote clusters",
                tuple(commands), tuple(manifests), parallel=True)


def install_remotes(ctx: IstioContext) -> Step:
    remotes = [c for c in ctx.topology.clusters if c.role is Role.REMOTE]
    commands, manifests = _install(ctx, remotes)
    gateway_commands, gateway_manifests = _gateways(ctx, remotes)
    return Step(0, "remotes", "Install the remote profile in every remote cluster",
                f"remotePilotAddress = its primary's east-west gateway ({ctx.east_west_address_note})",
                tuple(commands + gateway_commands), tuple(manifests + gateway_manifests))


def remote_secrets(ctx: IstioContext) -> Step:
    commands = []
    for primary in ctx.topology.primaries:
        for other in ctx.topology.clusters:
            if other.name == primary.name:
                continue
            # the run's kubeconfig points at 127.0.0.1 (the host's view); istiod in the other cluster needs the
            # API server's address on the containers' network (istioctl/pkg/multicluster/remote_secret.go warns
            # about 127.0.0.1 and asks for --server on "Kubernetes in Docker")
            commands.append(Command(
                ctx.istioctl_cmd(other.name, "create-remote-secret", f"--name={other.name}",
                                 f"--server={ctx.api_server(other.name)}"),
                cluster=primary.name, pipe_to=ctx.kubectl(primary.name, "apply", "-f", "-")))
    return Step(0, "remote-secrets", "Give every control plane a remote secret for every other cluster",
                "istioctl create-remote-secret piped straight into kubectl apply: the credentials are never "
                "written or printed", tuple(commands))


def wait_synced(ctx: IstioContext) -> Step:
    commands = []
    names = ctx.topology.cluster_names
    for primary in ctx.topology.primaries:
        commands += [
            Command(ctx.kubectl(primary.name, "-n", "istio-system", "rollout", "status", "deployment/istiod",
                                f"--timeout={ISTIOD_WAIT}"), cluster=primary.name),
            Command(ctx.istioctl_cmd(primary.name, "remote-clusters"), cluster=primary.name, attempts=36,
                    until=Until("synced", names)),
        ]
    return Step(0, "wait", "Wait until every istiod is ready and sees every cluster",
                f"`istioctl remote-clusters` must list each of {', '.join(names)} as synced (remote clusters "
                "appear only once their secrets are read)", tuple(commands))


def smoke_probes(ctx: IstioContext) -> Step:
    commands, manifests = [], []
    for cluster in ctx.topology.clusters:
        spec = ProbeSpec(service="smoke", namespace=SMOKE_NAMESPACE, cluster=cluster.name)
        docs = probe_docs(spec, cluster, ctx.probe_source, image=ctx.probe_image)
        manifest = Manifest(f"{cluster.name}/smoke-probe.yaml", tuple(docs),
                            elide={"probe.py": f"<workloads/probe/probe.py, {len(ctx.probe_source.encode())} bytes>"})
        manifests.append(manifest)
        commands += [
            Command(ctx.kubectl(cluster.name, "apply", "-f", manifest.shown_path), cluster=cluster.name),
            Command(ctx.kubectl(cluster.name, "-n", SMOKE_NAMESPACE, "rollout", "status",
                                f"deployment/{probe_workload_name(spec)}", "--timeout=180s"), cluster=cluster.name),
        ]
    return Step(0, "probes", "Deploy a probe workload in every cluster (sidecar injected)",
                f"{ctx.probe_image} with probe.py from a ConfigMap; each check deploys its own the same way",
                tuple(commands), tuple(manifests), parallel=True)


