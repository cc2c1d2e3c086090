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
    PORT_LEVEL_MTLS_IGNORED = "port-level-mtls-ignored"
    DENY_AFTER_ALLOW = "deny-after-allow"
    PATH_PREFIX_MATCHES_BARE_PREFIX = "path-prefix-matches-bare-prefix"
    FAILBACK_SLOW = "failback-slow"
    CONNECT_TIMEOUT_IGNORED = "connect-timeout-ignored"
    SIDECAR_OVER_OVERHEAD_BUDGET = "sidecar-over-overhead-budget"
    SIDECAR_OVER_IN_CLUSTER_BUDGET = "sidecar-over-in-cluster-budget"
    DISTRIBUTE_IGNORED = "distribute-ignored"
    FAILOVER_PRIORITY_IGNORED = "failover-priority-ignored"
    PLAINTEXT_XFCC_TRUSTED = "plaintext-xfcc-trusted"
    ROTATION_DROPS_CONNECTIONS = "rotation-drops-connections"
    JWT_SIGNATURE_UNCHECKED = "jwt-signature-unchecked"
    MISSING_TOKEN_DENIED = "missing-token-denied"
    DRY_RUN_ENFORCED = "dry-run-enforced"
    TRUST_DOMAIN_ALIASES_IGNORED = "trust-domain-aliases-ignored"
    CLAIMS_LIST_MATCHED_AS_STRING = "claims-list-matched-as-string"
    SLOW_CONFIG_PUSH = "slow-config-push"
    REMOTE_ENDPOINTS_LOST_ON_SECRET_ROTATION = "remote-endpoints-lost-on-secret-rotation"
    BAD_SECRET_BLOCKS_RECOVERY = "bad-secret-blocks-recovery"
    PUSH_BEFORE_REMOTE_SYNC = "push-before-remote-sync"
    EMPTY_PUSH_ON_CONTROL_PLANE_STOP = "empty-push-on-control-plane-stop"
    RESETS_CONNECTIONS_ON_UNRELATED_PUSH = "resets-connections-on-unrelated-push"
    DROPS_OLD_ROOT_EARLY = "drops-old-root-early"
    CLUSTER_LOCAL_IGNORED = "cluster-local-ignored"
    LOCALITY_FAILOVER_IGNORED = "locality-failover-ignored"

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
    Defect.PORT_LEVEL_MTLS_IGNORED: "PeerAuthentication portLevelMtls is ignored: every port gets the workload's mode",
    Defect.DENY_AFTER_ALLOW: "DENY is evaluated after ALLOW: a request an ALLOW policy admits is never denied",
    Defect.PATH_PREFIX_MATCHES_BARE_PREFIX: "an authorization path rule /p/* also matches the bare prefix /p",
    Defect.FAILBACK_SLOW: "outlier detection ejects a host for three times its baseEjectionTime",
    Defect.CONNECT_TIMEOUT_IGNORED: "connectionPool.tcp.connectTimeout is ignored: connects wait Istio's default 10 s",
    Defect.SIDECAR_OVER_OVERHEAD_BUDGET: "every sidecar delays each inbound request by 6 ms (just over the 5 ms "
                                         "overhead budget)",
    Defect.SIDECAR_OVER_IN_CLUSTER_BUDGET: "every sidecar delays each inbound request by 12 ms (just over the 10 ms "
                                           "in-cluster p99 budget)",
    Defect.DISTRIBUTE_IGNORED: "localityLbSetting.distribute is ignored: no locality weights are set",
    Defect.FAILOVER_PRIORITY_IGNORED: "localityLbSetting.failoverPriority is ignored: priorities follow locality only",
    Defect.PLAINTEXT_XFCC_TRUSTED: "sidecars pass a plaintext caller's own x-forwarded-client-cert to the app (a "
                                   "forged identity)",
    Defect.ROTATION_DROPS_CONNECTIONS: "certificate rotation restarts each rotated sidecar abruptly: calls in flight "
                                       "are reset and new ones refused until it is back",
    Defect.JWT_SIGNATURE_UNCHECKED: "a JWT that fails verification (bad signature, expired, unknown issuer) is let "
                                    "through without its claims instead of answered 401 (allow_missing_or_failed)",
    Defect.MISSING_TOKEN_DENIED: "RequestAuthentication requires a token: a request without one gets 401",
    Defect.DRY_RUN_ENFORCED: "AuthorizationPolicies annotated istio.io/dry-run are enforced instead of only counted",
    Defect.TRUST_DOMAIN_ALIASES_IGNORED: "MeshConfig trustDomainAliases are ignored when principals are matched",
    Defect.CLAIMS_LIST_MATCHED_AS_STRING: "request.auth.claims (and audiences, presenter) match only a string claim, "
                                          "never an element of a list-valued claim",
    Defect.SLOW_CONFIG_PUSH: "the control plane holds every config push back 2 s longer than the authz "
                             "propagation budget",
    Defect.REMOTE_ENDPOINTS_LOST_ON_SECRET_ROTATION: "after a remote secret is rotated, the old remote registry's "
                                                     "cleanup removes that cluster's endpoints (those it had then) "
                                                     "until the control plane restarts (istio#61043)",
    Defect.BAD_SECRET_BLOCKS_RECOVERY: "once a remote secret failed to sync, later secrets for that cluster are "
                                       "ignored until the control plane restarts (istio#58047)",
    Defect.PUSH_BEFORE_REMOTE_SYNC: "a started or restarted control plane serves its proxies before it syncs its "
                                    "remote clusters: its first push has only its own cluster's endpoints",
    Defect.EMPTY_PUSH_ON_CONTROL_PLANE_STOP: "a stopping control plane pushes an empty configuration (no listeners, "
                                             "no clusters) to its proxies before it closes their streams",
    Defect.RESETS_CONNECTIONS_ON_UNRELATED_PUSH: "every push changes every listener (a per-push value in it), so "
                                                 "Envoy drains and closes open connections on any config change",
    Defect.DROPS_OLD_ROOT_EARLY: "from the second step of a root migration the control planes distribute only the "
                                 "newest root, while workloads still hold certificates of the old one",
    Defect.CLUSTER_LOCAL_IGNORED: "MeshConfig serviceSettings clusterLocal is ignored: such hosts get every "
                                  "cluster's endpoints",
    Defect.LOCALITY_FAILOVER_IGNORED: "localityLbSetting.failover from/to is ignored: every other region gets the "
                                      "same priority, so traffic fails over to all of them, not the one named",
}


def parse_defects(names: Iterable[str]) -> frozenset[Defect]:
    """Raise UsageError naming an unknown defect and listing the known ones."""
    found: set[Defect] = set()
    for name in names:
        try:
            found.add(Defect(name))
        except ValueError:
            known = ", ".join(d.value for d in Defect)
            raise UsageError(f"unknown --defect {name!r}; known defects: {known}") from None
    return frozenset(found)
