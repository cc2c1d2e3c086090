"""RequestAuthentication -> jwt_authn, as pilot/pkg/security/authn/policy_applier.go builds it (pure translation;
tests/integration/test_authentication.py holds the same semantics against real Envoy), Istio's admission
checks for it, and the schema walk that proves the local mesh accepts every AuthorizationPolicy and
RequestAuthentication field of Istio's CRDs but CUSTOM (and RequestAuthentication's ``presence``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.errors import ManifestError, UnsupportedError
from conformance.provider import ProbeSpec
from conformance.providers.local.addresses import PodAddresses
from conformance.providers.local.defects import Defect
from conformance.providers.local.model import ConfigStore, Registry, Workload
from conformance.providers.local.support import SUPPORTED, check_supported
from conformance.providers.local.translate.authn import jwt_filter, unverifiable_jwks
from conformance.providers.local.translate.context import MeshView
from conformance.topology import Cluster

CRD_FILE = Path(__file__).resolve().parents[3] / "conformance" / "istio" / "crd-all.gen.yaml"

CLUSTER = Cluster("cluster1", "network1", "region1", ("zone1",))
JWKS = json.dumps({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "k"}]})


def _server(labels: dict[str, str] | None = None) -> Workload:
    spec = ProbeSpec(service="server", namespace="ns", cluster="cluster1", labels=labels or {})
    return Workload("w", spec, CLUSTER, "zone1", PodAddresses("127.11.0.2", "127.11.128.2"))


def _ra(spec: dict[str, Any], namespace: str = "ns", name: str = "ra") -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _rule(issuer: str = "https://i.test", **fields: Any) -> dict[str, Any]:
    return {"issuer": issuer, "jwks": JWKS, **fields}


def _view(*docs: dict[str, Any], defects: frozenset[Defect] = frozenset(), jwks: Any = None) -> MeshView:
    store = ConfigStore()
    for doc in docs:
        check_supported(doc)  # every document here is valid, supported Istio
        store.put(doc)
    return MeshView(CLUSTER, store, Registry(), frozenset({"cluster1"}), "cluster.local", defects, jwks=jwks)


def _config(view: MeshView, workload: Workload | None = None, gateway: bool = False) -> dict[str, Any]:
    found = jwt_filter(view, workload or _server(), gateway)
    assert found is not None and found["name"] == "envoy.filters.http.jwt_authn"
    config: dict[str, Any] = found["typed_config"]
    assert config["@type"] == "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
    return config


def test_no_request_authentication_means_no_filter() -> None:
    assert jwt_filter(_view(), _server(), gateway=False) is None


def test_one_provider_with_istios_fields_and_allow_missing() -> None:
    config = _config(_view(_ra({"jwtRules": [_rule(
        audiences=["orders"], forwardOriginalToken=True, outputPayloadToHeader="x-jwt-payload",
        fromHeaders=[{"name": "x-token", "prefix": "Token "}, {"name": "x-raw"}], fromParams=["tok"],
        fromCookies=["session"], outputClaimToHeaders=[{"header": "x-sub", "claim": "sub"}],
        spaceDelimitedClaims=["roles"])]})))
    assert config["providers"] == {"origins-0": {
        "issuer": "https://i.test", "audiences": ["orders"], "forward": True, "forward_payload_header": "x-jwt-payload",
        "payload_in_metadata": "payload",
        "normalize_payload_in_metadata": {"space_delimited_claims": ["permission", "roles", "scope"]},
        "local_jwks": {"inline_string": JWKS},
        "claim_to_headers": [{"header_name": "x-sub", "claim_name": "sub"}],
        "from_headers": [{"name": "x-token", "value_prefix": "Token "}, {"name": "x-raw"}],
        "from_params": ["tok"], "from_cookies": ["session"],
    }}
    # a token, if present, must verify; a missing one passes (only AuthorizationPolicy can require one)
    assert config["rules"] == [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
        {"provider_name": "origins-0"}, {"allow_missing": {}}]}}}]
    assert config["bypass_cors_preflight"] is True


def test_defaults_leave_the_token_location_to_envoy_and_strip_the_token() -> None:
    """No fromHeaders/fromParams: Envoy reads Authorization: Bearer and access_token; forward defaults to false."""
    provider = _config(_view(_ra({"jwtRules": [_rule()]})))["providers"]["origins-0"]
    assert not {"from_headers", "from_params", "forward", "clear_route_cache"} & set(provider)
    assert provider["normalize_payload_in_metadata"] == {"space_delimited_claims": ["permission", "scope"]}


def test_gateways_clear_the_route_cache() -> None:
    """JwtFilter(clearRouteCache = proxy is not a sidecar)."""
    provider = _config(_view(_ra({"jwtRules": [_rule()]})), gateway=True)["providers"]["origins-0"]
    assert provider["clear_route_cache"] is True


def test_rules_of_all_policies_merge_sorted_by_issuer_and_any_one_or_all_lenient() -> None:
    config = _config(_view(_ra({"jwtRules": [_rule("https://z.test")]}, name="a"),
                           _ra({"jwtRules": [_rule("https://a.test"), _rule("https://m.test")]}, name="b")))
    assert [p["issuer"] for p in config["providers"].values()] == ["https://a.test", "https://m.test",
                                                                   "https://z.test"]
    lenient = [{"requires_any": {"requirements": [{"provider_name": f"origins-{i}"}, {"allow_missing": {}}]}}
               for i in range(3)]
    assert config["rules"][0]["requires"] == {"requires_any": {"requirements": [
        {"provider_name": "origins-0"}, {"provider_name": "origins-1"}, {"provider_name": "origins-2"},
        {"requires_all": {"requirements": lenient}}]}}


def test_which_request_authentications_apply() -> None:
    """getConfigsForWorkload + ShouldAttachPolicy: own namespace and root namespace, by selector; targetRef(s)
    never attach to a sidecar."""
    view = _view(
        _ra({"jwtRules": [_rule("https://mine.test")], "selector": {"matchLabels": {"app": "server"}}}, name="a"),
        _ra({"jwtRules": [_rule("https://other.test")], "selector": {"matchLabels": {"app": "other"}}}, name="b"),
        _ra({"jwtRules": [_rule("https://mesh.test")]}, namespace="istio-system", name="c"),
        _ra({"jwtRules": [_rule("https://elsewhere.test")]}, namespace="elsewhere", name="d"),
        _ra({"jwtRules": [_rule("https://target.test")],
             "targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}]}, name="e"),
    )
    assert [p["issuer"] for p in _config(view)["providers"].values()] == ["https://mesh.test", "https://mine.test"]


@pytest.mark.parametrize(("rule", "fetched", "expected"), [
    ({"issuer": "https://i.test", "jwksUri": "http://keys.ns.svc.cluster.local:8080/jwks"}, JWKS, JWKS),
    ({"issuer": "https://i.test"}, JWKS, JWKS),  # OpenID discovery from the issuer
    ({"issuer": "https://i.test", "jwksUri": "http://down.test/jwks"}, None, None),
])
def test_keys_come_from_the_control_planes_fetch_or_verify_nothing(rule: dict[str, Any], fetched: str | None,
                                                                    expected: str | None) -> None:
    """JwksResolver.BuildLocalJwks: what istiod fetched, inlined; FakeJwks when it could not."""
    asked: list[tuple[str, str, float]] = []

    def resolver(issuer: str, uri: str, timeout_s: float) -> str | None:
        asked.append((issuer, uri, timeout_s))
        return fetched

    provider = _config(_view(_ra({"jwtRules": [{**rule, "timeout": "2s"}]}), jwks=resolver))["providers"]["origins-0"]
    assert asked == [("https://i.test", rule.get("jwksUri", ""), 2.0)]
    assert provider["local_jwks"]["inline_string"] == (expected or unverifiable_jwks())
    if expected is None:
        (key,) = json.loads(unverifiable_jwks())["keys"]
        assert key["kty"] == "RSA" and "n" in key and "d" not in key  # a public key whose private key nobody has


def test_defect_missing_token_denied_requires_a_token() -> None:
    config = _config(_view(_ra({"jwtRules": [_rule()]}), defects=frozenset({Defect.MISSING_TOKEN_DENIED})))
    assert config["rules"][0]["requires"] == {"provider_name": "origins-0"}


def test_defect_jwt_signature_unchecked_lets_failed_tokens_through() -> None:
    config = _config(_view(_ra({"jwtRules": [_rule()]}), defects=frozenset({Defect.JWT_SIGNATURE_UNCHECKED})))
    assert config["rules"][0]["requires"] == {"requires_any": {"requirements": [
        {"provider_name": "origins-0"}, {"allow_missing_or_failed": {}}]}}


# -- admission --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "message"), [
    ({"jwks": JWKS}, r"spec.jwtRules\[0\]: issuer or jwksUri must be non-empty string"),
    (_rule(audiences=[""]), r"audiences\[0\]: audience must be non-empty string"),
    ({"issuer": "i", "jwksUri": "ftp://keys/jwks"}, r"jwksUri: URI scheme 'ftp' is not supported"),
    (_rule(jwks="{not json"), r"jwks: jwks parse error"),
    (_rule(jwks='{"keys": [{"n": "x"}]}'), r"jwks: jwks parse error: every key needs a 'kty'"),
    (_rule(fromHeaders=[{"name": ""}]), r"fromHeaders\[0\].name: location header name must be non-empty"),
    (_rule(fromParams=[""]), r"fromParams\[0\]: location query must be non-empty"),
    (_rule(fromCookies=[""]), r"fromCookies\[0\]: cookie name must be non-empty"),
    (_rule(outputClaimToHeaders=[{"header": "x", "claim": ""}]), r"header and claim value must be non-empty"),
    (_rule(outputClaimToHeaders=[{"header": "x y", "claim": "sub"}]), r"header name x y is not a valid header"),
], ids=["no-issuer", "empty-audience", "bad-scheme", "bad-jwks", "jwks-without-kty", "empty-header", "empty-param",
        "empty-cookie", "empty-claim", "bad-header"])
def test_invalid_request_authentications_are_refused_as_istio_refuses_them(rule: dict[str, Any], message: str) -> None:
    """pkg/config/validation/validation.go validateJwtRule."""
    with pytest.raises(ManifestError, match=message) as raised:
        check_supported(_ra({"jwtRules": [rule]}))
    assert not isinstance(raised.value, UnsupportedError)


def test_presence_is_refused_because_no_istio_control_plane_implements_it() -> None:
    with pytest.raises(UnsupportedError, match=r"spec.jwtRules\[0\].presence is not implemented by Istio 1.28"):
        check_supported(_ra({"jwtRules": [_rule(presence="REQUIRED")]}))


def test_jwks_uri_alias_and_a_single_jwk_are_accepted() -> None:
    check_supported(_ra({"jwtRules": [{"issuer": "i", "jwks_uri": "https://keys.test/jwks"},
                                      _rule(jwks=json.dumps({"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}))]}))


# -- every field of the CRDs --------------------------------------------------------------------------------

NOT_SUPPORTED = {
    ("AuthorizationPolicy", "spec.provider"): "only with action CUSTOM (ext_authz), which the local mesh refuses",
    ("AuthorizationPolicy", "spec.provider.name"): "only with action CUSTOM",
    ("RequestAuthentication", "spec.jwtRules.presence"): "not in Istio 1.28's API; no istiod implements it",
}


def _fields(schema: dict[str, Any], path: str) -> list[str]:
    found = [path]
    if schema.get("type") == "array":
        return [path, *_fields(schema["items"], path)[1:]]
    for name, sub in (schema.get("properties") or {}).items():
        found += _fields(sub, f"{path}.{name}")
    return found


def _supported(tree: Any, path: str) -> bool:
    node = tree
    for name in path.split(".")[1:]:
        if node is True:
            return True
        if not isinstance(node, dict):  # a set of values (enum): its field is supported
            return True
        node = node.get(name, node.get("*"))
        if node is None:
            return False
    return True


@pytest.mark.parametrize("kind", ["AuthorizationPolicy", "RequestAuthentication"])
def test_every_field_of_the_crd_is_supported_or_named_here(kind: str) -> None:
    """Walks ``conformance/istio/crd-all.gen.yaml`` (every served version): each field is in SUPPORTED, or in
    NOT_SUPPORTED with the reason; ``action: CUSTOM`` is the one enum value refused (with its own message)."""
    crds = [d for d in yaml.safe_load_all(CRD_FILE.read_text()) if d and d["spec"]["names"]["kind"] == kind]
    (crd,) = crds
    paths: set[str] = set()
    for version in crd["spec"]["versions"]:
        paths.update(_fields(version["schema"]["openAPIV3Schema"]["properties"]["spec"], "spec"))
    missing = sorted(p for p in paths if not _supported(SUPPORTED[kind], p) and (kind, p) not in NOT_SUPPORTED)
    assert not missing, f"{kind} fields neither supported nor refused with a reason: {missing}"
    stale = [p for (k, p) in NOT_SUPPORTED if k == kind and p not in paths]
    assert not stale
    if kind == "AuthorizationPolicy":
        enum = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["action"]
        assert set(enum["enum"]) - SUPPORTED[kind]["action"] == {"CUSTOM"}
