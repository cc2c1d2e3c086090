"""AuthorizationPolicy -> the two RBAC filters of a sidecar's inbound HTTP chains, with Istio's semantics.

Which policies apply to a workload: those in its namespace whose selector matches it (or that have none), and
those in the root namespace likewise (without a selector: mesh-wide). Evaluation, as Istio orders it: any
DENY match -> 403; then, if any ALLOW policy applies, the request must match one of their rules, else 403.
AUDIT policies are accepted and change nothing.

One policy rule becomes one Envoy RBAC policy: its ``from`` items are the policy's principals and its ``to``
items its permissions (Envoy ORs each list and ANDs the two); a ``when`` condition is ANDed into every item of
the side it belongs to; the fields of one source or operation are ANDed; the values of one field are ORed;
``notX`` is NOT(any of X). A policy without rules matches nothing, so an empty ALLOW policy denies everything.
Principals and namespaces match the peer certificate's URI SAN: a plaintext caller has none and never matches.

The two filter configs are inline in the inbound listener (an Envoy file subscription per filter would cost
an inotify instance each): a policy change re-creates the filter chains, new connections see it at once and
kept-alive ones once Envoy has drained them (``--drain-strategy immediate``, within ``DRAIN_TIME_S``).
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from conformance.errors import ManifestError, UnsupportedError
from conformance.istio import doc_ref
from conformance.providers.local.defects import Defect
from conformance.providers.local.model import ROOT_NAMESPACE, ConfigStore, Resource, Workload
from conformance.providers.local.translate.inbound import RBAC_FILTERS, pass_through_rbac

__all__ = ["ALLOW_FILTER", "DENY_FILTER", "applicable_policies", "rbac_filters", "validate_authorization_policy"]

DENY_FILTER, ALLOW_FILTER = RBAC_FILTERS
_SPIFFE = "spiffe://"
_DEFAULT_TRUST_DOMAIN = "cluster.local"
"""In a policy, ``cluster.local`` stands for the mesh's own trust domain (as Istio rewrites it)."""
_HEADER_KEY = re.compile(r"request\.headers\[(.+)\]")

Matcher = dict[str, Any]


def applicable_policies(store: ConfigStore, workload: Workload) -> list[Resource]:
    """AuthorizationPolicies that apply to ``workload``, oldest first."""
    namespaces = dict.fromkeys((ROOT_NAMESPACE, workload.namespace))
    return sorted(
        (p for ns in namespaces for p in store.of_kind("AuthorizationPolicy", ns)
         if p.selector is None or p.selects(workload)),
        key=lambda p: p.order,
    )


def rbac_filters(store: ConfigStore, workload: Workload, trust_domain: str,
                 defects: frozenset[Defect]) -> dict[str, dict[str, Any]]:
    """The typed configs (``envoy.extensions.filters.http.rbac.v3.RBAC``) of the DENY and the ALLOW filter,
    by filter name, in evaluation order."""
    policies = applicable_policies(store, workload)
    deny = [p for p in policies if _action(p) == "DENY" and Defect.IGNORE_AUTHZ_DENY not in defects]
    allow = [p for p in policies if _action(p) == "ALLOW" and Defect.IGNORE_AUTHZ_ALLOW not in defects]
    translator = _Translator(trust_domain, defects)
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
    config = pass_through_rbac()
    if policies:
        rbac_policies: dict[str, Any] = {}
        for policy in policies:
            rbac_policies.update(translator.policies(policy, action))
        config["rules"] = {"action": action, "policies": rbac_policies}
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


# -- Envoy's boolean algebra, for principals and for permissions ------------------------------------------


