"""What the local mesh's translator implements, field by field.

Documents are first validated against Istio's schemas (an unknown field is a ManifestError). A field that
Istio defines but the translator does not implement is an UnsupportedError naming the field: the local
mesh never silently ignores config, because a check that passes on ignored config proves nothing.

The table is a tree of the supported fields: ``True`` = any value, a set = only these values, a
:class:`Pattern` = strings that match it, ``"*"`` = any map key, and a list's items are checked against the
tree of the list field. Some kinds also have admission checks that Istio's webhook makes and its CRD schema
cannot express (e.g. an AuthorizationPolicy's IP blocks); those run first and raise ManifestError.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conformance.errors import UnsupportedError
from conformance.istio import doc_ref
from conformance.meshconfig import validate_mesh_config
from conformance.providers.local.translate.admission import (
    validate_authorization_policy,
    validate_request_authentication,
)
from conformance.providers.local.translate.destination import validate_destination_rule
from conformance.providers.local.translate.mtls import validate_peer_authentication

__all__ = ["SUPPORTED", "SUPPORTED_MESH_CONFIG", "Pattern", "check_supported", "check_supported_mesh_config"]


@dataclass(frozen=True)
class Pattern:
    """A string field whose supported values fully match ``regex``; ``means`` names them in messages."""

    regex: str
    means: str


_LABELS = {"*": True}
_STRING_MATCH = {"exact": True, "prefix": True, "regex": True}
_PERCENT = {"value": True}
_TRAFFIC_POLICY = {
    "tls": {"mode": {"ISTIO_MUTUAL", "DISABLE"}},
    "loadBalancer": {
        "simple": {"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "UNSPECIFIED", "LEAST_CONN"},
        "localityLbSetting": {
            "enabled": True,
            "failover": {"from": True, "to": True},
            "failoverPriority": True,
            "distribute": {"from": True, "to": {"*": True}},
        },
    },
    "outlierDetection": {
        "consecutive5xxErrors": True, "consecutiveGatewayErrors": True, "interval": True,
        "baseEjectionTime": True, "maxEjectionPercent": True, "minHealthPercent": True,
    },
    "connectionPool": {
        "tcp": {"maxConnections": True, "connectTimeout": True},
        "http": {"http1MaxPendingRequests": True, "http2MaxRequests": True, "maxRequestsPerConnection": True,
                 "maxRetries": True},
    },
}
_SOURCE = dict.fromkeys(("principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks",
                         "remoteIpBlocks", "notRemoteIpBlocks", "requestPrincipals", "notRequestPrincipals",
                         "serviceAccounts", "notServiceAccounts", "trustDomains", "notTrustDomains"), True)
_OPERATION = dict.fromkeys(("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths", "ports", "notPorts"),
                           True)
_TARGET_REF = dict.fromkeys(("group", "kind", "name", "namespace"), True)
"""A policy with targetRef(s) attaches only to Gateway API gateways and waypoints, which the local mesh does not
run: like Istio's sidecars, it applies the policy to none of its workloads (policyattachment.go)."""
SUPPORTED: dict[str, dict[str, Any]] = {
    "PeerAuthentication": {
        "selector": {"matchLabels": _LABELS},
        "mtls": {"mode": True},
        "portLevelMtls": {"*": {"mode": True}},
    },
    "DestinationRule": {
        "host": True,
        "trafficPolicy": _TRAFFIC_POLICY,
        "subsets": {"name": True, "labels": _LABELS, "trafficPolicy": _TRAFFIC_POLICY},
    },
    "VirtualService": {
        "hosts": True,
        "gateways": True,
        "http": {
            "name": True,
            "match": {"name": True, "uri": _STRING_MATCH, "headers": {"*": _STRING_MATCH}, "method": _STRING_MATCH,
                      "port": True},
            "route": {"destination": {"host": True, "subset": True, "port": {"number": True}}, "weight": True},
            "timeout": True,
            "retries": {"attempts": True, "perTryTimeout": True, "retryOn": True, "retryRemoteLocalities": True},
            "fault": {"delay": {"fixedDelay": True, "percentage": _PERCENT},
                      "abort": {"httpStatus": True, "percentage": _PERCENT}},
        },
    },
    "ServiceEntry": {
        "hosts": True,
        "ports": {"number": True, "name": True, "protocol": {"HTTP"}},
        "location": True,
        "resolution": {"STATIC", "DNS"},
        "endpoints": {"address": True, "labels": _LABELS, "locality": True, "network": True},
    },
    "Sidecar": {
        "workloadSelector": {"labels": _LABELS},
        "outboundTrafficPolicy": {"mode": True},
    },
    "Gateway": {
        "selector": _LABELS,
        "servers": {"name": True, "port": {"number": True, "name": True, "protocol": {"HTTP"}}, "hosts": True},
    },
    # every field of Istio's AuthorizationPolicy; action CUSTOM (and its provider) is refused by admission.py
    "AuthorizationPolicy": {
        "selector": {"matchLabels": _LABELS},
        "targetRef": _TARGET_REF,
        "targetRefs": _TARGET_REF,
        "action": {"ALLOW", "DENY", "AUDIT"},
        "rules": {
            "from": {"source": _SOURCE},
            "to": {"operation": _OPERATION},
            "when": {"key": True, "values": True, "notValues": True},  # keys: admission.py
        },
    },
    # every field of Istio 1.28's RequestAuthentication (``presence``, newer, is refused by admission.py)
    "RequestAuthentication": {
        "selector": {"matchLabels": _LABELS},
        "targetRef": _TARGET_REF,
        "targetRefs": _TARGET_REF,
        "jwtRules": {
            **dict.fromkeys(("issuer", "audiences", "jwksUri", "jwks_uri", "jwks", "fromParams", "fromCookies",
                             "outputPayloadToHeader", "forwardOriginalToken", "spaceDelimitedClaims", "timeout"),
                            True),
            "fromHeaders": {"name": True, "prefix": True},
            "outputClaimToHeaders": {"header": True, "claim": True},
        },
    },
}
_ADMISSION: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "AuthorizationPolicy": validate_authorization_policy,
    "RequestAuthentication": validate_request_authentication,
    "DestinationRule": validate_destination_rule,
    "PeerAuthentication": validate_peer_authentication,
}


