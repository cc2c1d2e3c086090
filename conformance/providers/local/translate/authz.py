"""AuthorizationPolicy -> the two RBAC filters of a sidecar's (or gateway's) HTTP chains, with Istio's semantics.

Which policies apply to a workload (pilot/pkg/model/authorization.go, policyattachment.go): those in its
namespace whose selector matches it (or that have none), and those in the root namespace likewise (without a
selector: mesh-wide). A policy with ``targetRef(s)`` never applies to a sidecar or to a gateway deployed without
the Gateway API, which are all the local mesh has (ShouldAttachPolicy). Evaluation, as Istio orders it: any DENY
match -> 403; then, if any ALLOW policy applies, the request must match one of their rules, else 403. AUDIT
policies are accepted and change nothing (Envoy's LOG action only marks the request for access logs).

One policy rule becomes one Envoy RBAC policy (pilot/pkg/security/authz/model/model.go): its ``from`` items are
the policy's principals and its ``to`` items its permissions (Envoy ORs each list and ANDs the two); a ``when``
condition is ANDed into every item of the side it belongs to; the fields of one source or operation are ANDed;
the values of one field are ORed; ``notX`` is NOT(any of X). A policy without rules matches nothing, so an empty
ALLOW policy denies everything. Principals, namespaces, service accounts and trust domains match the peer
certificate's URI SAN, so a plaintext caller never matches them; request principals, audiences, presenter and
claims match the payload of a JWT that ``jwt_authn`` verified (authn.py), so a request without one never does.
Source principals are expanded with MeshConfig ``trustDomainAliases`` (trustdomain.py).

A policy annotated ``istio.io/dry-run: "true"`` goes into the filter's ``shadow_rules`` instead of its
``rules`` (builder.go): it is evaluated, never enforced, and Envoy counts what it would have done in
``rbac.istio_dry_run_{allow,deny}_shadow_{allowed,denied}``.

The two filter configs are inline in the inbound listener: a policy change re-creates the filter chains, new
connections see it at once and kept-alive ones once Envoy has drained them (``--drain-strategy immediate``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conformance.providers.local.defects import Defect
from conformance.providers.local.model import ROOT_NAMESPACE, ConfigStore, Resource, Workload
from conformance.providers.local.translate.admission import validate_authorization_policy
from conformance.providers.local.translate.inbound import RBAC_FILTERS, pass_through_rbac
from conformance.providers.local.translate.rbac import (
    PERMISSIONS,
    PRINCIPALS,
    Matcher,
    cidr,
    header,
    host,
    jwt_claim,
    jwt_claim_string,
    path_template,
    string_matcher,
    string_or,
)
from conformance.providers.local.translate.trustdomain import TrustDomainBundle

__all__ = ["ALLOW_FILTER", "DENY_FILTER", "applicable_policies", "is_dry_run", "rbac_filters",
           "validate_authorization_policy"]

DENY_FILTER, ALLOW_FILTER = RBAC_FILTERS
_SPIFFE = "spiffe://"
_DRY_RUN = "istio.io/dry-run"
_SHADOW_PREFIX = {"ALLOW": "istio_dry_run_allow_", "DENY": "istio_dry_run_deny_"}
"""model.RBACShadowRulesAllowStatPrefix / RBACShadowRulesDenyStatPrefix."""
_NESTED = re.compile(r"\[([^\[\]]*)\]")


def applicable_policies(store: ConfigStore, workload: Workload) -> list[Resource]:
    """AuthorizationPolicies that apply to ``workload``, oldest first."""
    namespaces = dict.fromkeys((ROOT_NAMESPACE, workload.namespace))
    return sorted(
        (p for ns in namespaces for p in store.of_kind("AuthorizationPolicy", ns)
         if not _targets(p) and (p.selector is None or p.selects(workload))),
        key=lambda p: p.order,
    )


def _targets(policy: Resource) -> bool:
    return bool(policy.spec.get("targetRefs") or policy.spec.get("targetRef"))


def is_dry_run(policy: Resource) -> bool:
    """builder.go isDryRun: the annotation read with Go's strconv.ParseBool (anything else: enforced)."""
    value = str(((policy.doc.get("metadata") or {}).get("annotations") or {}).get(_DRY_RUN, ""))
    return value in ("1", "t", "T", "TRUE", "true", "True")


