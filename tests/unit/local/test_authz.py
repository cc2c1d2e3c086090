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


def _server() -> Workload:
    spec = ProbeSpec(service="server", namespace="ns", cluster="cluster1", ports=(8080, 9090))
    return Workload("w", spec, CLUSTER, "zone1", PodAddresses("127.11.0.2", "127.11.128.2"))


def _ap(spec: dict[str, Any], namespace: str = "ns", name: str = "p") -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


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
    trust_domain: str = "cluster.local"


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
    # Istio honours one wildcard, at one end: the trailing '*' here is literal
    Case("principal-wildcard-at-both-ends-is-a-suffix", (_ap(_allow(_from(principals=["*/sa/front*"]))),),
         ((ME, 403), (Request(peer="spiffe://cluster.local/ns/ns/sa/front*"), 200))),
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
    store = ConfigStore()
    store.put(_ap(_allow(_from(principals=[FRONTEND, "*/sa/x.y"], namespaces=["a.b"]))))
    policy = rbac_filters(store, _server(), "cluster.local", NONE)[ALLOW_FILTER]["rules"]["policies"]
    (principal,) = policy["ns[ns]-policy[p]-rule[0]"]["principals"]
    principals, namespaces = principal["and_ids"]["ids"]
    assert principals["or_ids"]["ids"] == [
        {"authenticated": {"principal_name": {"exact": "spiffe://cluster.local/ns/ns/sa/frontend"}}},
        {"authenticated": {"principal_name": {"safe_regex": {"regex": r"spiffe://.*/sa/x\.y"}}}},
    ]
    assert namespaces["or_ids"]["ids"] == [
        {"authenticated": {"principal_name": {"safe_regex": {"regex": r".*/ns/a\.b/.*"}}}},
    ]


# -- what the local mesh refuses, and how ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{}]},
         r"spec.action='CUSTOM' is supported by Istio"),
        ({"targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}},
         r"field spec.targetRef is supported by Istio, not by the local mesh"),
        ({"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}]},
         r"field spec.targetRefs is supported by Istio"),
        (_allow(_from(requestPrincipals=["iss/sub"])),
         r"field spec.rules\[0\].from\[0\].source.requestPrincipals is supported by Istio"),
        (_allow(_from(serviceAccounts=["sa"])), r"field spec.rules\[0\].from\[0\].source.serviceAccounts"),
        (_allow(_when("request.auth.claims[iss]", ["x"])),
         r"spec.rules\[0\].when\[0\].key='request.auth.claims\[iss\]' is supported by Istio, not by the local mesh"),
        (_allow(_when("source.serviceAccount", ["ns/sa"])), r"when\[0\].key='source.serviceAccount'"),
        (_allow(_to(paths=["/api/{*}/x"])), r"spec.rules\[0\].to\[0\].operation.paths\[0\]='/api/\{\*\}/x'"),
    ],
    ids=["custom", "target-ref", "target-refs", "request-principals", "service-accounts", "jwt-claim",
         "source-service-account", "path-template"],
)
def test_unsupported_fields_are_named(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedError, match=message):
        check_supported(_ap(spec))


def test_dry_run_policies_are_refused_not_enforced() -> None:
    doc = _ap(_deny({}))
    doc["metadata"]["annotations"] = {"istio.io/dry-run": "true"}
    with pytest.raises(UnsupportedError, match=r"metadata.annotations\['istio.io/dry-run'\] is supported by Istio"):
        check_supported(doc)


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
        (_allow(_when("request.headers", ["x"])), r"unknown attribute 'request.headers'"),
        (_allow(_when("destination.labels[app]", ["x"])), r"unknown attribute"),
    ],
    ids=["deny-without-rules", "empty-from", "empty-source", "empty-operation", "bad-ip", "bad-cidr", "bad-port",
         "empty-value", "bad-when-ip", "bad-when-port", "when-without-values", "header-without-name",
         "unknown-attribute"],
)
def test_invalid_policies_are_refused_as_istio_refuses_them(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message) as raised:
        check_supported(_ap(spec))
    assert not isinstance(raised.value, UnsupportedError)
