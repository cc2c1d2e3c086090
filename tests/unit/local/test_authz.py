"""AuthorizationPolicy translation, as Istio evaluates it (pure translator logic; no Envoy).

Each case is a set of policies and the verdicts (200 / 403) a few requests must get from the two RBAC filters,
decided by a small model of Envoy's RBAC filter (``envoy_rbac.py``); tests/integration/test_authorization.py
holds the same semantics against real Envoy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from conformance.errors import ManifestError, UnsupportedError
from conformance.provider import ProbeSpec
from conformance.providers.local.addresses import PodAddresses
from conformance.providers.local.defects import Defect
from conformance.providers.local.model import ConfigStore, Workload
from conformance.providers.local.support import check_supported
from conformance.providers.local.translate.authz import ALLOW_FILTER, DENY_FILTER, rbac_filters
from conformance.topology import Cluster
from tests.unit.local.envoy_rbac import Request, verdict

CLUSTER = Cluster("cluster1", "network1", "region1", ("zone1",))
NONE: frozenset[Defect] = frozenset()
FRONTEND = "cluster.local/ns/ns/sa/frontend"
PLAINTEXT = Request(peer=None)
OTHER = Request(peer="spiffe://cluster.local/ns/ns/sa/other")
STRANGER = Request(peer="spiffe://cluster.local/ns/elsewhere/sa/frontend")
ME = Request()  # frontend in ns, over mTLS
ALICE = {"iss": "https://i.test", "sub": "alice", "aud": ["orders", "billing"], "azp": "web-app",
         "groups": ["admins", "dev"], "org": {"team": "payments"}}
JWT_ALICE = Request(jwt=ALICE)  # frontend, with alice's verified token


def _server() -> Workload:
    spec = ProbeSpec(service="server", namespace="ns", cluster="cluster1", ports=(8080, 9090))
    return Workload("w", spec, CLUSTER, "zone1", PodAddresses("127.11.0.2", "127.11.128.2"))


def _ap(spec: dict[str, Any], namespace: str = "ns", name: str = "p") -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _dry_run(doc: dict[str, Any], value: str = "true") -> dict[str, Any]:
    doc["metadata"]["annotations"] = {"istio.io/dry-run": value}
    return doc


def _allow(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"action": "ALLOW", "rules": list(rules), **extra}


def _deny(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"action": "DENY", "rules": list(rules), **extra}


def _from(**source: Any) -> dict[str, Any]:
    return {"from": [{"source": source}]}


def _to(**operation: Any) -> dict[str, Any]:
    return {"to": [{"operation": operation}]}


def _when(key: str, values: list[str] | None = None, not_values: list[str] | None = None) -> dict[str, Any]:
    condition: dict[str, Any] = {"key": key}
    if values:
        condition["values"] = values
    if not_values:
        condition["notValues"] = not_values
    return {"when": [condition]}


@dataclass(frozen=True)
class Case:
    name: str
    policies: tuple[dict[str, Any], ...]
    """Complete AuthorizationPolicy documents (use _ap)."""
    verdicts: tuple[tuple[Request, int], ...]
    defects: frozenset[Defect] = field(default_factory=frozenset)
    trust_domain: str | tuple[str, ...] = "cluster.local"
    """The mesh's trust domain, or it and its MeshConfig trustDomainAliases."""


def _decide(case: Case) -> Any:
    store = ConfigStore()
    for doc in case.policies:
        check_supported(doc)  # every case is valid, supported Istio
        store.put(doc)
    return verdict(rbac_filters(store, _server(), case.trust_domain, case.defects))