def rbac_filters(store: ConfigStore, workload: Workload, trust_domains: tuple[str, ...] | str,
                 defects: frozenset[Defect]) -> dict[str, dict[str, Any]]:
    """The typed configs (``envoy.extensions.filters.http.rbac.v3.RBAC``) of the DENY and the ALLOW filter,
    by filter name, in evaluation order. ``trust_domains``: the mesh's, then its aliases."""
    domains = (trust_domains,) if isinstance(trust_domains, str) else trust_domains
    if Defect.TRUST_DOMAIN_ALIASES_IGNORED in defects:
        domains = domains[:1]
    policies = applicable_policies(store, workload)
    deny = [p for p in policies if _action(p) == "DENY" and Defect.IGNORE_AUTHZ_DENY not in defects]
    allow = [p for p in policies if _action(p) == "ALLOW" and Defect.IGNORE_AUTHZ_ALLOW not in defects]
    translator = _Translator(TrustDomainBundle(domains), defects)
    filters = {
        DENY_FILTER: _filter("DENY", deny, translator),
        ALLOW_FILTER: _filter("ALLOW", allow, translator),
    }
    if Defect.DENY_AFTER_ALLOW in defects and "rules" in filters[ALLOW_FILTER] and "rules" in filters[DENY_FILTER]:
        rules = filters[DENY_FILTER]["rules"]
        rules["policies"] = _unless_allowed(rules["policies"], filters[ALLOW_FILTER]["rules"]["policies"])
    return filters


def _action(policy: Resource) -> str:
    return str(policy.spec.get("action") or "ALLOW")


def _filter(action: str, policies: list[Resource], translator: _Translator) -> dict[str, Any]:
    """builder.go build + buildHTTP: enforced policies in ``rules``, dry-run ones in ``shadow_rules``."""
    config = pass_through_rbac()
    enforced: dict[str, Any] = {}
    shadow: dict[str, Any] = {}
    for policy in policies:
        dry_run = is_dry_run(policy) and Defect.DRY_RUN_ENFORCED not in translator.defects
        (shadow if dry_run else enforced).update(translator.policies(policy, action))
    if any(not (is_dry_run(p) and Defect.DRY_RUN_ENFORCED not in translator.defects) for p in policies):
        config["rules"] = {"action": action, "policies": enforced}
    if shadow:
        config["shadow_rules"] = {"action": action, "policies": shadow}
        config["shadow_rules_stat_prefix"] = _SHADOW_PREFIX[action]
    return config


def _unless_allowed(deny: dict[str, Any], allow: dict[str, Any]) -> dict[str, Any]:
    """The deny-after-allow defect: a deny rule holds only for requests that no allow rule admits. An Envoy
    policy matches when one of its permissions and one of its principals match, so NOT(allow rule) is NOT its
    principals OR NOT its permissions: one deny policy per choice, for every allow rule (2^n policies)."""
    allowed = list(allow.values())
    out: dict[str, Any] = {}
    for name, rule in deny.items():
        for i, choice in enumerate(itertools.product((PRINCIPALS, PERMISSIONS), repeat=len(allowed))):
            not_principals = [PRINCIPALS.negate(PRINCIPALS.any_of(a["principals"]))
                              for a, side in zip(allowed, choice, strict=True) if side is PRINCIPALS]
            not_permissions = [PERMISSIONS.negate(PERMISSIONS.any_of(a["permissions"]))
                               for a, side in zip(allowed, choice, strict=True) if side is PERMISSIONS]
            out[f"{name}-unless-allowed[{i}]"] = {
                "permissions": [PERMISSIONS.all_of([p, *not_permissions]) for p in rule["permissions"]],
                "principals": [PRINCIPALS.all_of([p, *not_principals]) for p in rule["principals"]],
            }
    return out


