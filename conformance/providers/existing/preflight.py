"""Preflight for existing clusters: each context reachable, Istio installed (and which version), istiod ready,
and every control plane holding a remote secret for every other cluster. Each failure is one line with a fix.

The Istio version is read the way ``istioctl version`` reports the control plane's: the tag of istiod's
``discovery`` container image.
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance.errors import EnvironmentBroken
from conformance.providers.kube.api import KubeAPI
from conformance.topology import Role, Topology

__all__ = ["ClusterReport", "istiod_version", "preflight"]

REMOTE_SECRET_LABEL = "istio/multiCluster=true"


@dataclass(frozen=True)
class ClusterReport:
    cluster: str
    context: str
    kubernetes_version: str
    istio_version: str | None
    """None for a remote cluster (no istiod of its own)."""


def istiod_version(image: str) -> str:
    """``docker.io/istio/pilot:1.28.0-distroless`` -> ``1.28.0``."""
    tag = image.rsplit("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
    return tag.split("-")[0] if tag else "unknown"


def preflight(topology: Topology, apis: dict[str, KubeAPI]) -> list[ClusterReport]:
    """Check every cluster; raise EnvironmentBroken naming the first problem and how to fix it."""
    reports = []
    for cluster in topology.clusters:
        api = apis[cluster.name]
        kubernetes = api.server_version()
        version = None
        if cluster.role is Role.PRIMARY:
            deployment = api.deployment("istio-system", "istiod")
            if deployment is None:
                raise EnvironmentBroken(f"context {api.context}: Istio is not installed (no deployment istiod in "
                                        "istio-system); install it, or pick the context that runs it")
            containers = deployment.spec.template.spec.containers
            image = next((c.image for c in containers if c.name == "discovery"), containers[0].image)
            version = istiod_version(str(image))
            if not (deployment.status.ready_replicas or 0):
                raise EnvironmentBroken(f"context {api.context}: istiod is not ready (0 ready replicas); "
                                        "see `kubectl -n istio-system describe deployment istiod`")
            secrets = set(api.secret_names("istio-system", REMOTE_SECRET_LABEL))
            for other in topology.clusters:
                if other.name != cluster.name and f"istio-remote-secret-{other.name}" not in secrets:
                    raise EnvironmentBroken(
                        f"context {api.context}: istiod has no remote secret for cluster {other.name}; run "
                        f"`istioctl create-remote-secret --context={apis[other.name].context} --name={other.name} "
                        f"| kubectl apply --context={api.context} -f -`")
        reports.append(ClusterReport(cluster.name, api.context, kubernetes, version))
    return reports
