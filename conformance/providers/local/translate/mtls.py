"""PeerAuthentication and auto-mTLS, with Istio's precedence rules.

Istio's order for the mode a workload's port accepts (``ComposePeerAuthentication`` in
``pilot/pkg/security/authn/policy_applier.go``): the workload policy's ``portLevelMtls`` for the port, then
that policy's ``mtls``, then the namespace policy, then the mesh policy (root namespace), then PERMISSIVE;
the first that is not UNSET wins. When several policies share a level, the oldest wins. A policy whose
selector has no labels (``selector: {}`` or ``matchLabels: {}``) is a namespace (or, in the root namespace,
mesh) policy; a policy with a selector in the root namespace is no level at all: Istio ignores it.
Istio's validation refuses ``portLevelMtls`` on a namespace or mesh policy (``ValidatePeerAuthentication``
in ``pkg/config/validation/validation.go``, and the CRD's "portLevelMtls requires selector" rule).

Auto-mTLS: a client sidecar sends mTLS to an endpoint that has a sidecar, unless the endpoint's effective
mode for that port is DISABLE (then plaintext), as istiod marks endpoints for the ``tlsMode`` transport
socket match.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from conformance.errors import ManifestError
from conformance.istio import doc_ref
from conformance.providers.local.defects import Defect
from conformance.providers.local.model import ROOT_NAMESPACE, ConfigStore, Resource, Workload

__all__ = ["MtlsMode", "endpoint_uses_mtls", "peer_mtls_mode", "validate_peer_authentication"]


class MtlsMode(StrEnum):
    STRICT = "STRICT"
    PERMISSIVE = "PERMISSIVE"
    DISABLE = "DISABLE"


def _mode_of(section: object) -> str:
    if isinstance(section, dict):
        return str(section.get("mode") or "UNSET")
    return "UNSET"


def _first_without_selector(policies: list[Resource]) -> Resource | None:
    return next((p for p in policies if not p.selector), None)


def peer_mtls_mode(store: ConfigStore, workload: Workload, port: int, defects: frozenset[Defect]) -> MtlsMode:
    """The mTLS mode ``workload`` accepts on ``port``."""
    if Defect.IGNORE_PEER_AUTHENTICATION in defects:
        return MtlsMode.PERMISSIVE
    in_namespace = store.of_kind("PeerAuthentication", workload.namespace)
    workload_policy = (next((p for p in in_namespace if p.selector and p.selects(workload)), None)
                       if workload.namespace != ROOT_NAMESPACE else None)
    namespace_policy = _first_without_selector(in_namespace)
    mesh_policy = (
        _first_without_selector(store.of_kind("PeerAuthentication", ROOT_NAMESPACE))
        if workload.namespace != ROOT_NAMESPACE else None
    )
    chain: list[str] = []
    if workload_policy is not None:
        port_level = workload_policy.spec.get("portLevelMtls") or {}
        if Defect.PORT_LEVEL_MTLS_IGNORED not in defects:
            chain.append(_mode_of(port_level.get(str(port)) or port_level.get(port)))
        chain.append(_mode_of(workload_policy.spec.get("mtls")))
    for policy in (namespace_policy, mesh_policy):
        if policy is not None:
            chain.append(_mode_of(policy.spec.get("mtls")))
    mode = next((MtlsMode(m) for m in chain if m != "UNSET"), MtlsMode.PERMISSIVE)
    if mode is MtlsMode.PERMISSIVE and Defect.PERMISSIVE_AS_STRICT in defects:
        return MtlsMode.STRICT
    return mode


def endpoint_uses_mtls(store: ConfigStore, endpoint: Workload, port: int, defects: frozenset[Defect]) -> bool:
    """Auto-mTLS: should a client sidecar upgrade calls to this endpoint's port to mTLS?"""
    if not endpoint.in_mesh or Defect.ALWAYS_PLAINTEXT in defects:
        return False
    return peer_mtls_mode(store, endpoint, port, defects) is not MtlsMode.DISABLE


def validate_peer_authentication(doc: Mapping[str, Any]) -> None:
    """Raise ManifestError where Istio's validation refuses a PeerAuthentication, naming the field."""
    spec = doc.get("spec") or {}
    ref = doc_ref(doc)
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    port_level = spec.get("portLevelMtls")
    if port_level is not None and not port_level:
        raise ManifestError(f"{ref}: spec.portLevelMtls: port level mTLS, if defined, must have at least one "
                            "element (Istio's validation refuses it)")
    if port_level and not labels:
        raise ManifestError(f"{ref}: spec.portLevelMtls: mesh/namespace peer authentication cannot have port "
                            "level mTLS; add a selector with matchLabels (Istio's validation refuses it)")
    for port in port_level or {}:
        if not str(port).isdigit() or not 0 < int(port) <= 65535:
            raise ManifestError(f"{ref}: spec.portLevelMtls[{port!r}]: port must be in range 1..65535 "
                                "(Istio's validation refuses it)")
    for key, value in labels.items():
        if not key:
            raise ManifestError(f"{ref}: spec.selector.matchLabels: empty key is not supported in selector "
                                "(Istio's validation refuses it)")
        if "*" in str(key) or "*" in str(value):
            raise ManifestError(f"{ref}: spec.selector.matchLabels: wildcard is not supported in selector: "
                                f"{key}={value} (Istio's validation refuses it)")