def _policy_name(policy: Resource, index: int) -> str:
    return f"ns[{policy.namespace}]-policy[{policy.name}]-rule[{index}]"


_MATCH_NEVER = {"permissions": [PERMISSIONS.never()], "principals": [PRINCIPALS.never()]}
_MATCH_ALWAYS = {"permissions": [{"any": True}], "principals": [{"any": True}]}

_Field = Callable[[Any, Any], list[Matcher]]
"""(values, notValues) -> the matchers of one field of a source, an operation or a ``when`` condition."""


@dataclass(frozen=True)
class _Translator:
    """One policy rule -> one Envoy RBAC policy (model.New + Generate)."""

    bundle: TrustDomainBundle
    defects: frozenset[Defect]

    def policies(self, policy: Resource, action: str) -> dict[str, Any]:
        rules = policy.spec.get("rules") or []
        if not rules:
            allow_all = action == "ALLOW" and Defect.ALLOW_NOTHING_ALLOWS in self.defects
            return {_policy_name(policy, 0): _MATCH_ALWAYS if allow_all else _MATCH_NEVER}
        return {_policy_name(policy, i): self.rule(rule or {}, policy.namespace) for i, rule in enumerate(rules)}

    def rule(self, rule: Mapping[str, Any], namespace: str) -> dict[str, Any]:
        when_principal: list[Matcher] = []
        when_permission: list[Matcher] = []
        for condition in rule.get("when") or []:
            principal_side, found = self._attribute(str(condition["key"]), namespace)
            (when_principal if principal_side else when_permission).extend(
                found(condition.get("values"), condition.get("notValues")))
        principals = [
            PRINCIPALS.all_of([*self._source(item.get("source") or {}, namespace), *when_principal])
            for item in rule.get("from") or [{}]
        ]
        permissions = [
            PERMISSIONS.all_of([*self._operation(item.get("operation") or {}), *when_permission])
            for item in rule.get("to") or [{}]
        ]
        return {"permissions": permissions, "principals": principals}

    def _source(self, source: Mapping[str, Any], namespace: str) -> list[Matcher]:
        principal = _anyone if Defect.IGNORE_PRINCIPAL_RULES in self.defects else self._principal
        return [
            *PRINCIPALS.field(principal, self._aliases(source.get("principals")), None),
            *PRINCIPALS.field(self._principal, None, self._aliases(source.get("notPrincipals"))),
            *PRINCIPALS.extended(_request_principals, source.get("requestPrincipals"),
                                 source.get("notRequestPrincipals")),
            *PRINCIPALS.field(lambda v: _service_account(namespace, v), source.get("serviceAccounts"),
                              source.get("notServiceAccounts")),
            *PRINCIPALS.field(_trust_domain, self._expand(source.get("trustDomains")),
                              self._expand(source.get("notTrustDomains"))),
            *PRINCIPALS.field(_namespace, source.get("namespaces"), source.get("notNamespaces")),
            *PRINCIPALS.field(_remote_ip, source.get("remoteIpBlocks"), source.get("notRemoteIpBlocks")),
            *PRINCIPALS.field(_direct_ip, source.get("ipBlocks"), source.get("notIpBlocks")),
        ]

    def _operation(self, operation: Mapping[str, Any]) -> list[Matcher]:
        return [
            *PERMISSIONS.field(_host, operation.get("hosts"), operation.get("notHosts")),
            *PERMISSIONS.field(_method, operation.get("methods"), operation.get("notMethods")),
            *PERMISSIONS.field(self._path, operation.get("paths"), operation.get("notPaths")),
            *PERMISSIONS.field(_port, operation.get("ports"), operation.get("notPorts")),
        ]

    def _attribute(self, key: str, namespace: str) -> tuple[bool, _Field]:
        """A ``when`` key -> (is it a principal, its field); model.go New, in its order."""
        def simple(side: Any, make: Callable[[str], Matcher]) -> _Field:
            return lambda values, not_values: side.field(make, values, not_values)

        def claims(side: Any, make: Callable[[list[str]], Matcher]) -> _Field:
            return lambda values, not_values: side.extended(make, values, not_values)

        if key == "destination.ip":
            return False, simple(PERMISSIONS, _destination_ip)
        if key == "destination.port":
            return False, simple(PERMISSIONS, _port)
        if key == "connection.sni":
            return False, simple(PERMISSIONS, _sni)
        if key.startswith("experimental.envoy.filters."):
            return False, claims(PERMISSIONS, lambda values: _envoy_filter(key, values))
        if key == "source.ip":
            return True, simple(PRINCIPALS, _direct_ip)
        if key == "remote.ip":
            return True, simple(PRINCIPALS, _remote_ip)
        if key == "source.namespace":
            return True, simple(PRINCIPALS, _namespace)
        if key == "source.serviceAccount":
            return True, simple(PRINCIPALS, lambda v: _service_account(namespace, v))
        if key == "source.principal":
            return True, lambda values, not_values: PRINCIPALS.field(
                self._principal, self._aliases(values), self._aliases(not_values))
        if key == "source.trustDomain":
            return True, lambda values, not_values: PRINCIPALS.field(
                _trust_domain, self._expand(values), self._expand(not_values))
        if key == "request.auth.principal":
            return True, claims(PRINCIPALS, _request_principals)
        if key == "request.auth.audiences":
            return True, claims(PRINCIPALS, lambda values: self._claim(["aud"], values))
        if key == "request.auth.presenter":
            return True, claims(PRINCIPALS, lambda values: self._claim(["azp"], values))
        if key.startswith("request.headers"):
            name = key.removeprefix("request.headers")[1:-1]
            return True, simple(PRINCIPALS, lambda v: {"header": header(name, v)})
        # request.auth.claims[...]: admission.py admits no other key
        path = _claim_path(key.removeprefix("request.auth.claims"))
        return True, claims(PRINCIPALS, lambda values: self._claim(path, values))

    def _claim(self, path: list[str], values: list[str]) -> Matcher:
        list_aware = Defect.CLAIMS_LIST_MATCHED_AS_STRING not in self.defects
        return {"metadata": jwt_claim(path, string_or(values), list_aware)}

    def _aliases(self, values: Any) -> list[str] | None:
        """Source principals with the trust-domain aliases (model.MigrateTrustDomain)."""
        return self.bundle.replace_aliases([str(v) for v in values]) if values else None

    def _expand(self, values: Any) -> list[str] | None:
        return self.bundle.expand([str(v) for v in values]) if values else None

    def _path(self, value: str) -> Matcher:
        """pathGenerator: a path template (``{*}``, ``{**}``) uses Envoy's URI template matcher; otherwise
        ``/p/*`` is the prefix ``/p/`` (matcher.StringMatcher), so it never matches ``/p`` itself."""
        if "{*}" in value or "{**}" in value:
            return path_template(value)
        matcher = {"url_path": {"path": string_matcher(value)}}
        if Defect.PATH_PREFIX_MATCHES_BARE_PREFIX in self.defects and value.endswith("/*") and len(value) > 2:
            return PERMISSIONS.any_of([matcher, {"url_path": {"path": {"exact": value[:-2]}}}])
        return matcher

    @staticmethod
    def _principal(value: str) -> Matcher:
        """srcPrincipalGenerator: ``cluster.local/ns/a/sa/b`` against the peer's ``spiffe://`` URI SAN."""
        return {"authenticated": {"principal_name": string_matcher(value, prefix=_SPIFFE)}}


