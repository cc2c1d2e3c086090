"""The canary upgrade by revision (Istio's "Canary Upgrades" guide), as kind's steps after the V1 install.

0. Preload V2's images (pilot, proxyv2) into every cluster, as the install preloaded V1's (images.py): the
   provider's ``prepare_upgrade``, before the clock starts.
1. Install V2's control plane beside V1 as revision ``<major>-<minor>-<patch>`` (V2's istioctl).
2. Upgrade each east-west gateway in place to that revision.
3. Point the ``default`` revision tag at V2: namespaces labelled ``istio-injection=enabled`` now get V2 proxies.
4. Restart the smoke workloads (``SMOKE_NAMESPACE``) onto V2.
Steps 1-4 are the provider's ``upgrade_mesh``; ``conformance.upgrade`` measures traffic and held connections
meanwhile, and restarts its own probes afterwards. V1's control plane is left running until the kind clusters
are deleted: removing it is not part of the gate. Topologies with remote clusters are refused: their injection
and discovery point at the V1 istiod service.
"""

from __future__ import annotations

from conformance.errors import UsageError
from conformance.providers.kind import images as i
from conformance.providers.kind import manifests as m
from conformance.providers.kind.plan import SMOKE_NAMESPACE, PlanContext, preload
from conformance.providers.kind.steps import Command, Manifest, Step
from conformance.topology import Role
from conformance.upgrade import HELD_CONNECTIONS, UPGRADE_NAMESPACE

__all__ = ["revision_name", "upgrade_steps"]


def revision_name(version: str) -> str:
    """``1.28.0`` -> ``1-28-0`` (a revision is a DNS label)."""
    return version.replace(".", "-").lower()


def upgrade_steps(ctx: PlanContext, to_version: str, istioctl_to: str, first_number: int) -> list[Step]:
    """The canary steps, numbered from ``first_number``; ``ctx`` is the V1 plan's context."""
    if any(c.role is Role.REMOTE for c in ctx.topology.clusters):
        raise UsageError(f"meshconf upgrade does not handle remote clusters yet (topology {ctx.topology.name}); "
                         "use multi-primary or multi-network")
    revision = revision_name(to_version)
    primaries = list(ctx.topology.primaries)

    def istioctl(cluster: str, *args: str) -> tuple[str, ...]:
        return (istioctl_to, *args, "--kubeconfig", ctx.kubeconfig, "--context", f"kind-{cluster}")

    install, overlays = [], []
    for cluster in primaries:
        overlay = Manifest(f"{cluster.name}/istio-{revision}.yaml",
                           (m.install_overlay(cluster, ctx.topology, ctx.addresses, revision, hub=ctx.hub,
                                              tag=to_version),))
        overlays.append(overlay)
        install += [
            Command(istioctl(cluster.name, "install", "-y", "-f", overlay.shown_path), cluster=cluster.name),
            Command(ctx.kubectl(cluster.name, "-n", "istio-system", "rollout", "status",
                                f"deployment/istiod-{revision}", "--timeout=300s"), cluster=cluster.name),
        ]
    gateways, gateway_manifests = [], []
    for cluster in primaries:
        if not m.needs_east_west_gateway(cluster, ctx.topology):
            continue
        gateway = Manifest(f"{cluster.name}/eastwest-gateway-{revision}.yaml",
                           (m.east_west_gateway(cluster, ctx.topology, ctx.addresses[cluster.name], revision,
                                                hub=ctx.hub, tag=to_version),))
        gateway_manifests.append(gateway)
        gateways += [
            Command(istioctl(cluster.name, "install", "-y", "-f", gateway.shown_path), cluster=cluster.name),
            Command(ctx.kubectl(cluster.name, "-n", "istio-system", "rollout", "status",
                                f"deployment/{m.EAST_WEST_GATEWAY}", "--timeout=300s"), cluster=cluster.name),
        ]
    tags = [Command(istioctl(c.name, "tag", "set", "default", f"--revision={revision}", "--overwrite", "-y"),
                    cluster=c.name) for c in primaries]
    restarts = []
    for cluster in ctx.topology.clusters:
        restarts += [
            Command(ctx.kubectl(cluster.name, "-n", SMOKE_NAMESPACE, "rollout", "restart", "deployment"),
                    cluster=cluster.name),
            Command(ctx.kubectl(cluster.name, "-n", SMOKE_NAMESPACE, "rollout", "status", "deployment",
                                "--timeout=300s"), cluster=cluster.name),
        ]
    steps = [
        Step(0, "preload", f"Pull Istio {to_version}'s images once and load them into every cluster",
             "as the install did for the first version: no node pulls from the registry",
             tuple(preload(i.istio_images(to_version, ctx.image_hub), ctx.topology.clusters))),
        Step(0, "canary", f"Install Istio {to_version} beside {ctx.istio_version} as revision {revision}",
             "two control planes side by side; proxies stay on the old one until restarted",
             tuple(install), tuple(overlays), parallel=True),
        Step(0, "gateways", f"Upgrade the east-west gateways in place to revision {revision}",
             "gateways are upgraded in place, as Istio's guide recommends", tuple(gateways), tuple(gateway_manifests)),
        Step(0, "tag", f"Point the default revision tag at {revision}",
             "istio-injection=enabled namespaces now get the new proxies", tuple(tags)),
        Step(0, "restart", f"Restart the probe workloads onto {to_version} under continuous traffic",
             f"meshconf counts errors and measures p99 of the traffic flowing meanwhile; the {HELD_CONNECTIONS} "
             f"connections held since the canary step (workloads in {UPGRADE_NAMESPACE}, not restarted) must "
             "survive", tuple(restarts)),
    ]
    return [Step(first_number + n, s.key, s.title, s.why, s.commands, s.manifests, s.parallel)
            for n, s in enumerate(steps)]
