"""What the local mesh's control planes know: workloads (pods), services, and Istio config per cluster.

This is the state that Kubernetes API servers hold in a real mesh. The registry is shared by every cluster's
control plane the way remote secrets share endpoints in a multi-primary mesh; each cluster's Istio config
lives in that cluster's :class:`ConfigStore`.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from conformance.istio import doc_ref
from conformance.provider import ProbeSpec
from conformance.providers.local.addresses import PodAddresses
from conformance.topology import Cluster

__all__ = ["ROOT_NAMESPACE", "ConfigStore", "Registry", "Resource", "Service", "Workload"]

ROOT_NAMESPACE = "istio-system"
"""Istio's root namespace: policies here without a selector apply mesh-wide."""


@dataclass
class Workload:
    """One pod: a probe process, and (in the mesh) its sidecar."""

    name: str
    spec: ProbeSpec
    cluster: Cluster
    zone: str
    addresses: PodAddresses

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def labels(self) -> dict[str, str]:
        return self.spec.workload_labels

    @property
    def in_mesh(self) -> bool:
        return self.spec.in_mesh

    @property
    def service_account(self) -> str:
        return self.spec.account

    @property
    def locality(self) -> dict[str, str]:
        return {"region": self.cluster.region, "zone": self.zone}


@dataclass(frozen=True)
class Service:
    """A Kubernetes Service, merged across clusters by namespace sameness (same name + namespace)."""

    name: str
    namespace: str
    ports: tuple[int, ...]

    @property
    def host(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True)
class Resource:
    """An Istio document as stored by a cluster's API server; ``order`` stands in for creationTimestamp."""

    kind: str
    namespace: str
    name: str
    spec: Mapping[str, Any]
    order: int
    doc: Mapping[str, Any] = field(compare=False)

    @property
    def ref(self) -> str:
        return doc_ref(self.doc)

    @property
    def selector(self) -> Mapping[str, str] | None:
        """matchLabels of ``selector`` (PeerAuthentication, AuthorizationPolicy...), None if absent."""
        selector = self.spec.get("selector")
        if not selector:
            return None
        labels: Mapping[str, str] = selector.get("matchLabels") or {}
        return labels

    def selects(self, workload: Workload) -> bool:
        selector = self.selector
        return selector is not None and all(workload.labels.get(k) == v for k, v in selector.items())


_order = itertools.count(1)


class ConfigStore:
    """Istio config applied to one cluster."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str, str], Resource] = {}

    def put(self, doc: Mapping[str, Any]) -> bool:
        """Store (create or replace) a document; returns True if anything changed."""
        meta = doc["metadata"]
        key = (doc["kind"], meta["namespace"], meta["name"])
        old = self._items.get(key)
        spec = doc.get("spec") or {}
        if old is not None and old.spec == spec:
            return False
        order = old.order if old is not None else next(_order)
        self._items[key] = Resource(doc["kind"], meta["namespace"], meta["name"], spec, order, doc)
        return True

    def remove(self, doc: Mapping[str, Any]) -> bool:
        meta = doc["metadata"]
        return self._items.pop((doc["kind"], meta["namespace"], meta["name"]), None) is not None

    def remove_namespace(self, namespace: str) -> bool:
        doomed = [k for k in self._items if k[1] == namespace]
        for key in doomed:
            del self._items[key]
        return bool(doomed)

    def of_kind(self, kind: str, namespace: str | None = None) -> list[Resource]:
        """Resources of ``kind`` (in ``namespace`` if given), oldest first, as Istio orders conflicts."""
        found = [r for r in self._items.values() if r.kind == kind and (namespace is None or r.namespace == namespace)]
        return sorted(found, key=lambda r: r.order)

    def __iter__(self) -> Iterator[Resource]:
        return iter(sorted(self._items.values(), key=lambda r: r.order))


class Registry:
    """Every cluster's pods and services (the union of the clusters' API servers)."""

    def __init__(self) -> None:
        self._workloads: dict[str, Workload] = {}
        self._services: dict[tuple[str, str, str], tuple[int, ...]] = {}  # (cluster, ns, name) -> ports
        self.lock = threading.RLock()

    def add_service(self, cluster: str, namespace: str, name: str, ports: tuple[int, ...]) -> None:
        key = (cluster, namespace, name)
        self._services[key] = tuple(sorted(set(self._services.get(key, ()) + ports)))

    def add(self, workload: Workload) -> None:
        self._workloads[workload.name] = workload

    def remove(self, name: str) -> Workload | None:
        return self._workloads.pop(name, None)

    def remove_namespace(self, namespace: str) -> list[Workload]:
        gone = [w for w in self._workloads.values() if w.namespace == namespace]
        for workload in gone:
            del self._workloads[workload.name]
        for key in [k for k in self._services if k[1] == namespace]:
            del self._services[key]
        return gone

    def workloads(self, clusters: set[str] | None = None) -> list[Workload]:
        return [w for w in self._workloads.values() if clusters is None or w.cluster.name in clusters]

    def get(self, name: str) -> Workload | None:
        return self._workloads.get(name)

    def services(self, clusters: set[str] | None = None) -> list[Service]:
        """Services visible from ``clusters``, merged across clusters by namespace sameness."""
        merged: dict[tuple[str, str], set[int]] = {}
        for (cluster, namespace, name), ports in self._services.items():
            if clusters is None or cluster in clusters:
                merged.setdefault((namespace, name), set()).update(ports)
        return [Service(name, ns, tuple(sorted(ports))) for (ns, name), ports in sorted(merged.items())]

    def endpoints(self, service: Service, clusters: set[str] | None = None) -> list[Workload]:
        """Pods behind ``service`` in ``clusters`` (the service's selector is ``app=<name>``)."""
        return [
            w for w in self.workloads(clusters)
            if w.namespace == service.namespace and w.spec.service == service.name
        ]
