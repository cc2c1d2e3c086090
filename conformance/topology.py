"""Topologies: which clusters a mesh has, on which networks, in which localities, and who configures whom.

A topology is data shared by every provider: ``conformance/topologies/<name>.yaml`` (or a path to a file of
the same shape). The local provider builds it from Envoy processes, the kind provider from kind clusters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from conformance.errors import UsageError

__all__ = ["Cluster", "Role", "Topology", "available_topologies", "load_topology"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class Role(StrEnum):
    PRIMARY = "primary"
    """Runs its own control plane (istiod)."""
    REMOTE = "remote"
    """Gets its proxies' config from a primary's control plane; config applied to it has no effect."""


@dataclass(frozen=True)
class Cluster:
    name: str
    network: str
    region: str
    zones: tuple[str, ...]
    role: Role = Role.PRIMARY
    primary: str | None = None
    """For a remote cluster: the primary whose control plane configures it."""

    @property
    def zone(self) -> str:
        """The zone workloads land in unless a check asks for another."""
        return self.zones[0]

    @property
    def config_cluster(self) -> str:
        """The cluster whose control plane holds this cluster's mesh config."""
        return self.primary or self.name


@dataclass(frozen=True)
class Topology:
    name: str
    clusters: tuple[Cluster, ...]
    mesh_id: str = "mesh1"
    trust_domain: str = "cluster.local"
    link_rtt_ms: float = 0.0
    """Emulated round-trip time between clusters in different regions (0: none)."""

    def cluster(self, name: str) -> Cluster:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise UsageError(
            f"topology {self.name} has no cluster {name!r}; its clusters: {', '.join(self.cluster_names)}"
        )

    @property
    def cluster_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.clusters)

    @property
    def primaries(self) -> tuple[Cluster, ...]:
        return tuple(c for c in self.clusters if c.role is Role.PRIMARY)

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.network for c in self.clusters))

    @property
    def multi_network(self) -> bool:
        return len(self.networks) > 1


def available_topologies() -> list[str]:
    """Names of the topologies that ship with meshconf."""
    folder = resources.files("conformance") / "topologies"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_topology(name_or_path: str) -> Topology:
    """Load a shipped topology by name, or a topology file by path. Raises UsageError if it is invalid."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UsageError(f"topology file {path} does not exist")
        text = path.read_text()
    else:
        shipped = resources.files("conformance") / "topologies" / f"{name_or_path}.yaml"
        if not shipped.is_file():
            raise UsageError(
                f"unknown topology {name_or_path!r}; choose one of: {', '.join(available_topologies())} "
                "or give a path to a topology YAML file"
            )
        text = shipped.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"topology {name_or_path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_topology(data, source=name_or_path)


def parse_topology(data: Any, source: str = "<topology>") -> Topology:
    if not isinstance(data, dict) or not isinstance(data.get("clusters"), list) or not data["clusters"]:
        raise UsageError(f"topology {source} must be a mapping with a non-empty 'clusters' list")
    allowed = {"name", "meshID", "trustDomain", "linkRttMs", "clusters"}
    extra = sorted(set(data) - allowed)
    if extra:
        raise UsageError(f"topology {source}: unknown field {extra[0]!r} (allowed: {', '.join(sorted(allowed))})")
    clusters = tuple(_parse_cluster(item, source) for item in data["clusters"])
    names = [c.name for c in clusters]
    if len(set(names)) != len(names):
        raise UsageError(f"topology {source}: cluster names must be unique, got {names}")
    for cluster in clusters:
        if cluster.role is Role.REMOTE:
            if cluster.primary not in names:
                raise UsageError(f"topology {source}: remote cluster {cluster.name} needs 'primary:' naming a cluster")
            if next(c for c in clusters if c.name == cluster.primary).role is not Role.PRIMARY:
                raise UsageError(f"topology {source}: {cluster.name}'s primary {cluster.primary} is not a primary")
    if not any(c.role is Role.PRIMARY for c in clusters):
        raise UsageError(f"topology {source}: at least one cluster must be a primary")
    try:
        rtt = float(data.get("linkRttMs", 0))
    except (TypeError, ValueError):
        raise UsageError(f"topology {source}: linkRttMs must be a number of milliseconds") from None
    return Topology(
        name=str(data.get("name") or Path(source).stem),
        clusters=clusters,
        mesh_id=str(data.get("meshID", "mesh1")),
        trust_domain=str(data.get("trustDomain", "cluster.local")),
        link_rtt_ms=rtt,
    )


def _parse_cluster(item: Any, source: str) -> Cluster:
    if not isinstance(item, dict):
        raise UsageError(f"topology {source}: each cluster must be a mapping, got {item!r}")
    allowed = {"name", "network", "region", "zones", "role", "primary"}
    extra = sorted(set(item) - allowed)
    if extra:
        raise UsageError(
            f"topology {source}: cluster field {extra[0]!r} is unknown (allowed: {', '.join(sorted(allowed))})"
        )
    missing = [k for k in ("name", "network", "region", "zones") if not item.get(k)]
    if missing:
        raise UsageError(f"topology {source}: cluster {item.get('name', '?')} lacks {', '.join(missing)}")
    for key in ("name", "network", "region"):
        if not _DNS_LABEL.match(str(item[key])):
            raise UsageError(f"topology {source}: {key} {item[key]!r} must be a lower-case DNS label")
    zones = item["zones"]
    if isinstance(zones, str) or not isinstance(zones, list) or not all(_DNS_LABEL.match(str(z)) for z in zones):
        raise UsageError(f"topology {source}: zones of {item['name']} must be a list of DNS labels")
    try:
        role = Role(item.get("role", "primary"))
    except ValueError:
        raise UsageError(f"topology {source}: role of {item['name']} must be primary or remote") from None
    return Cluster(
        name=str(item["name"]),
        network=str(item["network"]),
        region=str(item["region"]),
        zones=tuple(str(z) for z in zones),
        role=role,
        primary=item.get("primary"),
    )
