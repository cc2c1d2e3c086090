"""Istio's admission checks for AuthorizationPolicy and RequestAuthentication that its CRD schema cannot express.

``pkg/config/validation/validation.go`` (ValidateAuthorizationPolicy, ValidateRequestAuthentication,
validateJwtRule) and ``pkg/config/security/security.go`` (ValidateAttribute, CheckServiceAccount,
CheckValidPathTemplate, ParseJwksURI) of Istio 1.28; ``trustDomains`` / ``notTrustDomains`` and
``source.trustDomain``, which the shipped CRD has and Istio 1.28 does not, as Istio 1.30 checks them
(CheckTrustDomainValues). A document Istio's webhook would refuse is a ManifestError naming the field.
``action: CUSTOM`` passes Istio's checks and is then refused: the local mesh has no ext_authz provider; so is
RequestAuthentication's ``presence``, which the CRD has and no Istio control plane implements.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from conformance.errors import ManifestError, UnsupportedError
from conformance.istio import doc_ref

__all__ = ["validate_authorization_policy", "validate_request_authentication"]

_SOURCE_FIELDS = ("principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks",
                  "remoteIpBlocks", "notRemoteIpBlocks", "requestPrincipals", "notRequestPrincipals",
                  "serviceAccounts", "notServiceAccounts", "trustDomains", "notTrustDomains")
_OPERATION_FIELDS = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths", "ports", "notPorts")
_ATTRIBUTES = re.compile(
    r"request\.headers(?P<header>.*)|request\.auth\.(principal|audiences|presenter)|request\.auth\.claims(?P<claim>.*)"
    r"|source\.(ip|namespace|serviceAccount|principal|trustDomain)|remote\.ip|destination\.(ip|port)"
    r"|connection\.sni|experimental\.envoy\.filters\.(?P<experimental>.*)"
)
"""The ``when`` keys ValidateAttribute accepts (``source.trustDomain`` as Istio 1.30)."""
_REPLACED = {"destination.namespace": "is replaced by the metadata.namespace",
             "destination.name": "is deprecated: only supported in v1alpha1",
             "destination.user": "is deprecated: only supported in v1alpha1"}
_PATH_LITERAL = re.compile(r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]+")
"""A path segment of a path template: RFC 3986 pchar (security.validLiteral)."""
_HEADER_NAME = re.compile(r"[-_A-Za-z0-9]+")
"""ValidateStrictHTTPHeaderName."""


def _failer(doc: Mapping[str, Any]) -> Callable[[str, str], ManifestError]:
    ref = doc_ref(doc)

    def fail(path: str, reason: str) -> ManifestError:
        return ManifestError(f"{ref}: {path}: {reason} (Istio's validation refuses it)")

    return fail


def validate_authorization_policy(doc: Mapping[str, Any]) -> None:
    """Raise ManifestError where Istio's validating webhook would refuse ``doc``, naming the field; then
    UnsupportedError for ``action: CUSTOM``."""
    spec = doc.get("spec") or {}
    fail = _failer(doc)
    action = spec.get("action") or "ALLOW"
    if action == "CUSTOM":
        if spec.get("rules") is None:
            raise fail("spec.rules", "CUSTOM action without `rules` is meaningless as it will never be triggered")
        if not (spec.get("provider") or {}).get("name"):
            raise fail("spec.provider.name", "must not be empty")
    elif spec.get("provider") is not None:
        raise fail("spec.provider", f"`provider` must not be with non CUSTOM action, found {action}")
    if action == "DENY" and spec.get("rules") is None:
        raise fail("spec.rules", "a DENY policy without rules never matches; use `rules: [{}]` to deny all")
    for i, rule in enumerate(spec.get("rules") or []):
        _validate_rule(fail, f"spec.rules[{i}]", rule or {}, action)
    if action == "CUSTOM":
        raise UnsupportedError(f"{doc_ref(doc)}: spec.action='CUSTOM' is supported by Istio, not by the local mesh: "
                               "CUSTOM delegates to an ext_authz provider, which the local mesh does not implement")


def _validate_rule(fail: Callable[[str, str], ManifestError], at: str, rule: Mapping[str, Any], action: str) -> None:
    for side, inner, fields in (("from", "source", _SOURCE_FIELDS), ("to", "operation", _OPERATION_FIELDS)):
        items = rule.get(side)
        if items is not None and not items:
            raise fail(f"{at}.{side}", "must not be empty")
        for j, item in enumerate(items or []):
            body = (item or {}).get(inner)
            path = f"{at}.{side}[{j}].{inner}"
            if not body or not any(body.get(f) for f in fields):
                raise fail(path, "must not be empty")
            if action == "CUSTOM":
                for name in ("namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts", "principals",
                             "notPrincipals", "requestPrincipals", "notRequestPrincipals", "trustDomains",
                             "notTrustDomains"):
                    if body.get(name):
                        raise fail(f"{path}.{name}", "is currently not supported with CUSTOM action")
            for name, values in body.items():
                _check_values(fail, f"{path}.{name}", name, values)
    for j, condition in enumerate(rule.get("when") or []):
        key = str((condition or {}).get("key") or "")
        path = f"{at}.when[{j}]"
        if not key:
            raise fail(f"{path}.key", "`key` must not be empty")
        if not condition.get("values") and not condition.get("notValues"):
            raise fail(path, f"at least one of values or notValues must be set for key {key}")
        _check_attribute(fail, f"{path}.key", key)
        if action == "CUSTOM" and (key in ("source.namespace", "source.serviceAccount", "source.principal")
                                   or key.startswith("request.auth.")):
            raise fail(f"{path}.key", f"{key} is currently not supported with CUSTOM action")
        for name in ("values", "notValues"):
            _check_values(fail, f"{path}.{name}", key, condition.get(name))


def _check_attribute(fail: Callable[[str, str], ManifestError], path: str, key: str) -> None:
    if key in _REPLACED:
        raise fail(path, f"attribute {key} {_REPLACED[key]}")
    if key.startswith("destination.labels"):
        raise fail(path, f"attribute {key} is replaced by the workload selector")
    found = _ATTRIBUTES.fullmatch(key)
    if not found:
        raise fail(path, f"unknown attribute {key!r}")
    bracketed = next((v for v in found.group("header", "claim", "experimental") if v is not None), None)
    if bracketed is not None and not _map_key(key):
        raise fail(path, f"bad key ({key}): should have format a[b]")


def _map_key(key: str) -> bool:
    """security.validateMapKey: ``a[b]`` with a non-empty name between the first ``[`` and a final ``]``."""
    opening = key.find("[")
    return key.endswith("]") and 0 < opening < len(key) - 2


def _check_values(fail: Callable[[str, str], ManifestError], path: str, kind: str, values: Any) -> None:
    values = [str(v) for v in values or []]
    for k, text in enumerate(values):
        at = f"{path}[{k}]"
        if not text:
            raise fail(at, "must not be an empty string")
        if kind in ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks", "source.ip", "remote.ip",
                    "destination.ip"):
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise fail(at, f"{text!r} is not an IP address or CIDR range") from None
        elif kind in ("ports", "notPorts", "destination.port") and not (text.isdigit() and int(text) <= 65535):
            raise fail(at, f"{text!r} is not a port number (0-65535)")
        elif kind in ("serviceAccounts", "notServiceAccounts", "source.serviceAccount"):
            _check_service_account(fail, at, text, len(values))
        elif kind in ("trustDomains", "notTrustDomains", "source.trustDomain"):
            _check_wildcard(fail, at, text, no_slash=kind != "source.trustDomain")
        elif kind in ("paths", "notPaths"):
            _check_path_template(fail, at, text)


def _check_service_account(fail: Callable[[str, str], ManifestError], at: str, text: str, count: int) -> None:
    """security.CheckServiceAccount."""
    if count > 16:
        raise fail(at.rsplit("[", 1)[0], "may not have more than 16 values")
    if "*" in text:
        raise fail(at, f"wildcard not allowed: {text!r}")
    namespace, slash, account = text.partition("/")
    if text.count("/") > 1 or (slash and (not namespace or not account)):
        raise fail(at, f"expected format 'serviceAccount' or 'namespace/serviceAccount', found {text!r}")
    if len(text) > 320:
        raise fail(at, "value cannot exceed 320 characters")


def _check_wildcard(fail: Callable[[str, str], ManifestError], at: str, text: str, no_slash: bool) -> None:
    """security.CheckWildcardValues / CheckTrustDomainValues (Istio 1.30)."""
    stars = text.count("*")
    if stars > 1:
        raise fail(at, f"at most one wildcard is allowed: {text!r}")
    if stars == 1 and text != "*" and not text.startswith("*") and not text.endswith("*"):
        raise fail(at, f"wildcard is only allowed at the start or end: {text!r}")
    if no_slash and "/" in text:
        raise fail(at, f"trust domain must not contain '/': {text!r}")


def _check_path_template(fail: Callable[[str, str], ManifestError], at: str, path: str) -> None:
    """security.CheckValidPathTemplate: ``{*}`` and ``{**}`` are whole segments, ``{**}`` only last."""
    template = "{*}" in path or "{**}" in path
    any_seen = False
    for segment in path.strip("/").split("/"):
        if segment in ("{*}", "{**}") and not any_seen:
            any_seen = segment == "{**}"
            continue
        if segment in ("{*}", "{**}"):
            raise fail(at, f"invalid or unsupported path {path}: {{**}} is not the last operator")
        if "{" in segment or "}" in segment:
            raise fail(at, f"invalid or unsupported path {path}: contains '{{' or '}}' beyond a supported template")
        if template and not _PATH_LITERAL.fullmatch(segment):
            raise fail(at, f"invalid or unsupported path {path}: segment {segment!r} is not a valid literal")


def validate_request_authentication(doc: Mapping[str, Any]) -> None:
    """Raise ManifestError where Istio's validateJwtRule would refuse ``doc``, naming the field."""
    fail = _failer(doc)
    for i, rule in enumerate((doc.get("spec") or {}).get("jwtRules") or []):
        rule = rule or {}
        at = f"spec.jwtRules[{i}]"
        for k, audience in enumerate(rule.get("audiences") or []):
            if not audience:
                raise fail(f"{at}.audiences[{k}]", "audience must be non-empty string")
        uri = rule.get("jwksUri") or rule.get("jwks_uri") or ""
        if not rule.get("issuer") and not uri:
            raise fail(at, "issuer or jwksUri must be non-empty string")
        if uri and urlsplit(str(uri)).scheme not in ("http", "https"):
            raise fail(f"{at}.jwksUri", f"URI scheme {urlsplit(str(uri)).scheme!r} is not supported")
        if rule.get("jwks"):
            _check_jwks(fail, f"{at}.jwks", str(rule["jwks"]))
        for k, location in enumerate(rule.get("fromHeaders") or []):
            if not (location or {}).get("name"):
                raise fail(f"{at}.fromHeaders[{k}].name", "location header name must be non-empty string")
        for name, what in (("fromParams", "location query"), ("fromCookies", "cookie name")):
            for k, value in enumerate(rule.get(name) or []):
                if not value:
                    raise fail(f"{at}.{name}[{k}]", f"{what} must be non-empty string")
        for k, output in enumerate(rule.get("outputClaimToHeaders") or []):
            output = output or {}
            if not output.get("claim") or not output.get("header"):
                raise fail(f"{at}.outputClaimToHeaders[{k}]", "header and claim value must be non-empty string")
            if not _HEADER_NAME.fullmatch(str(output["header"])):
                raise fail(f"{at}.outputClaimToHeaders[{k}].header",
                           f"header name {output['header']} is not a valid header name")
    for i, rule in enumerate((doc.get("spec") or {}).get("jwtRules") or []):
        if "presence" in (rule or {}):
            # in the shipped CRD (Istio's main branch) but not in Istio 1.28's API, and no istiod reads it
            # (pilot/pkg/security/authn builds nothing from it): refused, never silently ignored
            raise UnsupportedError(f"{doc_ref(doc)}: field spec.jwtRules[{i}].presence is not implemented by Istio "
                                   "1.28's control plane, nor by the local mesh; require a token with an "
                                   "AuthorizationPolicy (requestPrincipals) instead")


def _check_jwks(fail: Callable[[str, str], ManifestError], at: str, text: str) -> None:
    """jwk.Parse: a JWK Set (``{"keys": [...]}``) or a single JWK, each with a ``kty``."""
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise fail(at, f"jwks parse error: {exc}") from None
    keys = parsed.get("keys") if isinstance(parsed, dict) and "keys" in parsed else [parsed]
    if not isinstance(keys, list) or not all(isinstance(k, dict) and k.get("kty") for k in keys):
        raise fail(at, "jwks parse error: every key needs a 'kty'")
