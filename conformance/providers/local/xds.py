"""A proxy's config as xDS resources: split as istiod serves them, converted to Envoy's protobuf types.

The translator describes a proxy as an :class:`XdsSnapshot` in Envoy's JSON form, with route configs inline
in listeners and load assignments inline in clusters. istiod serves them as separate resources, and so does
the local control plane (:mod:`.ads`):

- RDS: every HTTP connection manager of an outbound or gateway listener refers to its route config by name
  (``rds``); inbound listeners keep theirs inline, as Istio's do (pilot/pkg/networking/core builds the
  inbound HTTP chains with an inline ``route_config``).
- EDS: every STATIC cluster with a load assignment, except the inbound ones, becomes an EDS cluster whose
  ``service_name`` is its own name (Istio's outbound clusters; pilot/pkg/networking/core/cluster_builder.go).
- SDS: the workload's secrets; the translator already refers to them through the config source it is given
  (:data:`ADS_SOURCE`).

Each resource is converted once into a ``google.protobuf.Any`` (``json_format`` and Envoy's API types from
the ``xds-protos`` package) and identified by a digest of its JSON, so unchanged resources are neither
converted nor sent again.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory

from conformance.errors import ProviderError
from conformance.providers.local.envoy import XdsSnapshot

__all__ = [
    "ADS_SOURCE",
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "PUSH_ORDER",
    "ROUTE",
    "SECRET",
    "WILDCARD",
    "Converter",
    "ProxyResources",
    "Resource",
    "ads_source",
    "short",
    "split",
]

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
"""Istio's push order (pilot/pkg/xds/ads.go ``PushOrder``): clusters and endpoints before the listeners that
use them, routes after their listeners."""
WILDCARD = frozenset({CLUSTER, LISTENER})
"""Types whose every response holds all resources (state of the world); the others are requested by name."""
ADS_SOURCE: dict[str, Any] = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
"""The config source of every dynamic resource: the ADS stream. Istio sets no initial fetch timeout."""
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def ads_source(_kind: str = "", _name: str = "") -> dict[str, Any]:
    """The translator's ``SourceFn``: every resource comes over the ADS stream."""
    return dict(ADS_SOURCE)


