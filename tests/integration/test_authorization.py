"""AuthorizationPolicy on real Envoy: a request matrix per feature, as Istio documents the semantics.

The server runs in cluster1 on ports 8080 and 9090 under the default PERMISSIVE mode. Callers, each with a
service account of its name: ``frontend`` and ``other`` in the server's namespace, ``stranger`` in another
namespace, ``remote`` in cluster2, and ``outsider``, a plaintext caller out of the mesh.

The RBAC filters are inline in the server's inbound listener: ``apply`` returns once every Envoy loaded the
new listener, and new connections see the policy at once; a connection the client's sidecar kept alive from
the previous row may carry one more request on the old filter chain until the listener drain closes it
(Istio drains too, for 45 s; the local mesh within ``DRAIN_TIME_S``), so each call must hold within that time.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from conformance.expect import Outcome, expect_all, expect_all_ok
from conformance.probe import CallResult, ProbeClient
from conformance.provider import ProbeHandle, ProbeSpec
from conformance.providers.local.envoy import DRAIN_TIME_S
from conformance.providers.local.provider import LocalProvider

pytestmark = pytest.mark.integration

OK, FORBIDDEN = Outcome.OK, Outcome.FORBIDDEN
BOTH = ("cluster1", "cluster2")


@dataclass(frozen=True)
class Policy:
    spec: dict[str, Any]
    """AuthorizationPolicy spec; ``$ns``, ``$other_ns``, ``$frontend_ip``, ``$other_ip`` and ``$server_ip`` are
    filled in."""
    namespace: str = "$ns"
    name: str = "policy"
    clusters: tuple[str, ...] = BOTH


@dataclass(frozen=True)
class Call:
    caller: str
    outcome: Outcome
    path: str = "/"
    port: int = 8080
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.caller} {self.method} :{self.port}{self.path} {dict(self.headers) or ''}-> {self.outcome}"


@dataclass(frozen=True)
class Case:
    name: str
    policies: tuple[Policy, ...]
    calls: tuple[Call, ...]


def _from(**source: Any) -> dict[str, Any]:
    return {"from": [{"source": source}]}


def _to(**operation: Any) -> dict[str, Any]:
    return {"to": [{"operation": operation}]}


def _when(key: str, values: list[str] | None = None, not_values: list[str] | None = None) -> dict[str, Any]:
    condition: dict[str, Any] = {"key": key, **({"values": values} if values else {})}
    return {"when": [{**condition, **({"notValues": not_values} if not_values else {})}]}


def allow(*rules: dict[str, Any]) -> Policy:
    return Policy({"action": "ALLOW", "rules": list(rules)})


def deny(*rules: dict[str, Any]) -> Policy:
    return Policy({"action": "DENY", "rules": list(rules)})


FRONTEND = "cluster.local/ns/$ns/sa/frontend"

CASES = [
    Case("allow-principal", (allow(_from(principals=[FRONTEND])),),
         (Call("frontend", OK), Call("other", FORBIDDEN))),
    Case("allow-principal-suffix", (allow(_from(principals=["*/sa/frontend"])),),
         (Call("frontend", OK), Call("other", FORBIDDEN))),
    Case("allow-principal-prefix", (allow(_from(principals=["cluster.local/ns/$ns/sa/front*"])),),
         (Call("frontend", OK), Call("other", FORBIDDEN))),
    Case("deny-principal", (deny(_from(principals=[FRONTEND])),),
         (Call("frontend", FORBIDDEN), Call("other", OK))),
    Case("not-principals", (allow(_from(notPrincipals=[FRONTEND])),),
         (Call("frontend", FORBIDDEN), Call("other", OK))),
    Case("allow-namespace", (allow(_from(namespaces=["$ns"])),),
         (Call("frontend", OK), Call("stranger", FORBIDDEN))),
    Case("deny-not-namespaces", (deny(_from(notNamespaces=["$ns"])),),
         (Call("frontend", OK), Call("stranger", FORBIDDEN))),
    Case("paths-exact", (deny(_to(paths=["/admin"])),),
         (Call("frontend", FORBIDDEN, "/admin"), Call("frontend", FORBIDDEN, "/admin?x=1"),
          Call("frontend", FORBIDDEN, "/public/../admin"), Call("frontend", OK, "/admin/x"),
          Call("frontend", OK, "/adminx"))),
    Case("paths-prefix", (deny(_to(paths=["/admin/*"])),),
         (Call("frontend", FORBIDDEN, "/admin/x"), Call("frontend", OK, "/admin"))),
    Case("paths-suffix", (deny(_to(paths=["*.secret"])),),
         (Call("frontend", FORBIDDEN, "/a/b.secret"), Call("frontend", OK, "/a/b"))),
    Case("not-paths", (allow(_to(notPaths=["/private/*"])),),
         (Call("frontend", FORBIDDEN, "/private/x"), Call("frontend", OK, "/public"))),
    Case("methods", (deny(_to(methods=["POST"])),),
         (Call("frontend", FORBIDDEN, method="POST"), Call("frontend", OK))),
    Case("not-methods", (allow(_to(notMethods=["DELETE"])),),
         (Call("frontend", FORBIDDEN, method="DELETE"), Call("frontend", OK, method="PUT"))),
    Case("ports", (allow(_to(ports=["9090"])),),
         (Call("frontend", OK, port=9090), Call("frontend", FORBIDDEN, port=8080))),
    Case("not-ports", (deny(_to(notPorts=["8080"])),),
         (Call("frontend", FORBIDDEN, port=9090), Call("frontend", OK, port=8080))),
    # the Host header carries the port; Istio matches it whole, ignoring case
    Case("hosts", (allow(_to(hosts=["SERVER.$ns.svc.cluster.local:9090"])),),
         (Call("frontend", OK, port=9090), Call("frontend", FORBIDDEN))),
    Case("hosts-prefix", (allow(_to(hosts=["server.$ns.svc*"])),), (Call("frontend", OK),)),
    Case("when-header", (allow(_when("request.headers[x-token]", ["secret"])),),
         (Call("frontend", OK, headers={"x-token": "secret"}), Call("frontend", FORBIDDEN),
          Call("frontend", FORBIDDEN, headers={"x-token": "wrong"}))),
    Case("when-header-not-values", (deny(_when("request.headers[x-env]", not_values=["test*"])),),
         (Call("frontend", OK, headers={"x-env": "testing"}), Call("frontend", FORBIDDEN, headers={"x-env": "prod"}))),
    Case("when-source-principal", (deny(_when("source.principal", [FRONTEND])),),
         (Call("frontend", FORBIDDEN), Call("other", OK))),
    Case("when-source-namespace", (allow(_when("source.namespace", ["$other_ns"])),),
         (Call("stranger", OK), Call("frontend", FORBIDDEN))),
    Case("when-destination-port", (deny(_when("destination.port", ["9090"])),),
         (Call("frontend", FORBIDDEN, port=9090), Call("frontend", OK))),
    Case("ip-blocks", (allow(_from(ipBlocks=["$frontend_ip"])),),
         (Call("frontend", OK), Call("other", FORBIDDEN))),
    Case("not-ip-blocks", (deny(_from(notIpBlocks=["$frontend_ip/32"])),),
         (Call("frontend", OK), Call("other", FORBIDDEN))),
    Case("when-source-ip", (deny(_when("source.ip", ["$other_ip"])),),
         (Call("frontend", OK), Call("other", FORBIDDEN))),
    Case("remote-ip-blocks", (allow(_from(remoteIpBlocks=["10.1.2.0/24"])),),
         (Call("frontend", OK, headers={"x-forwarded-for": "10.1.2.3"}), Call("frontend", FORBIDDEN))),
    Case("deny-overrides-allow", (allow({}), Policy({"action": "DENY", "rules": [_from(principals=[FRONTEND])]},
                                                    name="deny")),
         (Call("frontend", FORBIDDEN), Call("other", OK))),
    Case("allow-policies-are-ored", (allow(_from(principals=[FRONTEND])),
                                     Policy({"rules": [_to(paths=["/public"])]}, name="public")),
         (Call("frontend", OK), Call("other", OK, "/public"), Call("other", FORBIDDEN))),
    Case("empty-allow-denies-all", (Policy({}),),
         (Call("frontend", FORBIDDEN), Call("outsider", FORBIDDEN), Call("remote", FORBIDDEN))),
    Case("allow-rules-empty-rule-allows-all", (allow({}),),
         (Call("frontend", OK), Call("outsider", OK), Call("remote", OK))),
    Case("audit-changes-nothing", (Policy({"action": "AUDIT", "rules": [{}]}),), (Call("frontend", OK),)),
    Case("selector-mismatch-ignored", (Policy({"selector": {"matchLabels": {"app": "nobody"}}}),),
         (Call("frontend", OK),)),
    Case("selector-match-applies", (Policy({"selector": {"matchLabels": {"app": "server"}}}),),
         (Call("frontend", FORBIDDEN),)),
    Case("mesh-wide-root-namespace", (Policy({"action": "DENY", "rules": [_to(paths=["/mesh-wide"])]},
                                             namespace="istio-system", name="meshconf-test"),),
         (Call("frontend", FORBIDDEN, "/mesh-wide"), Call("remote", FORBIDDEN, "/mesh-wide"), Call("frontend", OK))),
    # a plaintext caller has no certificate, so no principal and no namespace: those rules never match it
    Case("plaintext-never-matches-principals", (allow(_from(principals=["*"])),),
         (Call("outsider", FORBIDDEN), Call("frontend", OK))),
    Case("plaintext-never-matches-namespaces", (allow(_from(namespaces=["*"])),),
         (Call("outsider", FORBIDDEN), Call("frontend", OK))),
    Case("plaintext-escapes-deny-principals", (deny(_from(principals=["*"])),),
         (Call("outsider", OK), Call("frontend", FORBIDDEN))),
    Case("deny-not-principals-refuses-plaintext", (deny(_from(notPrincipals=["*"])),),
         (Call("outsider", FORBIDDEN), Call("frontend", OK))),
    # source.serviceAccounts (srcServiceAccountGenerator): the policy's namespace unless one is named
    Case("service-accounts", (allow(_from(serviceAccounts=["frontend"])),),
         (Call("frontend", OK), Call("other", FORBIDDEN), Call("stranger", FORBIDDEN), Call("remote", FORBIDDEN))),
    Case("service-accounts-of-another-namespace", (allow(_from(serviceAccounts=["$other_ns/stranger"])),),
         (Call("stranger", OK), Call("frontend", FORBIDDEN))),
    Case("when-source-service-account", (deny(_when("source.serviceAccount", ["$ns/other"])),),
         (Call("other", FORBIDDEN), Call("frontend", OK))),
    # path templates: Envoy's uri_template matcher
    Case("paths-template", (deny(_to(paths=["/api/{*}/admin", "/files/{**}"])),),
         (Call("frontend", FORBIDDEN, "/api/v1/admin"), Call("frontend", OK, "/api/v1/v2/admin"),
          Call("frontend", FORBIDDEN, "/files/a/b/c"), Call("frontend", OK, "/api/admin"))),
    # trust domains (Istio 1.30's srcTrustDomainGenerator)
    Case("trust-domains", (allow(_from(trustDomains=["cluster.local"])),),
         (Call("frontend", OK), Call("outsider", FORBIDDEN))),
    Case("not-trust-domains", (allow(_from(notTrustDomains=["cluster.local"])),),
         (Call("frontend", FORBIDDEN), Call("outsider", OK))),
    # connection attributes: the SNI the client sidecar sent, the address it connected to
    Case("when-connection-sni", (deny(_when("connection.sni", ["outbound_.9090_*"])),),
         (Call("frontend", FORBIDDEN, port=9090), Call("frontend", OK))),
    Case("when-destination-ip", (deny(_when("destination.ip", ["$server_ip"])),), (Call("frontend", FORBIDDEN),)),
    # Envoy metadata of a filter (envoyFilterGenerator): a request without a verified JWT has none
    Case("when-experimental-envoy-filter", (deny(_when("experimental.envoy.filters.http.jwt_authn[payload]",
                                                       ["x", "[y]"])),), (Call("frontend", OK),)),
    Case("when-destination-ip-elsewhere", (deny(_when("destination.ip", ["10.0.0.0/8"])),), (Call("frontend", OK),)),
    # the server's control plane (cluster1) holds the policy; the caller's identity crosses the clusters
    Case("cross-cluster-principal", (Policy({"rules": [_from(principals=["cluster.local/ns/$ns/sa/remote"])]},
                                            clusters=("cluster1",)),),
         (Call("remote", OK), Call("frontend", FORBIDDEN))),
    Case("policy-in-the-other-cluster-only-is-not-enforced-here", (Policy({}, clusters=("cluster2",)),),
         (Call("frontend", OK), Call("remote", OK))),
]


@dataclass
class Workloads:
    namespace: str
    other_namespace: str
    server: ProbeHandle
    callers: dict[str, ProbeHandle]

    def fill(self, value: Any) -> Any:
        variables = {"ns": self.namespace, "other_ns": self.other_namespace,
                     "frontend_ip": self.callers["frontend"].instances[0].address,
                     "server_ip": self.server.instances[0].address,
                     "other_ip": self.callers["other"].instances[0].address}
        if isinstance(value, str):
            return string.Template(value).substitute(variables)
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        return value

    def document(self, policy: Policy) -> dict[str, Any]:
        return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": policy.name, "namespace": self.fill(policy.namespace)},
                "spec": self.fill(policy.spec)}


@pytest.fixture(scope="module")
def workloads(local_mesh: LocalProvider) -> Iterator[Workloads]:
    namespace, other = f"az-{secrets.token_hex(3)}", f"az-other-{secrets.token_hex(3)}"
    server = local_mesh.deploy_probe(ProbeSpec("server", namespace, "cluster1", ports=(8080, 9090)))
    # callers are versions of one service: every service costs every sidecar a cluster (and every change a push)
    callers = {
        name: local_mesh.deploy_probe(ProbeSpec("client", ns, cluster, version=name, service_account=name,
                                                in_mesh=name != "outsider"))
        for name, ns, cluster in (("frontend", namespace, "cluster1"), ("other", namespace, "cluster1"),
                                  ("stranger", other, "cluster1"), ("remote", namespace, "cluster2"),
                                  ("outsider", namespace, "cluster1"))
    }
    yield Workloads(namespace, other, server, callers)
    local_mesh.delete_namespace(namespace)
    local_mesh.delete_namespace(other)


def _call(mesh: LocalProvider, workloads: Workloads, call: Call, count: int = 2) -> CallResult:
    return ProbeClient(mesh, 2, 30).call(workloads.callers[call.caller], workloads.server.url(call.path, call.port),
                                         count, headers=call.headers, method=call.method)


def _within_drain(mesh: LocalProvider, workloads: Workloads, call: Call) -> float:
    """Seconds until ``call`` has its outcome; expect_all raises if it still has not after the drain time."""
    started = time.monotonic()
    deadline = started + DRAIN_TIME_S + 1.0
    while True:
        result = _call(mesh, workloads, call)
        try:
            expect_all(result, call.outcome)
            return time.monotonic() - started
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matrix(local_mesh: LocalProvider, workloads: Workloads, case: Case) -> None:
    applied = [(workloads.document(p), p.clusters) for p in case.policies]
    for doc, clusters in applied:
        local_mesh.apply([doc], clusters)
    try:
        failures = []
        for call in case.calls:
            try:
                _within_drain(local_mesh, workloads, call)
            except AssertionError as failure:
                failures.append(f"{call}: {failure}")
        assert not failures, "\n".join(failures)
    finally:
        for doc, clusters in applied:
            local_mesh.delete([doc], clusters)


def test_policy_change_reaches_a_kept_alive_connection_within_the_drain_time(
        local_mesh: LocalProvider, workloads: Workloads) -> None:
    """The connection the client's sidecar keeps open carries at most one request on the old filter chain."""
    frontend = Call("frontend", OK)
    expect_all_ok(_call(local_mesh, workloads, frontend, count=3))  # a kept-alive connection to the server
    doc = workloads.document(deny({}))
    local_mesh.apply([doc], BOTH)
    try:
        first = _call(local_mesh, workloads, frontend, count=3)
        assert sum(r.ok for r in first.responses) <= 1, first.summary()
        assert _within_drain(local_mesh, workloads, Call("frontend", FORBIDDEN)) <= DRAIN_TIME_S + 1.0
    finally:
        local_mesh.delete([doc], BOTH)
    _within_drain(local_mesh, workloads, frontend)