@dataclass(frozen=True)
class _Side:
    """The key names of one side of an Envoy RBAC policy (principals or permissions)."""

    and_key: str
    or_key: str
    list_key: str
    not_key: str

    def all_of(self, items: list[Matcher]) -> Matcher:
        return {self.and_key: {self.list_key: items or [{"any": True}]}}

    def any_of(self, items: list[Matcher]) -> Matcher:
        return {self.or_key: {self.list_key: items}}

    def never(self) -> Matcher:
        return self.negate({"any": True})

    def negate(self, item: Matcher) -> Matcher:
        return {self.not_key: item}

    def field(self, make: Callable[[str], Matcher], values: Iterable[str] | None,
              not_values: Iterable[str] | None) -> list[Matcher]:
        """Istio's reading of one field: any of ``values``, and none of ``not_values`` (each if given)."""
        out = []
        if values:
            out.append(self.any_of([make(str(v)) for v in values]))
        if not_values:
            out.append({self.not_key: self.any_of([make(str(v)) for v in not_values])})
        return out


PRINCIPALS = _Side("and_ids", "or_ids", "ids", "not_id")
PERMISSIONS = _Side("and_rules", "or_rules", "rules", "not_rule")
_MATCH_NEVER = {"permissions": [PERMISSIONS.never()], "principals": [PRINCIPALS.never()]}
_MATCH_ALWAYS = {"permissions": [{"any": True}], "principals": [{"any": True}]}


# -- string matchers, as Istio builds them from values with a leading or trailing '*' ---------------------


def _quote(text: str) -> str:
    """RE2-safe escaping of regex metacharacters (what Go's regexp.QuoteMeta escapes)."""
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", text)


def _string(value: str, prefix: str = "", ignore_case: bool = False) -> Matcher:
    """``*`` = any non-empty value, ``*x`` = suffix, ``x*`` = prefix, else exact; ``prefix`` is prepended."""
    matcher: Matcher
    if value == "*":
        matcher = {"safe_regex": {"regex": ".+"}}
    elif value.startswith("*"):
        matcher = ({"suffix": value[1:]} if not prefix
                   else {"safe_regex": {"regex": _quote(prefix) + ".*" + _quote(value[1:])}})
    elif value.endswith("*"):
        matcher = {"prefix": prefix + value[:-1]}
    else:
        matcher = {"exact": prefix + value}
    if ignore_case:
        matcher["ignore_case"] = True
    return matcher


def _header(name: str, value: str, ignore_case: bool = False) -> Matcher:
    if value == "*":
        return {"name": name, "present_match": True}
    return {"name": name, "string_match": _string(value, ignore_case=ignore_case)}


def _cidr(value: str) -> Matcher:
    network = ipaddress.ip_network(value, strict=False)
    address = value.split("/", 1)[0]
    return {"address_prefix": address, "prefix_len": network.prefixlen}


# -- one policy rule -> one Envoy policy ------------------------------------------------------------------


