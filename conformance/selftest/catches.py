"""CATCHES: which checks catch which local-mesh defect, and on which expectation.

One row per self-validation run: the local mesh started with ``defect`` on ``topology`` (plus ``args``, more
``meshconf run`` flags, which may never change a budget, timeout or load setting: self-validation runs at the
shipped settings), and the checks that must fail on it, each with the ``expect_*`` that must decide it: the
expectation that names the property the check is for. A check failing on a precondition (its starting
state, ``Scenario.baseline``) or on another expectation is no catch. Other checks may fail too: defects are
not surgical, and only the claimed checks are run.

The table is data, one place for ``meshconf selftest``, the project's tests and the self-validation
benchmark; every defect of the local mesh and every check of the catalogue appears in it (a test says so).
The expectation of each check was read from the reports of runs at the shipped settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["CATCHES", "Catch"]


@dataclass(frozen=True)
class Catch:
    """A defect, on a topology, and the checks (check id -> deciding ``expect_*``) that must fail on it.

    An expectation of None accepts any but a precondition, and the result says which decided: a way to find
    it for a new row; the shipped table names every one (a test says so)."""

    defect: str
    checks: Mapping[str, str | None] = field(hash=False)
    topology: str = "multi-primary"
    args: tuple[str, ...] = ()
    """More ``meshconf run`` flags for this run; never ``--budget``, ``--timeout``, ``--load`` or ``--profile``."""


CATCHES: tuple[Catch, ...] = (
    Catch("ignore-peer-authentication", {
        "mtls-strict-rejects-plaintext": "expect_all_refused",
        "mtls-mesh-wide-strict": "expect_all_refused",
        "mtls-workload-overrides-namespace": "expect_all_refused",
        "mtls-disable-plaintext": "expect_all_unavailable",
    }),
    Catch("permissive-as-strict", {
        "mtls-permissive-accepts-both": "expect_no_peer_identity",
        "mtls-workload-overrides-namespace": "expect_all_ok",
    }),
    Catch("wrong-spiffe-identity", {
        "mtls-strict-peer-identity": "expect_peer_identity",
        "mtls-cross-cluster-identity": "expect_peer_identity",
        "mtls-certificate-chain": "expect_workload_certificate",
    }),
    Catch("no-client-cert-forwarding", {
        "mtls-strict-peer-identity": "expect_peer_identity",
        "mtls-permissive-accepts-both": "expect_peer_identity",
        "ingress-to-mesh-mtls": "expect_peer_identity",
    }),
    Catch("no-cross-cluster-endpoints", {
        "mtls-cross-cluster-identity": "expect_peer_identity",
        "failover-cross-cluster-discovery": "expect_answered_by",
        "failover-reaches-all-clusters": "expect_reached_clusters",
        "failover-on-workload-loss": "expect_failover",
        "failover-on-endpoint-failure": "expect_failover",
    }),
    Catch("always-plaintext", {
        "mtls-strict-peer-identity": "expect_peer_identity",
        "ingress-to-mesh-mtls": "expect_peer_identity",
    }),
    # it also drops locality failover (Istio needs outlier detection for it), so the failover checks that
    # start from "local calls stay local" fail a precondition with it: no catch
    Catch("no-outlier-detection", {
        "failover-locality-preferred": "expect_share",
    }),
    # calls spread over both clusters: a quarter or more cross the link, so the locality-preferred run's p90 is
    # the link's latency (its p50 may still save)
    Catch("no-locality-priority", {
        "failover-locality-preferred": "expect_share",
        "latency-locality-saves-rtt": "expect_latency_saving",
    }),
    # local calls spread over both clusters: those sent to cluster2 fail while its gateway is down (retries off)
    # until outlier detection ejects it, after 3 (consecutiveGatewayErrors)
    Catch("no-locality-priority", {
        "failover-east-west-gateway-loss": "expect_no_failed_calls",
    }, topology="multi-network"),
    Catch("retries-disabled", {
        "failover-retries-hide-failure": "expect_no_failed_calls",
    }),
    Catch("plaintext-cross-network", {
        "mtls-cross-cluster-identity": "expect_peer_identity",
    }, topology="multi-network"),
    Catch("registry-only-ignored", {
        "egress-registry-only-blocks-unknown": "expect_all_blocked",
    }),
    Catch("no-cert-rotation", {
        "mtls-rotation-zero-errors": "expect_new_certificate",
    }),
    Catch("rotation-drops-connections", {
        "mtls-rotation-zero-errors": "expect_no_failed_calls",
    }),
    Catch("gateway-routes-everything", {
        "ingress-only-declared-routes": "expect_all_status",
    }),
    Catch("ignore-authz-deny", {
        "authz-deny-path-method": "expect_all_forbidden",
        "authz-deny-overrides-allow": "expect_all_forbidden",
        "authz-propagation-time": "expect_all_forbidden",
    }),
    Catch("ignore-authz-allow", {
        "authz-allow-nothing-denies-all": "expect_all_forbidden",
        "authz-allow-principal": "expect_all_forbidden",
        "authz-allow-namespace": "expect_all_forbidden",
        "authz-header-condition": "expect_all_forbidden",
        "authz-cross-cluster-principal": "expect_all_forbidden",
        "authz-plaintext-has-no-principal": "expect_all_forbidden",
        "authz-require-jwt": "expect_all_forbidden",
        "authz-jwt-claim-condition": "expect_all_forbidden",
        "authz-service-account-field": "expect_all_forbidden",
    }),
    Catch("allow-nothing-allows", {
        "authz-allow-nothing-denies-all": "expect_all_forbidden",
    }),
    Catch("ignore-principal-rules", {
        "authz-allow-principal": "expect_all_forbidden",
        "authz-cross-cluster-principal": "expect_all_forbidden",
        "authz-plaintext-has-no-principal": "expect_all_forbidden",
    }),
    Catch("slow-sidecar", {
        "latency-in-cluster-budget": "expect_latency_within",
        "latency-mesh-overhead": "expect_overhead_within",
        "latency-ingress-budget": "expect_latency_within",
    }),
    # every cross-cluster call pays TCP + mTLS handshakes across the 25 ms link: p50 60-77 ms, over 50 ms
    Catch("no-connection-reuse", {
        "latency-cross-cluster-budget": "expect_latency_within",
        "latency-during-failover": "expect_latency_within",
    }),
    Catch("port-level-mtls-ignored", {
        "mtls-workload-overrides-namespace": "expect_all_ok",
    }),
    Catch("deny-after-allow", {
        "authz-deny-overrides-allow": "expect_all_forbidden",
    }),
    Catch("path-prefix-matches-bare-prefix", {
        "authz-deny-path-method": "expect_all_ok",
    }),
    Catch("failback-slow", {
        "failover-failback": "expect_failover",
    }),
    # a partition drops SYNs: without the DestinationRule's 500 ms connectTimeout a call hangs
    Catch("connect-timeout-ignored", {
        "failover-partition-keeps-local-traffic": "expect_fails_fast",
    }),
    Catch("sidecar-over-overhead-budget", {
        "latency-mesh-overhead": "expect_overhead_within",
    }),
    Catch("sidecar-over-in-cluster-budget", {
        "latency-in-cluster-budget": "expect_latency_within",
    }),
    Catch("distribute-ignored", {
        "failover-locality-distribute": "expect_share",
    }),
    Catch("failover-priority-ignored", {
        "failover-priority-labels": "expect_answered_by_version",
    }),
    Catch("plaintext-xfcc-trusted", {
        "mtls-permissive-accepts-both": "expect_no_peer_identity",
    }),
    # at the ingress gateway a failed token passes jwt_authn, then 403
    Catch("jwt-signature-unchecked", {
        "authn-invalid-jwt-rejected": "expect_all_unauthenticated",
        "authn-jwt-at-ingress-cross-cluster": "expect_all_unauthenticated",
    }),
    # no token: 401 instead of an answer, or 401 instead of 403
    Catch("missing-token-denied", {
        "authn-invalid-jwt-rejected": "expect_all_ok",
        "authz-require-jwt": "expect_all_forbidden",
        "authn-jwt-at-ingress-cross-cluster": "expect_all_forbidden",
    }),
    Catch("dry-run-enforced", {
        "authz-dry-run-does-not-enforce": "expect_all_ok",
    }),
    Catch("trust-domain-aliases-ignored", {
        "authz-trust-domain-alias": "expect_all_ok",
    }),
    Catch("claims-list-matched-as-string", {
        "authz-jwt-claim-condition": "expect_all_ok",
        "authn-jwt-at-ingress-cross-cluster": "expect_answered_by",
    }),
    # every push reaches the proxies 2 s after the authz propagation budget
    Catch("slow-config-push", {
        "authz-propagation-time": "expect_within_budget",
    }),
    # issue 12, the control planes' lifecycle, on Istio's CI topology (a primary, its remote, a primary elsewhere).
    # Calls to cluster3 get 503 "no healthy upstream" after the rotation
    Catch("remote-endpoints-lost-on-secret-rotation", {
        "multicluster-remote-secret-rotation": "expect_no_failed_calls",
    }, topology="three-cluster"),
    # in the wait for the repaired cluster's endpoints: they never come back (remote_secret_recovery_s, 30 s)
    Catch("bad-secret-blocks-recovery", {
        "multicluster-bad-remote-secret-isolated": "expect_answered_by",
    }, topology="three-cluster"),
    # the client's sidecar holds 0 of its 2 endpoints after the restarted control plane's first push
    Catch("push-before-remote-sync", {
        "multicluster-control-plane-restart": "expect_endpoints_kept",
    }, topology="three-cluster"),
    # the proxies lost every listener while their control plane is down
    Catch("empty-push-on-control-plane-stop", {
        "multicluster-control-plane-down-keeps-data-plane": "expect_no_failed_calls",
    }, topology="three-cluster"),
    # every push replaces the listeners: the held connections are closed and reopened
    Catch("resets-connections-on-unrelated-push", {
        "multicluster-long-lived-connections": "expect_connections_kept",
    }, topology="three-cluster"),
    # after new-intermediates the proxies trust the new root alone; the handshakes that fail until the workloads
    # are re-signed last milliseconds on the local mesh, too short for traffic to show every time
    Catch("drops-old-root-early", {
        "mtls-root-ca-migration": "expect_both_roots_trusted",
    }, topology="three-cluster"),
    # the cluster-local host is answered by every cluster
    Catch("cluster-local-ignored", {
        "multicluster-cluster-local-service": "expect_answered_by",
    }, topology="three-cluster"),
    # with three regions, traffic leaving region1 splits between region2 and region3
    Catch("locality-failover-ignored", {
        "failover-locality-failover-region": "expect_answered_by",
    }, topology="three-cluster"),
)
"""Every self-validation run: see the module docstring."""
