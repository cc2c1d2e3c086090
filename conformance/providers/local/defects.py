"""Deliberate bugs the local mesh can be started with (``--mesh-defect NAME``), for self-validation.

A conformance check that cannot fail is worthless: for each defect the project's tests run the suite against
a mesh that has it and assert that the checks meant to catch it fail. Each defect is one line of meaning.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from conformance.errors import UsageError

__all__ = ["Defect", "parse_defects"]


class Defect(StrEnum):
    IGNORE_PEER_AUTHENTICATION = "ignore-peer-authentication"
    PERMISSIVE_AS_STRICT = "permissive-as-strict"
    WRONG_SPIFFE_IDENTITY = "wrong-spiffe-identity"
    NO_CLIENT_CERT_FORWARDING = "no-client-cert-forwarding"
    NO_CROSS_CLUSTER_ENDPOINTS = "no-cross-cluster-endpoints"
    ALWAYS_PLAINTEXT = "always-plaintext"
    NO_OUTLIER_DETECTION = "no-outlier-detection"
    NO_LOCALITY_PRIORITY = "no-locality-priority"
    RETRIES_DISABLED = "retries-disabled"
    PLAINTEXT_CROSS_NETWORK = "plaintext-cross-network"
    REGISTRY_ONLY_IGNORED = "registry-only-ignored"
    SLOW_SIDECAR = "slow-sidecar"
    NO_CERT_ROTATION = "no-cert-rotation"
    GATEWAY_ROUTES_EVERYTHING = "gateway-routes-everything"
    IGNORE_AUTHZ_DENY = "ignore-authz-deny"
    IGNORE_AUTHZ_ALLOW = "ignore-authz-allow"
    ALLOW_NOTHING_ALLOWS = "allow-nothing-allows"
    IGNORE_PRINCIPAL_RULES = "ignore-principal-rules"
    NO_CONNECTION_REUSE = "no-connection-reuse"
    ROTATION_DROPS_CONNECTIONS = "rotation-drops-connections"

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self]


DESCRIPTIONS: dict[Defect, str] = {
    Defect.IGNORE_PEER_AUTHENTICATION: "PeerAuthentication is ignored: every workload stays PERMISSIVE",
    Defect.PERMISSIVE_AS_STRICT: "PERMISSIVE is enforced as STRICT: plaintext callers are refused",
    Defect.WRONG_SPIFFE_IDENTITY: "workload certificates carry the namespace's default service account",
    Defect.NO_CLIENT_CERT_FORWARDING: "sidecars do not pass the peer identity to the app (no XFCC header)",
    Defect.NO_CROSS_CLUSTER_ENDPOINTS: "control planes only discover endpoints of their own cluster",
    Defect.ALWAYS_PLAINTEXT: "auto-mTLS never upgrades: sidecars call every endpoint in plaintext",
    Defect.NO_OUTLIER_DETECTION: "DestinationRule outlierDetection is ignored (and so is locality failover)",
    Defect.NO_LOCALITY_PRIORITY: "localityLbSetting is ignored: endpoints of every locality share one priority",
    Defect.RETRIES_DISABLED: "no route ever retries (neither VirtualService retries nor Istio's default)",
    Defect.PLAINTEXT_CROSS_NETWORK: "sidecars send cross-network traffic to east-west gateways in plaintext",
    Defect.REGISTRY_ONLY_IGNORED: "outboundTrafficPolicy REGISTRY_ONLY is ignored: unknown hosts are passed through",
    Defect.SLOW_SIDECAR: "every sidecar delays each inbound request by 20 ms",
    Defect.NO_CERT_ROTATION: "certificate rotation keeps serving the old certificate",
    Defect.GATEWAY_ROUTES_EVERYTHING: "ingress gateways route every host and path to the first declared route",
    Defect.IGNORE_AUTHZ_DENY: "DENY AuthorizationPolicies are ignored: nothing is denied by them",
    Defect.IGNORE_AUTHZ_ALLOW: "ALLOW AuthorizationPolicies are ignored: everything they do not name is allowed",
    Defect.ALLOW_NOTHING_ALLOWS: "an ALLOW policy without rules allows every request instead of none",
    Defect.IGNORE_PRINCIPAL_RULES: "from.source.principals match every caller, whatever its identity",
    Defect.NO_CONNECTION_REUSE: "proxies open a new upstream connection (TCP + mTLS handshakes) for every request",
    Defect.ROTATION_DROPS_CONNECTIONS: "certificate rotation restarts each rotated sidecar abruptly: calls in flight "
                                       "are reset and new ones refused until it is back",
}


def parse_defects(names: Iterable[str]) -> frozenset[Defect]:
    """Raise UsageError naming an unknown defect and listing the known ones."""
    found: set[Defect] = set()
    for name in names:
        try:
            found.add(Defect(name))
        except ValueError:
            known = ", ".join(d.value for d in Defect)
            raise UsageError(f"unknown --mesh-defect {name!r}; known defects: {known}") from None
    return frozenset(found)