CASES = [
    Case("no-policy-allows-all", (), ((ME, 200), (PLAINTEXT, 200))),
    Case("allow-principal", (_ap(_allow(_from(principals=[FRONTEND]))),),
         ((ME, 200), (OTHER, 403), (PLAINTEXT, 403))),
    Case("allow-principal-prefix", (_ap(_allow(_from(principals=["cluster.local/ns/ns/sa/front*"]))),),
         ((ME, 200), (OTHER, 403))),
    Case("allow-principal-suffix", (_ap(_allow(_from(principals=["*/sa/frontend"]))),),
         ((ME, 200), (STRANGER, 200), (OTHER, 403), (PLAINTEXT, 403))),
    # Istio honours one wildcard, at one end: "*/sa/front*" is the regex spiffe://.*/sa/front* as Istio writes it
    # (matcher.StringMatcherWithPrefix does not escape), so the trailing '*' repeats the 't'
    Case("principal-wildcard-at-both-ends-is-a-suffix-regex", (_ap(_allow(_from(principals=["*/sa/front*"]))),),
         ((ME, 403), (Request(peer="spiffe://cluster.local/ns/ns/sa/front*"), 403),
          (Request(peer="spiffe://cluster.local/ns/ns/sa/frontt"), 200))),
    Case("allow-principal-any-is-any-mtls-peer", (_ap(_allow(_from(principals=["*"]))),),
         ((ME, 200), (OTHER, 200), (PLAINTEXT, 403))),
    Case("principal-names-this-trust-domain", (_ap(_allow(_from(principals=[FRONTEND]))),),
         ((Request(peer="spiffe://example.org/ns/ns/sa/frontend"), 200), (ME, 403)), trust_domain="example.org"),
    Case("principal-of-another-trust-domain-is-literal",
         (_ap(_allow(_from(principals=["other.td/ns/ns/sa/frontend"]))),),
         ((Request(peer="spiffe://other.td/ns/ns/sa/frontend"), 200),
          (Request(peer="spiffe://example.org/ns/ns/sa/frontend"), 403)),
         trust_domain="example.org"),
    Case("deny-principal", (_ap(_deny(_from(principals=[FRONTEND]))),),
         ((ME, 403), (OTHER, 200), (PLAINTEXT, 200))),
    Case("not-principals", (_ap(_allow(_from(notPrincipals=[FRONTEND]))),),
         ((ME, 403), (OTHER, 200), (PLAINTEXT, 200))),
    Case("deny-not-principals-any-denies-plaintext", (_ap(_deny(_from(notPrincipals=["*"]))),),
         ((ME, 200), (PLAINTEXT, 403))),
    Case("deny-principals-any-spares-plaintext", (_ap(_deny(_from(principals=["*"]))),),
         ((ME, 403), (PLAINTEXT, 200))),
    Case("allow-namespace", (_ap(_allow(_from(namespaces=["ns"]))),),
         ((ME, 200), (OTHER, 200), (STRANGER, 403), (PLAINTEXT, 403))),
    Case("allow-namespace-wildcard", (_ap(_allow(_from(namespaces=["else*"]))),),
         ((STRANGER, 200), (ME, 403))),
    Case("namespace-is-a-whole-segment", (_ap(_allow(_from(namespaces=["n"]))),), ((ME, 403),)),
    Case("deny-not-namespaces", (_ap(_deny(_from(notNamespaces=["ns"]))),),
         ((ME, 200), (STRANGER, 403), (PLAINTEXT, 403))),
    Case("source-fields-are-anded", (_ap(_allow(_from(principals=[FRONTEND], ipBlocks=["127.11.0.0/24"]))),),
         ((ME, 200), (Request(source_ip="127.12.0.3"), 403), (Request(peer=OTHER.peer), 403))),
    Case("from-items-are-ored", (_ap(_allow({"from": [{"source": {"principals": [FRONTEND]}},
                                                       {"source": {"namespaces": ["elsewhere"]}}]})),),
         ((ME, 200), (STRANGER, 200), (OTHER, 403))),
    Case("ip-blocks", (_ap(_allow(_from(ipBlocks=["127.11.0.3"], notIpBlocks=["127.11.0.0/30"]))),),
         ((ME, 403), (Request(source_ip="127.11.0.9"), 403))),
    Case("ip-blocks-single-address", (_ap(_allow(_from(ipBlocks=["127.11.0.3"]))),),
         ((ME, 200), (Request(source_ip="127.11.0.4"), 403), (Request(peer=None), 200))),
    Case("not-ip-blocks", (_ap(_deny(_from(notIpBlocks=["127.11.0.0/16"]))),),
         ((ME, 200), (Request(source_ip="127.12.0.3"), 403))),
    Case("remote-ip-blocks-follow-xff", (_ap(_allow(_from(remoteIpBlocks=["10.1.2.3"]))),),
         ((Request(headers={"x-forwarded-for": "10.1.2.3"}), 200), (ME, 403))),
    Case("paths-exact", (_ap(_deny(_to(paths=["/admin"]))),),
         ((Request(path="/admin"), 403), (Request(path="/admin?x=1"), 403), (Request(path="/admin/x"), 200),
          (Request(path="/adminx"), 200))),
    Case("paths-prefix", (_ap(_deny(_to(paths=["/admin/*"]))),),
         ((Request(path="/admin/x"), 403), (Request(path="/admin"), 200))),
    Case("paths-suffix", (_ap(_deny(_to(paths=["*.secret"]))),),
         ((Request(path="/a/b.secret"), 403), (Request(path="/a/b"), 200))),
    Case("paths-any", (_ap(_allow(_to(paths=["*"]))),), ((Request(path="/x"), 200), (PLAINTEXT, 200))),
    Case("not-paths", (_ap(_allow(_to(notPaths=["/private*"]))),),
         ((Request(path="/private/x"), 403), (Request(path="/public"), 200))),
    Case("methods", (_ap(_deny(_to(methods=["POST", "DELETE"]))),),
         ((Request(method="POST"), 403), (Request(method="DELETE"), 403), (ME, 200))),
    Case("not-methods", (_ap(_allow(_to(notMethods=["GET"]))),), ((ME, 403), (Request(method="PUT"), 200))),
    Case("operation-fields-are-anded", (_ap(_deny(_to(paths=["/admin"], methods=["POST"]))),),
         ((Request(path="/admin", method="POST"), 403), (Request(path="/admin"), 200),
          (Request(method="POST"), 200))),
    Case("ports", (_ap(_allow(_to(ports=["9090"]))),), ((Request(port=9090), 200), (ME, 403))),
    Case("not-ports", (_ap(_deny(_to(notPorts=["8080"]))),), ((Request(port=9090), 403), (ME, 200))),
    Case("hosts-ignore-case", (_ap(_allow(_to(hosts=["SERVER.ns.svc.cluster.local:8080"]))),),
         ((ME, 200), (Request(host="server"), 403))),
    Case("hosts-prefix", (_ap(_allow(_to(hosts=["server.ns.svc.cluster.local*"]))),),
         ((ME, 200), (Request(host="other.ns.svc.cluster.local:8080"), 403))),
    Case("not-hosts", (_ap(_deny(_to(notHosts=["server*"]))),), ((ME, 200), (Request(host="x"), 403))),
    Case("when-header", (_ap(_allow(_when("request.headers[x-token]", ["secret", "open*"]))),),
         ((Request(headers={"X-Token": "secret"}), 200), (Request(headers={"x-token": "opensesame"}), 200),
          (Request(headers={"x-token": "wrong"}), 403), (ME, 403),
          (Request(peer=None, headers={"x-token": "secret"}), 200))),
    Case("when-header-present", (_ap(_allow(_when("request.headers[x-token]", ["*"]))),),
         ((Request(headers={"x-token": "anything"}), 200), (ME, 403))),
    Case("when-header-not-values", (_ap(_deny(_when("request.headers[x-token]", not_values=["secret"]))),),
         ((Request(headers={"x-token": "secret"}), 200), (Request(headers={"x-token": "x"}), 403), (ME, 403))),
    Case("when-source-principal", (_ap(_deny(_when("source.principal", [FRONTEND]))),),
         ((ME, 403), (OTHER, 200), (PLAINTEXT, 200))),
    Case("when-source-namespace", (_ap(_allow(_when("source.namespace", ["elsewhere"]))),),
         ((STRANGER, 200), (ME, 403), (PLAINTEXT, 403))),
    Case("when-source-ip", (_ap(_allow(_when("source.ip", ["127.11.0.0/24"]))),),
         ((ME, 200), (Request(source_ip="127.12.0.3"), 403))),
    Case("when-remote-ip", (_ap(_allow(_when("remote.ip", ["10.0.0.0/8"]))),),
         ((Request(headers={"x-forwarded-for": "10.9.9.9"}), 200), (ME, 403))),
    Case("when-destination-port", (_ap(_deny(_when("destination.port", ["9090"]))),),
         ((Request(port=9090), 403), (ME, 200))),
    Case("from-to-when-are-anded", (_ap(_allow({**_from(principals=[FRONTEND]), **_to(methods=["GET"]),
                                               **_when("request.headers[x-token]", ["t"])})),),
         ((Request(headers={"x-token": "t"}), 200), (ME, 403), (Request(method="PUT", headers={"x-token": "t"}), 403),
          (Request(peer=OTHER.peer, headers={"x-token": "t"}), 403))),
    Case("rules-are-ored", (_ap(_allow(_from(principals=[FRONTEND]), _to(paths=["/public"]))),),
         ((ME, 200), (Request(peer=OTHER.peer, path="/public"), 200), (OTHER, 403))),
    Case("allow-policies-are-ored", (_ap(_allow(_from(principals=[FRONTEND])), name="a"),
                                     _ap(_allow(_to(paths=["/public"])), name="b")),
         ((ME, 200), (Request(peer=OTHER.peer, path="/public"), 200), (OTHER, 403))),
    Case("empty-allow-denies-all", (_ap({}),), ((ME, 403), (PLAINTEXT, 403))),
    Case("allow-without-rules-denies-all", (_ap({"action": "ALLOW"}),), ((ME, 403),)),
    Case("empty-allow-beside-another-allow", (_ap({}, name="a"), _ap(_allow(_from(principals=[FRONTEND])), name="b")),
         ((ME, 200), (OTHER, 403))),
    Case("allow-empty-rule-allows-all", (_ap(_allow({})),), ((ME, 200), (PLAINTEXT, 200))),
    Case("deny-empty-rule-denies-all", (_ap(_deny({})),), ((ME, 403), (PLAINTEXT, 403))),
    Case("deny-overrides-allow", (_ap(_allow({}), name="a"), _ap(_deny(_from(principals=[FRONTEND])), name="d")),
         ((ME, 403), (OTHER, 200))),
    Case("deny-only-leaves-the-rest-allowed", (_ap(_deny(_to(paths=["/admin"]))),),
         ((ME, 200), (PLAINTEXT, 200))),
    Case("audit-changes-nothing", (_ap({"action": "AUDIT", "rules": [{}]}),), ((ME, 200),)),
    Case("selector-match-applies", (_ap({"selector": {"matchLabels": {"app": "server"}}}),), ((ME, 403),)),
    Case("selector-mismatch-ignored", (_ap({"selector": {"matchLabels": {"app": "other"}}}),), ((ME, 200),)),
    Case("other-namespace-ignored", (_ap({}, namespace="elsewhere"),), ((ME, 200),)),
    Case("root-namespace-is-mesh-wide", (_ap(_deny(_to(paths=["/mesh"])), namespace="istio-system"),),
         ((Request(path="/mesh"), 403), (ME, 200))),
    Case("root-namespace-selector-applies-in-every-namespace",
         (_ap({"selector": {"matchLabels": {"app": "server"}}}, namespace="istio-system"),), ((ME, 403),)),
    Case("root-namespace-selector-mismatch-ignored",
         (_ap({"selector": {"matchLabels": {"app": "other"}}}, namespace="istio-system"),), ((ME, 200),)),
    Case("mesh-and-namespace-allow-are-ored",
         (_ap(_allow(_to(paths=["/mesh"])), namespace="istio-system"), _ap(_allow(_from(principals=[FRONTEND])))),
         ((ME, 200), (Request(peer=OTHER.peer, path="/mesh"), 200), (OTHER, 403))),
    # source.serviceAccounts (model/generator.go srcServiceAccountGenerator; the policy's namespace by default)
    Case("service-accounts", (_ap(_allow(_from(serviceAccounts=["frontend"]))),),
         ((ME, 200), (OTHER, 403), (STRANGER, 403), (PLAINTEXT, 403),
          (Request(peer="spiffe://cluster.local/ns/ns/x/y/sa/frontend"), 200),
          (Request(peer="spiffe://cluster.local/ns/ns/sa/frontend-junk"), 403))),
    Case("service-accounts-of-another-namespace", (_ap(_allow(_from(serviceAccounts=["elsewhere/frontend"]))),),
         ((STRANGER, 200), (ME, 403))),
    Case("not-service-accounts", (_ap(_deny(_from(notServiceAccounts=["frontend"]))),),
         ((ME, 200), (OTHER, 403), (PLAINTEXT, 403))),
    Case("when-source-service-account", (_ap(_allow(_when("source.serviceAccount", ["ns/frontend"]))),),
         ((ME, 200), (OTHER, 403))),
    # path templates (pathGenerator + matcher.PathTemplateMatcher: Envoy's uri_template)
    Case("paths-template-one-segment", (_ap(_deny(_to(paths=["/api/{*}/admin"]))),),
         ((Request(path="/api/v1/admin"), 403), (Request(path="/api/v1/v2/admin"), 200), (Request(path="/api"), 200))),
    Case("paths-template-any-segments", (_ap(_allow(_to(paths=["/api/{**}"]))),),
         ((Request(path="/api/a/b/c"), 200), (Request(path="/other/a"), 403))),
    Case("not-paths-template", (_ap(_allow(_to(notPaths=["/private/{*}"]))),),
         ((Request(path="/private/x"), 403), (Request(path="/public/x"), 200))),
    # trustDomains / notTrustDomains / source.trustDomain (Istio 1.30: srcTrustDomainGenerator)
    Case("trust-domains", (_ap(_allow(_from(trustDomains=["cluster.local"]))),),
         ((ME, 200), (Request(peer="spiffe://other.td/ns/ns/sa/frontend"), 403), (PLAINTEXT, 403),
          (Request(peer="spiffe://cluster.localx/ns/ns/sa/frontend"), 403))),
    Case("trust-domains-wildcard", (_ap(_allow(_from(trustDomains=["*.td"]))),),
         ((Request(peer="spiffe://other.td/ns/ns/sa/frontend"), 200), (ME, 403))),
    Case("trust-domains-any", (_ap(_allow(_from(trustDomains=["*"]))),), ((ME, 200), (PLAINTEXT, 403))),
    Case("not-trust-domains", (_ap(_deny(_from(notTrustDomains=["cluster.local"]))),),
         ((ME, 200), (Request(peer="spiffe://other.td/ns/ns/sa/frontend"), 403))),
    Case("trust-domains-expand-aliases", (_ap(_allow(_from(trustDomains=["td1"]))),),
         ((ME, 200), (Request(peer="spiffe://td1/ns/ns/sa/frontend"), 200)), trust_domain=("cluster.local", "td1")),
    Case("when-source-trust-domain", (_ap(_allow(_when("source.trustDomain", ["cluster.local"]))),),
         ((ME, 200), (Request(peer="spiffe://other.td/ns/ns/sa/x"), 403))),
    # MeshConfig trustDomainAliases (trustdomain/bundle.go; istio.io "Configure trust domain migration")
    Case("principal-of-an-alias-names-this-mesh", (_ap(_allow(_from(principals=["td1/ns/ns/sa/frontend"]))),),
         ((ME, 200), (OTHER, 403), (Request(peer="spiffe://td1/ns/ns/sa/frontend"), 200)),
         trust_domain=("cluster.local", "td1")),
    Case("principal-of-an-alias-without-the-alias-names-nobody",
         (_ap(_allow(_from(principals=["td1/ns/ns/sa/frontend"]))),),
         ((ME, 403), (Request(peer="spiffe://td1/ns/ns/sa/frontend"), 200))),
    Case("cluster-local-principal-admits-every-alias", (_ap(_allow(_from(principals=[FRONTEND]))),),
         ((ME, 200), (Request(peer="spiffe://td1/ns/ns/sa/frontend"), 200),
          (Request(peer="spiffe://td2/ns/ns/sa/frontend"), 403)), trust_domain=("cluster.local", "td1")),
    Case("not-principals-of-an-alias", (_ap(_deny(_from(notPrincipals=["td1/ns/ns/sa/frontend"]))),),
         ((ME, 200), (OTHER, 403)), trust_domain=("cluster.local", "td1")),
    Case("when-source-principal-of-an-alias", (_ap(_allow(_when("source.principal", ["td1/ns/ns/sa/frontend"]))),),
         ((ME, 200), (OTHER, 403)), trust_domain=("cluster.local", "td1")),
    # requestPrincipals / request.auth.* (requestPrincipalGenerator, requestClaimGenerator...): a verified JWT
    Case("request-principals", (_ap(_allow(_from(requestPrincipals=["https://i.test/alice"]))),),
         ((JWT_ALICE, 200), (ME, 403), (Request(jwt={**ALICE, "sub": "bob"}), 403),
          (Request(jwt={**ALICE, "iss": "https://j.test"}), 403))),
    Case("request-principals-any", (_ap(_allow(_from(requestPrincipals=["*"]))),),
         ((JWT_ALICE, 200), (ME, 403), (Request(peer=None, jwt=ALICE), 200))),
    Case("request-principals-any-subject", (_ap(_allow(_from(requestPrincipals=["https://i.test/*"]))),),
         ((JWT_ALICE, 200), (Request(jwt={**ALICE, "iss": "https://j.test"}), 403))),
    Case("request-principals-issuer-suffix", (_ap(_allow(_from(requestPrincipals=["*.test/alice"]))),),
         ((JWT_ALICE, 200), (Request(jwt={**ALICE, "sub": "bob"}), 403))),
    Case("request-principals-subject-suffix", (_ap(_allow(_from(requestPrincipals=["*ice"]))),),
         ((JWT_ALICE, 200), (Request(jwt={**ALICE, "sub": "bob"}), 403))),
    Case("request-principals-subject-prefix", (_ap(_allow(_from(requestPrincipals=["https://i.test/al*"]))),),
         ((JWT_ALICE, 200), (Request(jwt={**ALICE, "sub": "bob"}), 403))),
    # Istio splits at the last '/', so in "https://i*" the issuer is "https:" + "/" and the subject "i*"
    Case("request-principals-split-at-the-last-slash", (_ap(_allow(_from(requestPrincipals=["https://i*"]))),),
         ((JWT_ALICE, 403), (Request(jwt={"iss": "https:/", "sub": "issuer"}), 200))),
    Case("deny-not-request-principals-requires-a-token", (_ap(_deny(_from(notRequestPrincipals=["*"]))),),
         ((JWT_ALICE, 200), (ME, 403))),
    Case("when-request-principal", (_ap(_allow(_when("request.auth.principal", ["https://i.test/alice"]))),),
         ((JWT_ALICE, 200), (ME, 403))),
    Case("claims-list-holds-the-value", (_ap(_allow(_when("request.auth.claims[groups]", ["admins"]))),),
         ((JWT_ALICE, 200), (Request(jwt={**ALICE, "groups": ["dev"]}), 403), (ME, 403),
          (Request(jwt={**ALICE, "groups": "admins"}), 200))),
    Case("claims-values-are-ored", (_ap(_allow(_when("request.auth.claims[groups]", ["ops", "adm*"]))),),
         ((JWT_ALICE, 200), (Request(jwt={**ALICE, "groups": ["dev"]}), 403))),
    Case("claims-not-values", (_ap(_deny(_when("request.auth.claims[groups]", not_values=["admins"]))),),
         ((JWT_ALICE, 200), (Request(jwt={**ALICE, "groups": ["dev"]}), 403), (ME, 403))),
    Case("claims-nested", (_ap(_allow(_when("request.auth.claims[org][team]", ["payments"]))),),
         ((JWT_ALICE, 200), (Request(jwt={**ALICE, "org": {"team": "web"}}), 403),
          (Request(jwt={**ALICE, "org": "payments"}), 403))),
    Case("claims-name-with-a-dot-is-one-name", (_ap(_allow(_when("request.auth.claims[a.b]", ["c"]))),),
         ((Request(jwt={**ALICE, "a.b": "c"}), 200), (Request(jwt={**ALICE, "a": {"b": "c"}}), 403))),
    Case("audiences", (_ap(_allow(_when("request.auth.audiences", ["orders"]))),),
         ((JWT_ALICE, 200), (Request(jwt={**ALICE, "aud": "orders"}), 200), (Request(jwt={**ALICE, "aud": "x"}), 403))),
    Case("presenter", (_ap(_allow(_when("request.auth.presenter", ["web-app"]))),),
         ((JWT_ALICE, 200), (Request(jwt={**ALICE, "azp": "cli"}), 403))),
    # connection attributes (connSNIGenerator, destIPGenerator)
    Case("when-connection-sni", (_ap(_deny(_when("connection.sni", ["*.server.ns.svc.cluster.local"]))),),
         ((ME, 403), (Request(sni="outbound_.8080_._.other.ns.svc.cluster.local"), 200))),
    Case("when-destination-ip", (_ap(_allow(_when("destination.ip", ["127.11.0.0/24"]))),),
         ((ME, 200), (Request(destination_ip="127.12.0.2"), 403))),
    # istio.io/dry-run (builder.go): evaluated in shadow_rules, never enforced
    Case("dry-run-deny-enforces-nothing", (_dry_run(_ap(_deny({}))),), ((ME, 200), (PLAINTEXT, 200))),
    Case("dry-run-allow-enforces-nothing", (_dry_run(_ap(_allow(_from(principals=[FRONTEND])))),), ((OTHER, 200),)),
    Case("dry-run-beside-an-enforced-policy", (_dry_run(_ap(_deny({}), name="d")), _ap(_deny(_to(paths=["/x"])))),
         ((ME, 200), (Request(path="/x"), 403))),
    Case("dry-run-false-is-enforced", (_dry_run(_ap(_deny({})), "false"),), ((ME, 403),)),
    Case("dry-run-not-a-bool-is-enforced", (_dry_run(_ap(_deny({})), "yes"),), ((ME, 403),)),
    # targetRef(s) attach only to Gateway API gateways and waypoints (policyattachment.go), never to a sidecar
    Case("target-ref-never-applies-to-a-sidecar",
         (_ap({"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}]}),),
         ((ME, 200),)),
    Case("target-ref-service-never-applies-to-a-sidecar",
         (_ap({"targetRef": {"kind": "Service", "group": "", "name": "server"}, "action": "DENY", "rules": [{}]}),),
         ((ME, 200),)),
    # defects
    Case("defect-ignore-authz-deny", (_ap(_deny({})),), ((ME, 200),), frozenset({Defect.IGNORE_AUTHZ_DENY})),
    Case("defect-ignore-authz-allow", (_ap(_allow(_from(principals=[FRONTEND]))),), ((OTHER, 200),),
         frozenset({Defect.IGNORE_AUTHZ_ALLOW})),
    Case("defect-allow-nothing-allows", (_ap({}),), ((ME, 200), (PLAINTEXT, 200)),
         frozenset({Defect.ALLOW_NOTHING_ALLOWS})),
    Case("defect-allow-nothing-allows-keeps-deny", (_ap(_deny({})),), ((ME, 403),),
         frozenset({Defect.ALLOW_NOTHING_ALLOWS})),
    Case("defect-ignore-principal-rules", (_ap(_allow(_from(principals=[FRONTEND]))),),
         ((OTHER, 200), (PLAINTEXT, 200)), frozenset({Defect.IGNORE_PRINCIPAL_RULES})),
    Case("defect-ignore-principal-rules-keeps-namespaces", (_ap(_allow(_from(namespaces=["ns"]))),),
         ((STRANGER, 403),), frozenset({Defect.IGNORE_PRINCIPAL_RULES})),
    Case("defect-deny-after-allow",
         (_ap(_allow(_from(principals=[FRONTEND]), _to(paths=["/open"])), name="a"),
          _ap(_deny(_to(paths=["/private/*", "/open"])), name="d")),
         ((Request(path="/private/x"), 200), (Request(peer=OTHER.peer, path="/private/x"), 403),
          (Request(peer=OTHER.peer, path="/open"), 200), (OTHER, 403), (ME, 200)),
         frozenset({Defect.DENY_AFTER_ALLOW})),
    Case("defect-deny-after-allow-without-allow-denies", (_ap(_deny(_to(paths=["/private/*"]))),),
         ((Request(path="/private/x"), 403), (ME, 200)), frozenset({Defect.DENY_AFTER_ALLOW})),
    Case("defect-dry-run-enforced", (_dry_run(_ap(_deny({}))),), ((ME, 403),), frozenset({Defect.DRY_RUN_ENFORCED})),
    Case("defect-trust-domain-aliases-ignored", (_ap(_allow(_from(principals=["td1/ns/ns/sa/frontend"]))),),
         ((ME, 403),), frozenset({Defect.TRUST_DOMAIN_ALIASES_IGNORED}), ("cluster.local", "td1")),
    Case("defect-claims-list-matched-as-string", (_ap(_allow(_when("request.auth.claims[groups]", ["admins"]))),),
         ((JWT_ALICE, 403), (Request(jwt={**ALICE, "groups": "admins"}), 200)),
         frozenset({Defect.CLAIMS_LIST_MATCHED_AS_STRING})),
    Case("defect-path-prefix-matches-bare-prefix", (_ap(_deny(_to(paths=["/admin/*"]))),),
         ((Request(path="/admin/x"), 403), (Request(path="/admin"), 403), (Request(path="/administrator"), 200)),
         frozenset({Defect.PATH_PREFIX_MATCHES_BARE_PREFIX})),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_verdicts(case: Case) -> None:
    decide = _decide(case)
    got = [(request, decide(request)) for request, _ in case.verdicts]
    assert got == list(case.verdicts)


def test_no_policy_means_pass_through_filters_in_deny_then_allow_order() -> None:
    filters = rbac_filters(ConfigStore(), _server(), "cluster.local", NONE)
    assert list(filters) == [DENY_FILTER, ALLOW_FILTER] == ["istio.rbac.deny", "istio.rbac.allow"]
    assert all(f == {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}
               for f in filters.values())


def test_policies_are_named_as_istio_names_them() -> None:
    store = ConfigStore()
    store.put(_ap(_deny(_to(paths=["/a"]), _to(paths=["/b"])), name="block"))
    filters = rbac_filters(store, _server(), "cluster.local", NONE)
    rules = filters[DENY_FILTER]["rules"]
    assert rules["action"] == "DENY"
    assert sorted(rules["policies"]) == ["ns[ns]-policy[block]-rule[0]", "ns[ns]-policy[block]-rule[1]"]
    assert "rules" not in filters[ALLOW_FILTER]


def test_principal_matchers_are_what_istio_generates() -> None:
    """matcher.StringMatcherWithPrefix and srcNamespaceGenerator write their regexes without escaping."""
    store = ConfigStore()
    store.put(_ap(_allow(_from(principals=[FRONTEND, "*/sa/x.y"], namespaces=["a.b"]))))
    policy = rbac_filters(store, _server(), "cluster.local", NONE)[ALLOW_FILTER]["rules"]["policies"]
    (principal,) = policy["ns[ns]-policy[p]-rule[0]"]["principals"]
    principals, namespaces = principal["and_ids"]["ids"]
    assert principals["or_ids"]["ids"] == [
        {"authenticated": {"principal_name": {"exact": "spiffe://cluster.local/ns/ns/sa/frontend"}}},
        {"authenticated": {"principal_name": {"safe_regex": {"regex": "spiffe://.*/sa/x.y"}}}},
    ]
    assert namespaces["or_ids"]["ids"] == [
        {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/a.b/.*"}}}},
    ]


def test_request_principals_and_claims_are_what_istio_generates() -> None:
    """requestPrincipalGenerator (iss AND sub, split at the last '/') and requestClaimGenerator (a list holding
    the value OR the value: MetadataListValueMatcherForJWTClaims with useExtendedJwt), as in Istio's
    builder testdata extended-allow-full-rule-out.yaml."""
    store = ConfigStore()
    store.put(_ap(_allow({**_from(requestPrincipals=["https://i.test/alice"]),
                          **_when("request.auth.claims[org][team]", ["a", "b"])})))
    policy = rbac_filters(store, _server(), "cluster.local", NONE)[ALLOW_FILTER]["rules"]["policies"]
    (principal,) = policy["ns[ns]-policy[p]-rule[0]"]["principals"]
    request_principal, claim = principal["and_ids"]["ids"]
    payload = {"filter": "envoy.filters.http.jwt_authn"}
    assert request_principal == {"and_ids": {"ids": [
        {"metadata": {**payload, "path": [{"key": "payload"}, {"key": "iss"}],
                      "value": {"string_match": {"exact": "https://i.test"}}}},
        {"metadata": {**payload, "path": [{"key": "payload"}, {"key": "sub"}],
                      "value": {"string_match": {"exact": "alice"}}}},
    ]}}
    values = {"or_match": {"value_matchers": [{"string_match": {"exact": "a"}}, {"string_match": {"exact": "b"}}]}}
    assert claim == {"metadata": {**payload, "path": [{"key": "payload"}, {"key": "org"}, {"key": "team"}],
                                  "value": {"or_match": {"value_matchers": [{"list_match": {"one_of": values}},
                                                                            values]}}}}


def test_dry_run_policies_go_to_shadow_rules_with_istios_stat_prefix() -> None:
    """builder.go: an enforced and a dry-run policy of one action share a filter (testdata dry-run-mix-out.yaml)."""
    store = ConfigStore()
    store.put(_dry_run(_ap(_allow(_to(paths=["/allow"])), name="httpbin-1")))
    store.put(_ap(_allow(_to(paths=["/another"])), name="httpbin-2"))
    store.put(_dry_run(_ap(_deny(_to(paths=["/deny"])), name="d")))
    filters = rbac_filters(store, _server(), "cluster.local", NONE)
    allow, deny = filters[ALLOW_FILTER], filters[DENY_FILTER]
    assert list(allow["rules"]["policies"]) == ["ns[ns]-policy[httpbin-2]-rule[0]"]
    assert list(allow["shadow_rules"]["policies"]) == ["ns[ns]-policy[httpbin-1]-rule[0]"]
    assert allow["shadow_rules"]["action"] == "ALLOW" and allow["shadow_rules_stat_prefix"] == "istio_dry_run_allow_"
    assert "rules" not in deny  # only a dry-run DENY policy: nothing is enforced
    assert deny["shadow_rules_stat_prefix"] == "istio_dry_run_deny_"
    assert list(deny["shadow_rules"]["policies"]) == ["ns[ns]-policy[d]-rule[0]"]


def test_path_templates_use_envoys_uri_template_matcher() -> None:
    """pathGenerator + matcher.PathTemplateMatcher: {*} -> *, {**} -> **, in envoy.path.match.uri_template."""
    store = ConfigStore()
    store.put(_ap(_deny(_to(paths=["/api/{*}/x/{**}"]))))
    policy = rbac_filters(store, _server(), "cluster.local", NONE)[DENY_FILTER]["rules"]["policies"]
    (permission,) = policy["ns[ns]-policy[p]-rule[0]"]["permissions"]
    (paths,) = permission["and_rules"]["rules"]
    assert paths["or_rules"]["rules"] == [{"uri_template": {"name": "uri-template", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
        "path_template": "/api/*/x/**"}}}]


# -- what the local mesh refuses, and how ---------------------------------------------------------------


def test_custom_is_refused_because_the_local_mesh_has_no_ext_authz() -> None:
    with pytest.raises(UnsupportedError, match=r"spec.action='CUSTOM' is supported by Istio, not by the local mesh: "
                                               r"CUSTOM delegates to an ext_authz provider"):
        check_supported(_ap({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{}]}))


@pytest.mark.parametrize(
    "spec",
    [
        {"targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}},
        {"targetRefs": [{"kind": "Service", "group": "", "name": "s", "namespace": "ns"}]},
        _allow(_from(requestPrincipals=["iss/sub"], notRequestPrincipals=["x/y"])),
        _allow(_from(serviceAccounts=["sa"], notServiceAccounts=["ns/other"])),
        _allow(_from(trustDomains=["td"], notTrustDomains=["*.bad"], remoteIpBlocks=["10.0.0.0/8"])),
        _allow(_to(paths=["/api/{*}/x", "/b/{**}"], notPaths=["/c/{*}"])),
        _allow(_when("request.auth.claims[iss]", ["x"]), _when("request.auth.claims[a][b]", ["y"])),
        _allow(_when("request.auth.audiences", ["a"]), _when("request.auth.presenter", ["p"]),
               _when("request.auth.principal", ["i/s"])),
        _allow(_when("source.serviceAccount", ["ns/sa"]), _when("source.trustDomain", ["td"])),
        _allow(_when("connection.sni", ["*.example.com"]), _when("destination.ip", ["10.0.0.1"])),
        _allow(_when("experimental.envoy.filters.http.jwt_authn[payload]", ["[x]"])),
        {"action": "AUDIT", "rules": [{}]},
    ],
    ids=["target-ref", "target-refs", "request-principals", "service-accounts", "trust-domains", "path-templates",
         "claims", "request-auth", "source-attributes", "connection", "experimental", "audit"],
)
def test_every_field_istio_accepts_is_accepted(spec: dict[str, Any]) -> None:
    check_supported(_ap(spec))


def test_dry_run_policies_are_accepted() -> None:
    check_supported(_dry_run(_ap(_deny({}))))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"action": "DENY"}, r"spec.rules: a DENY policy without rules never matches"),
        (_allow({"from": []}), r"spec.rules\[0\].from: must not be empty"),
        (_allow({"from": [{"source": {}}]}), r"spec.rules\[0\].from\[0\].source: must not be empty"),
        (_allow({"to": [{"operation": {}}]}), r"spec.rules\[0\].to\[0\].operation: must not be empty"),
        (_allow(_from(ipBlocks=["10.0.0.300"])), r"source.ipBlocks\[0\]: '10.0.0.300' is not an IP address"),
        (_allow(_from(notIpBlocks=["10.0.0.0/40"])), r"source.notIpBlocks\[0\]"),
        (_allow(_to(ports=["http"])), r"operation.ports\[0\]: 'http' is not a port number"),
        (_allow(_to(methods=[""])), r"operation.methods\[0\]: must not be an empty string"),
        (_allow(_when("source.ip", ["nope"])), r"when\[0\].values\[0\]: 'nope' is not an IP address"),
        (_allow(_when("destination.port", not_values=["99999"])), r"when\[0\].notValues\[0\]"),
        (_allow(_when("source.principal")), r"when\[0\]: at least one of values or notValues"),
        (_allow(_when("request.headers", ["x"])), r"bad key \(request.headers\): should have format a\[b\]"),
        (_allow(_when("request.auth.claims[]", ["x"])), r"bad key"),
        (_allow(_when("destination.labels[app]", ["x"])), r"is replaced by the workload selector"),
        (_allow(_when("destination.namespace", ["x"])), r"is replaced by the metadata.namespace"),
        (_allow(_when("source.user", ["x"])), r"unknown attribute 'source.user'"),
        (_allow(_from(serviceAccounts=["a*"])), r"serviceAccounts\[0\]: wildcard not allowed"),
        (_allow(_from(serviceAccounts=["a/b/c"])), r"expected format 'serviceAccount' or 'namespace/serviceAccount'"),
        (_allow(_from(serviceAccounts=["/b"])), r"expected format"),
        (_allow(_from(serviceAccounts=[f"sa{i}" for i in range(17)])), r"may not have more than 16 values"),
        (_allow(_when("source.serviceAccount", ["a*"])), r"wildcard not allowed"),
        (_allow(_from(trustDomains=["a*b"])), r"wildcard is only allowed at the start or end"),
        (_allow(_from(trustDomains=["*a*"])), r"at most one wildcard"),
        (_allow(_from(notTrustDomains=["td/x"])), r"trust domain must not contain '/'"),
        (_allow(_to(paths=["/a/{**}/{*}"])), r"\{\*\*\} is not the last operator"),
        (_allow(_to(paths=["/a/{x}"])), r"contains '\{' or '\}' beyond a supported template"),
        (_allow(_to(notPaths=["/a/{*}/b c"])), r"segment 'b c' is not a valid literal"),
        ({"action": "ALLOW", "provider": {"name": "ext"}, "rules": [{}]},
         r"spec.provider: `provider` must not be with non CUSTOM action, found ALLOW"),
        ({"action": "CUSTOM", "provider": {"name": "ext"}}, r"CUSTOM action without `rules` is meaningless"),
        ({"action": "CUSTOM", "rules": [{}]}, r"spec.provider.name: must not be empty"),
        ({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [_from(principals=["a"])]},
         r"principals: is currently not supported with CUSTOM action"),
    ],
    ids=["deny-without-rules", "empty-from", "empty-source", "empty-operation", "bad-ip", "bad-cidr", "bad-port",
         "empty-value", "bad-when-ip", "bad-when-port", "when-without-values", "header-without-name",
         "claim-without-name", "destination-labels", "destination-namespace", "unknown-attribute",
         "service-account-wildcard", "service-account-format", "service-account-empty-namespace",
         "service-accounts-over-16", "when-service-account-wildcard", "trust-domain-inner-wildcard",
         "trust-domain-two-wildcards", "trust-domain-slash", "template-any-not-last", "template-unknown-operator",
         "template-bad-literal", "provider-without-custom", "custom-without-rules", "custom-without-provider",
         "custom-with-principals"],
)
def test_invalid_policies_are_refused_as_istio_refuses_them(spec: dict[str, Any], message: str) -> None:
    """pkg/config/validation/validation.go ValidateAuthorizationPolicy, pkg/config/security/security.go."""
    with pytest.raises(ManifestError, match=message) as raised:
        check_supported(_ap(spec))
    assert not isinstance(raised.value, UnsupportedError)
