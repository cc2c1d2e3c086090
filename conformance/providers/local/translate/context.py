"""What the translator needs to build one proxy's config: the control plane's view and the proxy itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from conformance.providers.local.defects import Defect
from conformance.providers.local.model import ConfigStore, Registry, Service, Workload
from conformance.providers.local.translate.clusterlocal import ClusterLocalHosts
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
    """Clusters whose services and endpoints this control plane discovers: its own, and those whose remote
    secret gave it a synced registry (:mod:`conformance.providers.local.remotes`)."""
    trust_domain: str
    defects: frozenset[Defect]
    trust_root: bytes = b""
    """The mesh's root certificate (PEM) that every proxy trusts."""
    east_west: Mapping[str, str] = field(default_factory=dict)
    """Cluster -> address of its east-west gateway (multi-network meshes only)."""
    links: Callable[[str, str, str, int], tuple[str, int]] | None = None
    """(from cluster, to cluster, address, port) -> where to connect: a relay on the link between them."""
    jwks: Callable[[str, str, float], str | None] | None = None
    """(issuer, jwksUri, timeout) -> the JWKS this control plane fetched, or None if it could not."""
    mesh_config: Mapping[str, Any] = field(default_factory=dict)
    """This control plane's MeshConfig (camelCase, as in the ``istio`` ConfigMap); empty means Istio's
    defaults."""
    hidden: frozenset[str] = frozenset()
    """Pods of visible clusters whose endpoints this control plane lost (the remote-endpoints-lost-on-secret-
    rotation defect); their services stay."""

    def services(self) -> list[Service]:
        """The Kubernetes services of every visible cluster, merged by namespace sameness."""
        return self.registry.services(set(self.visible))

    def members(self, service: Service) -> list[Workload]:
        """The pods behind ``service`` this control plane has endpoints for."""
        return [w for w in self.registry.endpoints(service, set(self.visible)) if w.name not in self.hidden]

    def cluster_local(self, host: str) -> bool:
        """MeshConfig ``serviceSettings`` makes ``host`` cluster-local (:mod:`.clusterlocal`)."""
        return ClusterLocalHosts.of(self.mesh_config).is_cluster_local(host)

    @property
    def trust_domains(self) -> tuple[str, ...]:
        """The mesh's trust domain, then its ``trustDomainAliases`` (trustdomain.NewBundle)."""
        aliases = [str(a) for a in self.mesh_config.get("trustDomainAliases") or []]
        return (self.trust_domain, *aliases)

    def service_ports(self, host: str) -> tuple[int, ...]:
        """The ports of a host: a Kubernetes service's, or a ServiceEntry's."""
        for service in self.services():
            if service.host == host:
                return service.ports
        for entry in self.store.of_kind("ServiceEntry"):
            if host in (normalize_host(str(h), entry.namespace) for h in entry.spec.get("hosts") or []):
                return tuple(int(p["number"]) for p in entry.spec.get("ports") or [])
        return ()

    def reach(self, from_cluster: str, to_cluster: str, address: str, port: int) -> tuple[str, int]:
        """Where a proxy in ``from_cluster`` connects to reach ``address:port`` in ``to_cluster``."""
        if from_cluster == to_cluster or self.links is None:
            return address, port
        return self.links(from_cluster, to_cluster, address, port)

    def endpoints_of(self, namespace: str, service: str) -> list[Workload]:
        return [
            w for w in self.registry.workloads(set(self.visible))
            if w.namespace == namespace and w.spec.service == service and w.name not in self.hidden
        ]


def normalize_host(host: str, namespace: str) -> str:
    """Istio resolves a short host name in a rule relative to the rule's namespace."""
    if "." in host or host == "*":
        return host
    return f"{host}.{namespace}.svc.cluster.local"
