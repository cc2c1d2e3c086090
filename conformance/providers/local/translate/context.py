"""What the translator needs to build one proxy's config: the control plane's view and the proxy itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conformance.providers.local.defects import Defect
from conformance.providers.local.model import ConfigStore, Registry, Workload
from conformance.topology import Cluster

__all__ = ["MeshView", "SourceFn", "normalize_host"]

SourceFn = Callable[[str, str], dict[str, Any]]
"""(xDS type, resource name) -> the ConfigSource that points a proxy at that resource's file."""


@dataclass(frozen=True)
class MeshView:
    """One control plane's view of the mesh."""

    cluster: Cluster
    """The cluster whose control plane this is."""
    store: ConfigStore
    registry: Registry
    visible: frozenset[str]
    """Clusters whose endpoints this control plane discovers."""
    trust_domain: str
    defects: frozenset[Defect]

    def endpoints_of(self, namespace: str, service: str) -> list[Workload]:
        return [
            w for w in self.registry.workloads(set(self.visible))
            if w.namespace == namespace and w.spec.service == service
        ]


def normalize_host(host: str, namespace: str) -> str:
    """Istio resolves a short host name in a rule relative to the rule's namespace."""
    if "." in host or host == "*":
        return host
    return f"{host}.{namespace}.svc.cluster.local"