@dataclass(frozen=True)
class _Translator:
    trust_domain: str
    defects: frozenset[Defect]

    def policies(self, policy: Resource, action: str) -> dict[str, Any]:
        rules = policy.spec.get("rules") or []
        if not rules:
            allow_all = action == "ALLOW" and Defect.ALLOW_NOTHING_ALLOWS in self.defects
            return {_policy_name(policy, 0): _MATCH_ALWAYS if allow_all else _MATCH_NEVER}
        return {_policy_name(policy, i): self.rule(rule or {}) for i, rule in enumerate(rules)}

    def rule(self, rule: Mapping[str, Any]) -> dict[str, Any]:
        when_principal: list[Matcher] = []
        when_permission: list[Matcher] = []
        for condition in rule.get("when") or []:
            side, make = self._attribute(str(condition["key"]))
            found = side.field(make, condition.get("values"), condition.get("notValues"))
            (when_principal if side is PRINCIPALS else when_permission).extend(found)
        principals = [
            PRINCIPALS.all_of([*self._source(item.get("source") or {}), *when_principal])
            for item in rule.get("from") or [{}]
        ]
        permissions = [
            PERMISSIONS.all_of([*self._operation(item.get("operation") or {}), *when_permission])
            for item in rule.get("to") or [{}]
        ]
        return {"permissions": permissions, "principals": principals}

    def _source(self, source: Mapping[str, Any]) -> list[Matcher]:
        principal = _anyone if Defect.IGNORE_PRINCIPAL_RULES in self.defects else self._principal
        return [
            *PRINCIPALS.field(principal, source.get("principals"), None),
            *PRINCIPALS.field(self._principal, None, source.get("notPrincipals")),
            *PRINCIPALS.field(self._namespace, source.get("namespaces"), source.get("notNamespaces")),
            *PRINCIPALS.field(_direct_ip, source.get("ipBlocks"), source.get("notIpBlocks")),
            *PRINCIPALS.field(_remote_ip, source.get("remoteIpBlocks"), source.get("notRemoteIpBlocks")),
        ]

    def _operation(self, operation: Mapping[str, Any]) -> list[Matcher]:
        return [
            *PERMISSIONS.field(_host, operation.get("hosts"), operation.get("notHosts")),
            *PERMISSIONS.field(_method, operation.get("methods"), operation.get("notMethods")),
            *PERMISSIONS.field(self._path, operation.get("paths"), operation.get("notPaths")),
            *PERMISSIONS.field(_port, operation.get("ports"), operation.get("notPorts")),
        ]

    def _attribute(self, key: str) -> tuple[_Side, Callable[[str], Matcher]]:
        header = _HEADER_KEY.fullmatch(key)
        if header:
            name = header.group(1)
            return PRINCIPALS, lambda value: {"header": _header(name, value)}
        found: dict[str, tuple[_Side, Callable[[str], Matcher]]] = {
            "source.principal": (PRINCIPALS, self._principal),
            "source.namespace": (PRINCIPALS, self._namespace),
            "source.ip": (PRINCIPALS, _direct_ip),
            "remote.ip": (PRINCIPALS, _remote_ip),
            "destination.port": (PERMISSIONS, _port),
        }
        # support.py admits only these keys, so anything else is a bug here, not bad input
        return found[key]

    def _path(self, value: str) -> Matcher:
        """Istio: ``/p/*`` is the prefix ``/p/`` (matcher.StringMatcher), so it never matches ``/p`` itself."""
        matcher = {"url_path": {"path": _string(value)}}
        if Defect.PATH_PREFIX_MATCHES_BARE_PREFIX in self.defects and value.endswith("/*") and len(value) > 2:
            return PERMISSIONS.any_of([matcher, {"url_path": {"path": {"exact": value[:-2]}}}])
        return matcher

    def _principal(self, value: str) -> Matcher:
        """``cluster.local/ns/a/sa/b`` (Istio drops ``spiffe://``); ``cluster.local`` means this trust domain."""
        parts = value.split("/")
        if len(parts) == 5 and parts[0] == _DEFAULT_TRUST_DOMAIN:
            value = "/".join([self.trust_domain, *parts[1:]])
        return {"authenticated": {"principal_name": _string(value, prefix=_SPIFFE)}}

    @staticmethod
    def _namespace(value: str) -> Matcher:
        pattern = ".*".join(_quote(part) for part in value.split("*"))
        return {"authenticated": {"principal_name": {"safe_regex": {"regex": f".*/ns/{pattern}/.*"}}}}


def _anyone(_value: str) -> Matcher:
    return {"any": True}


def _direct_ip(value: str) -> Matcher:
    return {"direct_remote_ip": _cidr(value)}


def _remote_ip(value: str) -> Matcher:
    return {"remote_ip": _cidr(value)}


def _host(value: str) -> Matcher:
    return {"header": _header(":authority", value, ignore_case=True)}


def _method(value: str) -> Matcher:
    return {"header": _header(":method", value)}




def _port(value: str) -> Matcher:
    return {"destination_port": int(value)}


# -- Istio's admission checks that its CRD schema cannot express -------------------------------------------

_SOURCE_FIELDS = ("principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks",
                  "remoteIpBlocks", "notRemoteIpBlocks", "requestPrincipals", "notRequestPrincipals",
                  "serviceAccounts", "notServiceAccounts", "trustDomains", "notTrustDomains")