def check_supported(doc: Mapping[str, Any]) -> None:
    """Raise UnsupportedError if ``doc`` uses anything the local mesh cannot honour."""
    kind = str(doc.get("kind"))
    tree = SUPPORTED.get(kind)
    if tree is None:
        kinds = ", ".join(sorted(SUPPORTED))
        raise UnsupportedError(f"{doc_ref(doc)}: {kind} is supported by Istio, not by the local mesh "
                               f"(it implements {kinds})")
    admission = _ADMISSION.get(kind)
    if admission is not None:
        admission(doc)
    _walk(doc.get("spec") or {}, tree, "spec", doc_ref(doc))


SUPPORTED_MESH_CONFIG: dict[str, Any] = {
    "trustDomainAliases": True,
    "defaultConfig": {"gatewayTopology": {"numTrustedProxies": True}},
    "serviceSettings": {"hosts": True, "settings": {"clusterLocal": True}},
}
"""The MeshConfig fields the local mesh's control planes honour (``Provider.mesh_config``)."""


def check_supported_mesh_config(patch: Mapping[str, Any]) -> None:
    """Raise UsageError for a MeshConfig istiod would refuse, UnsupportedError for a field the local mesh does
    not implement."""
    validate_mesh_config(patch)
    _walk(patch, SUPPORTED_MESH_CONFIG, "meshConfig", "MeshConfig")


def _walk(value: Any, tree: Any, path: str, ref: str) -> None:
    if tree is True or value is None:  # None: a merge patch removing the field
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, tree, f"{path}[{i}]", ref)
        return
    if isinstance(tree, Pattern):
        if not isinstance(value, str) or not re.fullmatch(tree.regex, value):
            raise UnsupportedError(
                f"{ref}: {path}={value!r} is supported by Istio, not by the local mesh (it implements {tree.means})"
            )
        return
    if isinstance(tree, set):
        if value not in tree:
            raise UnsupportedError(
                f"{ref}: {path}={value!r} is supported by Istio, not by the local mesh "
                f"(it implements {', '.join(sorted(tree))})"
            )
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            sub = tree.get(key, tree.get("*"))
            if sub is None:
                raise UnsupportedError(f"{ref}: field {path}.{key} is supported by Istio, not by the local mesh")
            _walk(item, sub, f"{path}.{key}", ref)