def short(type_url: str) -> str:
    """``CDS``, ``EDS``, ``LDS``, ``RDS``, ``SDS`` for a type URL (as Envoy's and Istio's logs name them)."""
    return {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS", SECRET: "SDS"}.get(type_url, type_url)


@dataclass(frozen=True)
class Resource:
    """One xDS resource in Envoy's JSON form, and the digest that identifies its content."""

    name: str
    body: Mapping[str, Any]
    digest: str


@dataclass
class ProxyResources:
    """Everything one proxy should have, by type, and the names its listeners and clusters refer to."""

    by_type: dict[str, dict[str, Resource]] = field(default_factory=lambda: {t: {} for t in PUSH_ORDER})
    references: dict[str, set[str]] = field(default_factory=lambda: {ENDPOINT: set(), ROUTE: set(), SECRET: set()})
    """EDS, RDS and SDS names that CDS and LDS resources refer to: what Envoy will subscribe to."""

    def digests(self, type_url: str) -> dict[str, str]:
        return {name: r.digest for name, r in self.by_type.get(type_url, {}).items()}

    def listen_addresses(self) -> list[tuple[str, int]]:
        """Every address a listener binds (where the proxy must accept connections once it has its config)."""
        out = []
        for listener in self.by_type[LISTENER].values():
            for address in [listener.body["address"],
                            *(a["address"] for a in listener.body.get("additional_addresses", []))]:
                socket = address["socket_address"]
                out.append((str(socket["address"]), int(socket["port_value"])))
        return out


def _digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def split(snapshot: XdsSnapshot) -> ProxyResources:
    """Split a translated snapshot into CDS, EDS, LDS, RDS and SDS resources (see the module docstring).

    Raises ProviderError if two route configs of one proxy share a name but differ (a translator bug).
    """
    out = ProxyResources()
    for translated in snapshot.clusters:
        cluster, assignment = _split_cluster(translated)
        _add(out, CLUSTER, cluster)
        if assignment is not None:
            _add(out, ENDPOINT, assignment, name=str(assignment["cluster_name"]))
            out.references[ENDPOINT].add(str(assignment["cluster_name"]))
        for socket in _transport_sockets(cluster):
            out.references[SECRET] |= set(_secret_names(socket))
    for built in snapshot.listeners:
        listener, routes = _split_listener(built)
        _add(out, LISTENER, listener)
        for route in routes:
            existing = out.by_type[ROUTE].get(str(route["name"]))
            if existing is not None and existing.digest != _digest(route):
                raise ProviderError(f"two different route configs named {route['name']!r} in one proxy")
            _add(out, ROUTE, route)
            out.references[ROUTE].add(str(route["name"]))
        for chain in listener.get("filter_chains", []):
            for socket in _transport_sockets(chain):
                out.references[SECRET] |= set(_secret_names(socket))
    for name, secret in snapshot.secrets.items():
        _add(out, SECRET, secret, name=name)
    return out


def _add(out: ProxyResources, type_url: str, body: Mapping[str, Any], name: str | None = None) -> None:
    key = name if name is not None else str(body["name"])
    out.by_type[type_url][key] = Resource(key, body, _digest(body))


def _split_cluster(cluster: Mapping[str, Any]) -> tuple[Mapping[str, Any], dict[str, Any] | None]:
    name = str(cluster["name"])
    if cluster.get("type", "STATIC") != "STATIC" or "load_assignment" not in cluster or name.startswith("inbound|"):
        return cluster, None
    eds = {k: v for k, v in cluster.items() if k not in ("load_assignment", "type")}
    eds["type"] = "EDS"
    eds["eds_cluster_config"] = {"eds_config": dict(ADS_SOURCE), "service_name": name}
    return eds, {**cluster["load_assignment"], "cluster_name": name}


def _split_listener(listener: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[dict[str, Any]]]:
    if listener.get("traffic_direction") == "INBOUND":
        return listener, []
    routes: list[dict[str, Any]] = []
    chains = []
    for chain in listener.get("filter_chains", []):
        filters = []
        for network_filter in chain.get("filters", []):
            config = network_filter.get("typed_config") or {}
            if config.get("@type") == _HCM and "route_config" in config:
                route = config["route_config"]
                routes.append(route)
                config = {k: v for k, v in config.items() if k != "route_config"}
                config["rds"] = {"route_config_name": route["name"], "config_source": dict(ADS_SOURCE)}
                network_filter = {**network_filter, "typed_config": config}
            filters.append(network_filter)
        chains.append({**chain, "filters": filters})
    return {**listener, "filter_chains": chains}, routes


def _transport_sockets(holder: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """A cluster's or filter chain's transport sockets: where SDS secrets are referred to."""
    if "transport_socket" in holder:
        yield holder["transport_socket"]
    for match in holder.get("transport_socket_matches", []):
        yield match["transport_socket"]


def _secret_names(body: Any) -> Iterator[str]:
    """Names of the SDS secrets a resource refers to (any ``{"name": ..., "sds_config": ...}``)."""
    if isinstance(body, Mapping):
        if "sds_config" in body and "name" in body:
            yield str(body["name"])
        for value in body.values():
            yield from _secret_names(value)
    elif isinstance(body, list):
        for item in body:
            yield from _secret_names(item)


class Converter:
    """JSON resources -> ``google.protobuf.Any``, cached by digest.

    A type named by an ``@type`` is looked up in protobuf's default pool; if it is not there yet, every
    generated module of its package (from ``xds-protos``) is imported first, so the translator can use any
    Envoy extension without this module listing it.
    """

    MAX_CACHED = 20000

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], any_pb2.Any] = {}
        self._packages: set[str] = set()

    def to_any(self, type_url: str, resource: Resource) -> any_pb2.Any:
        key = (type_url, resource.digest)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= self.MAX_CACHED:
                self._cache.clear()
            found = self._cache[key] = self._convert(type_url, resource)
        return found

    def _convert(self, type_url: str, resource: Resource) -> any_pb2.Any:
        for name in {type_url, *_type_urls(resource.body)}:
            self._ensure(name.rpartition("/")[2])
        message = self.message_class(type_url.rpartition("/")[2])()
        try:
            json_format.ParseDict(dict(resource.body), message)
        except json_format.ParseError as exc:
            raise ProviderError(f"the local control plane cannot encode {short(type_url)} resource "
                                f"{resource.name!r}: {exc}") from None
        packed = any_pb2.Any()
        packed.Pack(message)
        return packed

    def message_class(self, full_name: str) -> Any:
        self._ensure(full_name)
        return message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(full_name))

    def _ensure(self, full_name: str) -> None:
        pool = descriptor_pool.Default()
        try:
            pool.FindMessageTypeByName(full_name)
            return
        except KeyError:
            pass
        package = full_name.rpartition(".")[0]
        if package in self._packages:
            raise ProviderError(f"no protobuf type {full_name} in the installed xds-protos")
        self._packages.add(package)
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise ProviderError(f"no protobuf package {package} (for {full_name}) in the installed xds-protos; "
                                "reinstall meshconf's dependencies") from None
        for info in pkgutil.iter_modules(module.__path__):
            if info.name.endswith("_pb2"):
                importlib.import_module(f"{package}.{info.name}")
        try:
            pool.FindMessageTypeByName(full_name)
        except KeyError:
            raise ProviderError(f"no protobuf type {full_name} in the installed xds-protos") from None


def _type_urls(body: Any) -> Iterator[str]:
    if isinstance(body, Mapping):
        found = body.get("@type")
        if isinstance(found, str):
            yield found
        for value in body.values():
            yield from _type_urls(value)
    elif isinstance(body, list):
        for item in body:
            yield from _type_urls(item)