_OPERATION_FIELDS = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths", "ports", "notPorts")
_VALUE_KINDS = {
    **dict.fromkeys(("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks",
                     "source.ip", "remote.ip", "destination.ip"), "ip"),
    **dict.fromkeys(("ports", "notPorts", "destination.port"), "port"),
}
_DRY_RUN = "istio.io/dry-run"
_ISTIO_ATTRIBUTES = re.compile(
    r"request\.headers\[.+\]|request\.auth\.(principal|audiences|presenter)|request\.auth\.claims\[.+\]"
    r"|source\.(ip|namespace|serviceAccount|principal|trustDomain)|remote\.ip|destination\.(ip|port)"
    r"|connection\.sni|experimental\.envoy\.filters\..+\[.+\]"
)
"""The ``when`` keys Istio knows (its ``ValidateAttribute``); the local mesh implements a subset (support.py)."""


def validate_authorization_policy(doc: Mapping[str, Any]) -> None:
    """Raise ManifestError where Istio's validating webhook would refuse ``doc``, naming the field (and
    UnsupportedError for the dry-run annotation, which lives outside the spec that support.py walks).

    Covers what the CRD schema cannot say: DENY without rules, empty sources and operations, empty values,
    malformed IP blocks and ports, unknown ``when`` keys and conditions without values.
    """
    spec = doc.get("spec") or {}
    ref = doc_ref(doc)
    if _DRY_RUN in ((doc.get("metadata") or {}).get("annotations") or {}):
        # a dry-run policy is only evaluated (shadow rules), never enforced: enforcing it would be wrong
        raise UnsupportedError(f"{ref}: annotation metadata.annotations[{_DRY_RUN!r}] is supported by Istio, "
                               "not by the local mesh")

    def fail(path: str, reason: str) -> ManifestError:
        return ManifestError(f"{ref}: {path}: {reason} (Istio's validation refuses it)")

    if spec.get("action") == "DENY" and not spec.get("rules"):
        raise fail("spec.rules", "a DENY policy without rules never matches; use `rules: [{}]` to deny all")
    for i, rule in enumerate(spec.get("rules") or []):
        at = f"spec.rules[{i}]"
        for side, inner, fields in (("from", "source", _SOURCE_FIELDS), ("to", "operation", _OPERATION_FIELDS)):
            items = (rule or {}).get(side)
            if items is not None and not items:
                raise fail(f"{at}.{side}", "must not be empty")
            for j, item in enumerate(items or []):
                body = (item or {}).get(inner)
                if not body or not any(body.get(f) for f in fields):
                    raise fail(f"{at}.{side}[{j}].{inner}", "must not be empty")
                for name, values in body.items():
                    _check_values(fail, f"{at}.{side}[{j}].{inner}.{name}", _VALUE_KINDS.get(name), values)
        for j, condition in enumerate((rule or {}).get("when") or []):
            key = str(condition.get("key") or "")
            path = f"{at}.when[{j}]"
            if not _ISTIO_ATTRIBUTES.fullmatch(key):
                raise fail(f"{path}.key", f"unknown attribute {key!r}")
            if not condition.get("values") and not condition.get("notValues"):
                raise fail(path, f"at least one of values or notValues must be set for key {key}")
            for name in ("values", "notValues"):
                _check_values(fail, f"{path}.{name}", _VALUE_KINDS.get(key), condition.get(name))


def _check_values(fail: Callable[[str, str], ManifestError], path: str, kind: str | None, values: Any) -> None:
    for k, value in enumerate(values or []):
        text = str(value)
        if not text:
            raise fail(f"{path}[{k}]", "must not be an empty string")
        if kind == "ip":
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise fail(f"{path}[{k}]", f"{text!r} is not an IP address or CIDR range") from None
        if kind == "port" and not (text.isdigit() and int(text) <= 65535):
            raise fail(f"{path}[{k}]", f"{text!r} is not a port number (0-65535)")
