"""MeshConfig changes as JSON merge patches (RFC 7386), and the patches that undo them.

A check that needs a mesh-wide setting (``trustDomainAliases``, ``serviceSettings``...) changes the MeshConfig
of the control planes through the provider (``Provider.mesh_config``) and puts it back when it ends
(``Scenario.mesh_config``). Istio reads MeshConfig as YAML from the ``mesh`` key of the ``istio`` ConfigMap in
``istio-system`` (``istio-<revision>`` for a revision; pilot/pkg/bootstrap/mesh.go); a patch is a mapping in
the same camelCase form: a key set to a value replaces it, a mapping merges into a mapping, ``None`` removes
the key, and a list replaces the whole list.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from conformance.errors import UsageError

__all__ = ["ISTIO_NAMESPACE", "MESH_CONFIG_KEY", "merge_patch", "mesh_config_map", "undo_patch", "validate_mesh_config"]

ISTIO_NAMESPACE = "istio-system"
MESH_CONFIG_KEY = "mesh"
"""The ConfigMap key that holds MeshConfig (``kubemesh.MeshConfigKey``)."""


def mesh_config_map(revision: str | None) -> str:
    """The name of the ConfigMap istiod reads its MeshConfig from (``getMeshConfigMapName``)."""
    return "istio" if revision in (None, "", "default") else f"istio-{revision}"


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``target`` with ``patch`` merged in (RFC 7386); neither argument is changed."""
    _require_mapping(patch)
    merged = copy.deepcopy(dict(target))
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            base = merged.get(key)
            merged[key] = merge_patch(base if isinstance(base, Mapping) else {}, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def undo_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns ``merge_patch(target, patch)`` back into ``target``."""
    _require_mapping(patch)
    undo: dict[str, Any] = {}
    for key, value in patch.items():
        if key not in target:
            undo[key] = None
        elif isinstance(value, Mapping) and isinstance(target[key], Mapping):
            undo[key] = undo_patch(target[key], value)
        else:
            undo[key] = copy.deepcopy(target[key])
    return undo


def _require_mapping(patch: Any) -> None:
    if not isinstance(patch, Mapping):
        raise UsageError(f"a MeshConfig patch must be a mapping of MeshConfig fields, got {type(patch).__name__}")


def validate_mesh_config(config: Mapping[str, Any]) -> None:
    """Raise UsageError where istiod's validation would refuse ``config`` (a MeshConfig, or a patch of one),
    for the fields meshconf's checks set (pkg/config/validation/agent: ValidateMeshConfig)."""
    aliases = config.get("trustDomainAliases")
    if aliases is not None:
        if not isinstance(aliases, list):
            raise UsageError(f"MeshConfig trustDomainAliases must be a list of trust domains, got {aliases!r}")
        for i, alias in enumerate(aliases):
            if not _valid_trust_domain(alias):
                raise UsageError(f"MeshConfig trustDomainAliases[{i}]: trust domain {alias!r} is invalid "
                                 "(dot-separated DNS-1123 labels; istiod refuses it)")
    settings = config.get("serviceSettings")
    if settings is not None:
        if not isinstance(settings, list):
            raise UsageError(f"MeshConfig serviceSettings must be a list, got {settings!r}")
        for i, entry in enumerate(settings):
            hosts = entry.get("hosts") if isinstance(entry, Mapping) else None
            if not isinstance(hosts, list):
                raise UsageError(f"MeshConfig serviceSettings[{i}] needs a list of hosts, got {entry!r}")
            for host in hosts:
                if not _valid_wildcard_domain(host):
                    raise UsageError(f"MeshConfig serviceSettings[{i}], host {host!r}: not a domain name (a "
                                     "wildcard is allowed only as the whole first label; istiod refuses it)")
    topology = ((config.get("defaultConfig") or {}).get("gatewayTopology") or {})
    trusted = topology.get("numTrustedProxies")
    if trusted is not None and (isinstance(trusted, bool) or not isinstance(trusted, int) or trusted < 0):
        raise UsageError("MeshConfig defaultConfig.gatewayTopology.numTrustedProxies must be a whole number >= 0, "
                         f"got {trusted!r}")


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _valid_trust_domain(domain: Any) -> bool:
    """agent.ValidateTrustDomain: non-empty, dot-separated DNS-1123 labels (a trailing dot is allowed)."""
    if not isinstance(domain, str) or not domain:
        return False
    labels = domain.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels = labels[:-1]
    return all(_DNS_LABEL.fullmatch(label) for label in labels)


def _valid_wildcard_domain(domain: Any) -> bool:
    """agent.ValidateWildcardDomain: DNS-1123 labels, the first of which may be ``*`` (or start with ``*``)."""
    if not isinstance(domain, str) or not domain or len(domain) > 255:
        return False
    first, _, rest = domain.partition(".")
    if first != "*" and not (first.startswith("*") and _DNS_LABEL.fullmatch(first[1:])) \
            and not _DNS_LABEL.fullmatch(first):
        return False
    return not rest or all(_DNS_LABEL.fullmatch(label) for label in rest.rstrip(".").split("."))