def _claim_path(brackets: str) -> list[str]:
    """util.go extractNameInNestedBrackets: ``[a][b]`` -> [a, b]; anything else is one name: ``[a.b]`` -> [a.b]."""
    names = _NESTED.findall(brackets)
    if names and "".join(f"[{n}]" for n in names) == brackets:
        return names
    return [brackets[1:-1]]


def _request_principals(values: list[str]) -> Matcher:
    """requestPrincipalGenerator: ``iss/sub`` split at the last ``/`` into JWT claim matchers, ANDed per value."""
    any_value: Matcher = {"safe_regex": {"regex": ".+"}}
    match_iss: Matcher
    match_sub: Matcher
    ored = []
    for value in values:
        issuer, slash, subject = value.rpartition("/")
        if not slash:
            issuer, subject = value, ""
        if value == "*":
            match_iss, match_sub = any_value, any_value
        elif value.startswith("*"):
            if slash:
                match_iss = any_value if issuer == "*" else {"suffix": issuer[1:]}
                match_sub = {"exact": subject}
            else:
                match_iss, match_sub = any_value, {"suffix": value[1:]}
        elif value.endswith("*"):
            if slash:
                match_iss = {"exact": issuer}
                match_sub = any_value if subject == "*" else {"prefix": subject[:-1]}
            else:
                match_iss, match_sub = {"prefix": value[:-1]}, any_value
        else:
            match_iss, match_sub = {"exact": issuer}, {"exact": subject}
        ored.append(PRINCIPALS.all_of([{"metadata": jwt_claim_string("iss", match_iss)},
                                       {"metadata": jwt_claim_string("sub", match_sub)}]))
    return ored[0] if len(ored) == 1 else PRINCIPALS.any_of(ored)


