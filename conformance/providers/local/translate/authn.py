"""RequestAuthentication -> Envoy's ``jwt_authn`` filter, ahead of the RBAC filters, as Istio builds it.

``pilot/pkg/security/authn/policy_applier.go`` (convertToEnvoyJwtConfig) of Istio 1.28:

- The RequestAuthentications that apply to a workload are chosen as AuthorizationPolicies are (its namespace and
  the root namespace, by selector; ``targetRef(s)`` never attach to a sidecar or a non-Gateway-API gateway,
  policyattachment.go). Their ``jwtRules`` are merged and sorted by issuer; rule ``i`` is provider
  ``origins-<i>``.
- Each provider: ``issuer``, ``audiences``, ``forward`` (``forwardOriginalToken``), ``forward_payload_header``
  (``outputPayloadToHeader``), ``claim_to_headers`` (``outputClaimToHeaders``), ``from_headers`` (name and
  value prefix), ``from_params``, ``from_cookies`` (none of them: Envoy reads ``Authorization: Bearer`` and the
  ``access_token`` parameter), the verified payload in metadata under ``payload`` (what AuthorizationPolicy's
  request principals and claims match, rbac.py), the claims ``permission``, ``scope`` and
  ``spaceDelimitedClaims`` split at spaces, and ``clear_route_cache`` on gateways.
- The keys: ``jwks`` inline as it is; otherwise istiod fetches ``jwksUri`` (or the issuer's OpenID discovery
  document), with the rule's ``timeout`` (default 5 s), and inlines what it got; when it cannot, a JWKS that no
  token verifies against (``FakeJwks``), so tokens are rejected rather than trusted (``PILOT_JWT_ENABLE_REMOTE_JWKS``
  defaults to istiod fetching). The local mesh's control plane does the same (``MeshView.jwks``).
- The requirement: each provider OR ``allow_missing``, so a request without a token passes and one with a token
  that fails verification (bad signature, expired, unknown issuer, wrong audience) gets 401; with several
  providers, any single provider OR all of them (each OR ``allow_missing``). Only an AuthorizationPolicy can
  require a token. CORS preflight requests are let through.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from conformance.providers.local.defects import Defect
from conformance.providers.local.model import ROOT_NAMESPACE, ConfigStore, Resource, Workload
from conformance.providers.local.translate.admission import validate_request_authentication
from conformance.providers.local.translate.context import MeshView
from conformance.providers.local.translate.destination import duration

__all__ = ["JWT_FILTER_NAME", "applicable_request_authentications", "jwt_filter", "validate_request_authentication"]

JWT_FILTER_NAME = "envoy.filters.http.jwt_authn"
_JWT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
_DEFAULT_TIMEOUT_S = 5.0


def applicable_request_authentications(store: ConfigStore, workload: Workload) -> list[Resource]:
    """RequestAuthentications that apply to ``workload`` (model.getConfigsForWorkload), oldest first."""
    namespaces = dict.fromkeys((workload.namespace, ROOT_NAMESPACE))
    return sorted(
        (p for ns in namespaces for p in store.of_kind("RequestAuthentication", ns)
         if not (p.spec.get("targetRefs") or p.spec.get("targetRef")) and (p.selector is None or p.selects(workload))),
        key=lambda p: p.order,
    )


def jwt_filter(view: MeshView, workload: Workload, gateway: bool) -> dict[str, Any] | None:
    """The ``jwt_authn`` HTTP filter for ``workload`` (None when no RequestAuthentication applies to it)."""
    rules = [rule or {} for policy in applicable_request_authentications(view.store, workload)
             for rule in policy.spec.get("jwtRules") or []]
    if not rules:
        return None
    rules.sort(key=lambda rule: str(rule.get("issuer") or ""))  # policy_applier.go: by issuer, stable
    providers = {f"origins-{i}": _provider(view, rule, gateway) for i, rule in enumerate(rules)}
    return {"name": JWT_FILTER_NAME, "typed_config": {
        "@type": _JWT_TYPE,
        "providers": providers,
        "rules": [{"match": {"prefix": "/"}, "requires": _requirement(list(providers), view.defects)}],
        "bypass_cors_preflight": True,
    }}


def _requirement(names: list[str], defects: frozenset[Defect]) -> dict[str, Any]:
    """{provider OR allow_missing}; several: OR(each provider, AND(each {provider OR allow_missing}))."""
    if Defect.MISSING_TOKEN_DENIED in defects:  # a token is required: no allow_missing anywhere
        alone = [{"provider_name": name} for name in names]
        return alone[0] if len(alone) == 1 else {"requires_any": {"requirements": alone}}
    lenient = "allow_missing_or_failed" if Defect.JWT_SIGNATURE_UNCHECKED in defects else "allow_missing"
    each = [{"requires_any": {"requirements": [{"provider_name": name}, {lenient: {}}]}} for name in names]
    if len(each) == 1:
        return each[0]
    return {"requires_any": {"requirements": [*({"provider_name": name} for name in names),
                                              {"requires_all": {"requirements": each}}]}}


def _provider(view: MeshView, rule: Mapping[str, Any], gateway: bool) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "payload_in_metadata": "payload",
        "normalize_payload_in_metadata": {"space_delimited_claims": _space_delimited(rule)},
        "local_jwks": {"inline_string": _jwks(view, rule)},
    }
    if rule.get("issuer"):
        provider["issuer"] = str(rule["issuer"])
    if rule.get("audiences"):
        provider["audiences"] = [str(a) for a in rule["audiences"]]
    if rule.get("forwardOriginalToken"):
        provider["forward"] = True
    if rule.get("outputPayloadToHeader"):
        provider["forward_payload_header"] = str(rule["outputPayloadToHeader"])
    if gateway:
        provider["clear_route_cache"] = True
    if rule.get("outputClaimToHeaders"):
        provider["claim_to_headers"] = [{"header_name": str(o["header"]), "claim_name": str(o["claim"])}
                                        for o in rule["outputClaimToHeaders"]]
    if rule.get("fromHeaders"):
        provider["from_headers"] = [{"name": str(h["name"]), **({"value_prefix": str(h["prefix"])}
                                                                if h.get("prefix") else {})}
                                    for h in rule["fromHeaders"]]
    if rule.get("fromParams"):
        provider["from_params"] = [str(p) for p in rule["fromParams"]]
    if rule.get("fromCookies"):
        provider["from_cookies"] = [str(c) for c in rule["fromCookies"]]
    return provider


def _space_delimited(rule: Mapping[str, Any]) -> list[str]:
    """buildSpaceDelimitedClaims: ``permission`` and ``scope`` always, plus the rule's own, sorted."""
    extra = rule.get("spaceDelimitedClaims")
    if extra is None:
        return ["permission", "scope"]
    return sorted({*(str(c) for c in extra), "permission", "scope"})


def _jwks(view: MeshView, rule: Mapping[str, Any]) -> str:
    """JwksResolver.BuildLocalJwks: inline ``jwks``, else what the control plane fetched, else a JWKS that
    verifies nothing."""
    if rule.get("jwks"):
        return str(rule["jwks"])
    uri = str(rule.get("jwksUri") or rule.get("jwks_uri") or "")
    timeout_s = float(duration(rule.get("timeout"), _DEFAULT_TIMEOUT_S).removesuffix("s"))
    fetched = view.jwks(str(rule.get("issuer") or ""), uri, timeout_s) if view.jwks is not None else None
    return fetched if fetched is not None else unverifiable_jwks()


@functools.cache
def unverifiable_jwks() -> str:
    """A JWKS holding one public key whose private key nobody has (it is made here and dropped): no token
    verifies against it, as none does against Istio's FakeJwks."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return json.dumps({"keys": [{**json.loads(RSAAlgorithm.to_jwk(key)), "kid": "meshconf-no-key", "alg": "RS256"}]})
