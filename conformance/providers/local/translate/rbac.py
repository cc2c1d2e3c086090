"""The Envoy RBAC vocabulary the AuthorizationPolicy translator builds with, as Istio's generators build it.

Boolean algebra on the two sides of an Envoy RBAC policy (principals and permissions), and the matchers of
``pilot/pkg/security/authz/matcher`` (string.go, header.go, metadata.go, template.go) and ``model/util.go``:
string matchers from values with a leading or trailing ``*``, header and host matchers, CIDR ranges, path
templates, and metadata matchers over the JWT payload that ``jwt_authn`` writes (``payload_in_metadata``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from conformance.providers.local.envoy import any_config

__all__ = [
    "JWT_FILTER",
    "JWT_PAYLOAD",
    "PERMISSIONS",
    "PRINCIPALS",
    "Matcher",
    "cidr",
    "header",
    "host",
    "jwt_claim",
    "jwt_claim_string",
    "path_template",
    "string_matcher",
    "string_or",
]

Matcher = dict[str, Any]
JWT_FILTER = "envoy.filters.http.jwt_authn"
"""The dynamic-metadata namespace of the verified JWT payload (filters.EnvoyJwtFilterName)."""
JWT_PAYLOAD = "payload"
"""The key of the payload in it (filters.EnvoyJwtFilterPayload)."""


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
        """Istio's reading of one field (model.go rule.principal / rule.permission): any of ``values``, and
        none of ``not_values`` (each if given)."""
        out = []
        if values:
            out.append(self.any_of([make(str(v)) for v in values]))
        if not_values:
            out.append(self.negate(self.any_of([make(str(v)) for v in not_values])))
        return out

    def extended(self, make: Callable[[list[str]], Matcher], values: Sequence[str] | None,
                 not_values: Sequence[str] | None) -> list[Matcher]:
        """An "extended" field, whose generator builds one matcher from all its values (request principals,
        audiences, presenter, claims): that matcher, and NOT the one of ``not_values``."""
        out = []
        if values:
            out.append(make([str(v) for v in values]))
        if not_values:
            out.append(self.negate(make([str(v) for v in not_values])))
        return out


PRINCIPALS = _Side("and_ids", "or_ids", "ids", "not_id")
PERMISSIONS = _Side("and_rules", "or_rules", "rules", "not_rule")


def string_matcher(value: str, prefix: str = "", ignore_case: bool = False) -> Matcher:
    """matcher.StringMatcherWithPrefix: ``*`` = any non-empty value, ``*x`` = suffix, ``x*`` = prefix, else
    exact; ``prefix`` is prepended (a suffix with a prefix becomes the regex ``prefix.*x``, unescaped, as Istio
    writes it)."""
    matcher: Matcher
    if value == "*":
        matcher = {"safe_regex": {"regex": ".+"}}
    elif value.startswith("*"):
        matcher = {"suffix": value[1:]} if not prefix else {"safe_regex": {"regex": prefix + ".*" + value[1:]}}
    elif value.endswith("*"):
        matcher = {"prefix": prefix + value[:-1]}
    else:
        matcher = {"exact": prefix + value}
    if ignore_case:
        matcher["ignore_case"] = True
    return matcher


def header(name: str, value: str, ignore_case: bool = False) -> Matcher:
    """matcher.HeaderMatcher (and HostMatcher with ``ignore_case``): ``*`` is presence."""
    if value == "*":
        return {"name": name, "present_match": True}
    return {"name": name, "string_match": string_matcher(value, ignore_case=ignore_case)}


def host(value: str) -> Matcher:
    return header(":authority", value, ignore_case=True)


def cidr(value: str) -> Matcher:
    """util.AddrStrToCidrRange: an address is a /32 (/128)."""
    network = ipaddress.ip_network(value, strict=False)
    return {"address_prefix": value.split("/", 1)[0], "prefix_len": network.prefixlen}


def path_template(value: str) -> Matcher:
    """matcher.PathTemplateMatcher + permissionPathTemplate: ``{*}`` -> ``*``, ``{**}`` -> ``**`` in Envoy's
    ``envoy.path.match.uri_template`` matcher."""
    template = value.replace("{**}", "**").replace("{*}", "*")
    return {"uri_template": {"name": "uri-template", "typed_config": any_config(
        "envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig", path_template=template)}}


def string_or(values: Sequence[str]) -> Matcher:
    """matcher.StringOrMatcher: a value matcher that matches any of ``values`` (each a string matcher)."""
    matchers = [{"string_match": string_matcher(v)} for v in values]
    return matchers[0] if len(matchers) == 1 else {"or_match": {"value_matchers": matchers}}


def jwt_claim(claims: Sequence[str], value: Matcher, list_aware: bool = True) -> Matcher:
    """model.MetadataListValueMatcherForJWTClaims: the claim at ``payload.<claims...>`` of the verified JWT.
    Istio matches it as a list that holds a matching element OR as a matching value (``useExtendedJwt``); with
    ``list_aware`` False only as a value (the claims-list-matched-as-string defect)."""
    if list_aware:
        value = {"or_match": {"value_matchers": [{"list_match": {"one_of": value}}, value]}}
    return {"filter": JWT_FILTER, "path": [{"key": key} for key in (JWT_PAYLOAD, *claims)], "value": value}


def jwt_claim_string(claim: str, string: Matcher) -> Matcher:
    """model.MetadataStringMatcherForJWTClaim: a top-level string claim (``iss``, ``sub``)."""
    return {"filter": JWT_FILTER, "path": [{"key": JWT_PAYLOAD}, {"key": claim}],
            "value": {"string_match": string}}