def _service_account(namespace: str, value: str) -> Matcher:
    """srcServiceAccountGenerator (Istio 1.28: the name is not regex-escaped): ``sa`` (in the policy's
    namespace) or ``ns/sa``."""
    ns, slash, account = value.partition("/")
    if not slash:
        ns, account = namespace, value
    regex = f"spiffe://.+/ns/{ns}/(.+/|)sa/{account}(/.+)?"
    return {"authenticated": {"principal_name": {"safe_regex": {"regex": regex}}}}


def _trust_domain(value: str) -> Matcher:
    """srcTrustDomainGenerator (Istio 1.30)."""
    if value == "*":
        matcher: Matcher = {"prefix": _SPIFFE}
    elif "*" not in value:
        matcher = {"prefix": f"{_SPIFFE}{value}/"}
    else:
        before, _, after = value.partition("*")
        matcher = {"safe_regex": {"regex": f"spiffe://{re.escape(before)}[^/]*{re.escape(after)}/.*"}}
    return {"authenticated": {"principal_name": matcher}}


def _namespace(value: str) -> Matcher:
    """srcNamespaceGenerator: ``*`` becomes ``.*``; the rest is used as a regex as it is."""
    return {"authenticated": {"principal_name": {"safe_regex": {"regex": f".*/ns/{value.replace('*', '.*')}/.*"}}}}


def _anyone(_value: str) -> Matcher:
    return {"any": True}


def _direct_ip(value: str) -> Matcher:
    return {"direct_remote_ip": cidr(value)}


def _remote_ip(value: str) -> Matcher:
    return {"remote_ip": cidr(value)}


def _destination_ip(value: str) -> Matcher:
    return {"destination_ip": cidr(value)}


def _host(value: str) -> Matcher:
    return {"header": host(value)}


def _method(value: str) -> Matcher:
    return {"header": header(":method", value)}


def _port(value: str) -> Matcher:
    return {"destination_port": int(value)}


def _sni(value: str) -> Matcher:
    return {"requested_server_name": string_matcher(value)}


def _envoy_filter(key: str, values: list[str]) -> Matcher:
    """envoyFilterGenerator.extendedPermission: ``experimental.envoy.filters.a.b[c]`` is metadata ``c`` of
    filter ``envoy.filters.a.b``; a value ``[v]`` matches a list that holds ``v``."""
    filter_name, _, rest = key.removeprefix("experimental.").removesuffix("]").partition("[")
    matchers = [{"list_match": {"one_of": {"string_match": string_matcher(v[1:-1])}}}
                if v.startswith("[") and v.endswith("]") else {"string_match": string_matcher(v)} for v in values]
    value = matchers[0] if len(matchers) == 1 else {"or_match": {"value_matchers": matchers}}
    return {"metadata": {"filter": filter_name, "path": [{"key": rest}], "value": value}}
