"""RequestAuthentication and the request-level AuthorizationPolicy fields on real Envoy, as Istio documents them.

pilot/pkg/security/authn/policy_applier.go (jwt_authn: a token that fails verification gets 401, a missing one
passes; forward, outputPayloadToHeader, outputClaimToHeaders, fromHeaders, fromParams, the JWKS that istiod
fetches), pilot/pkg/security/authz/model (requestPrincipals, request.auth.claims with nested and list claims),
builder.go (the istio.io/dry-run annotation and its istio_dry_run_* stats), trustdomain/bundle.go (MeshConfig
trustDomainAliases), gateway.go (numTrustedProxies). Tokens come from conformance.tokens (RS256 and ES256).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conformance.probe import CallResult
from conformance.provider import ProbeHandle, ProbeSpec
from conformance.providers.local.envoy import DRAIN_TIME_S
from conformance.providers.local.provider import LocalProvider
from conformance.tokens import TokenIssuer
from tests.integration.mesh import CLUSTERS, call, doc, eventually

pytestmark = pytest.mark.integration

WITHIN = DRAIN_TIME_S + 1.0
"""A kept-alive connection carries at most one more request on the previous filter chain."""


@dataclass
class Workloads:
    namespace: str
    server: ProbeHandle
    client: ProbeHandle
    outsider: ProbeHandle


@pytest.fixture(scope="module")
def workloads(local_mesh: LocalProvider) -> Iterator[Workloads]:
    namespace = f"authn-{secrets.token_hex(3)}"
    found = Workloads(namespace, local_mesh.deploy_probe(ProbeSpec("server", namespace, "cluster1")),
                      local_mesh.deploy_probe(ProbeSpec("client", namespace, "cluster1")),
                      local_mesh.deploy_probe(ProbeSpec("outsider", namespace, "cluster1", in_mesh=False)))
    yield found
    local_mesh.delete_namespace(namespace)


@pytest.fixture
def applied(local_mesh: LocalProvider) -> Iterator[list[dict[str, Any]]]:
    """Documents a test applies to every cluster; deleted when it ends."""
    docs: list[dict[str, Any]] = []
    yield docs
    local_mesh.delete(docs, CLUSTERS)


def _apply(mesh: LocalProvider, applied: list[dict[str, Any]], *docs: dict[str, Any]) -> None:
    applied.extend(docs)
    mesh.apply(list(docs), CLUSTERS)


def _ra(namespace: str, *rules: dict[str, Any], name: str = "jwt") -> dict[str, Any]:
    return doc("RequestAuthentication", name, namespace, {"selector": {"matchLabels": {"app": "server"}},
                                                          "jwtRules": list(rules)})


def _ap(namespace: str, spec: dict[str, Any], name: str = "policy") -> dict[str, Any]:
    return doc("AuthorizationPolicy", name, namespace, {"selector": {"matchLabels": {"app": "server"}}, **spec})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _calls(mesh: LocalProvider, w: Workloads, status: int, headers: dict[str, str] | None = None,
           path: str = "/", count: int = 3) -> CallResult:
    result = eventually(lambda: call(mesh, w.client, w.server.url(path), count, headers=headers or {}),
                        lambda r: r.statuses() == {status: count}, within_s=WITHIN)
    assert result.statuses() == {status: count}, result.summary()
    return result


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_a_token_that_fails_verification_gets_401_and_a_missing_one_passes(
        local_mesh: LocalProvider, workloads: Workloads, applied: list[dict[str, Any]], algorithm: str) -> None:
    issuer = TokenIssuer(f"https://{algorithm.lower()}.authn.test", algorithm)
    _apply(local_mesh, applied, _ra(workloads.namespace, {"issuer": issuer.issuer, "jwks": issuer.jwks}))
    valid = _calls(local_mesh, workloads, 200, _bearer(issuer.token("alice")))
    # forward defaults to false: jwt_authn strips the token before the app sees it
    assert all("authorization" not in r.request_headers for r in valid.responses)
    _calls(local_mesh, workloads, 200)
    for bad in (issuer.forged("alice"), issuer.token("alice", expires_in_s=-60),
                issuer.token("alice", issuer="https://other.authn.test")):
        rejected = _calls(local_mesh, workloads, 401, _bearer(bad))
        assert rejected.responses[0].body.startswith("Jwt"), rejected.summary()  # Envoy's jwt_authn answered


def test_only_an_authorization_policy_requires_a_token(local_mesh: LocalProvider, workloads: Workloads,
                                                       applied: list[dict[str, Any]]) -> None:
    issuer = TokenIssuer("https://require.authn.test")
    _apply(local_mesh, applied, _ra(workloads.namespace, {"issuer": issuer.issuer, "jwks": issuer.jwks}),
           _ap(workloads.namespace, {"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}))
    _calls(local_mesh, workloads, 403)
    _calls(local_mesh, workloads, 200, _bearer(issuer.token("alice")))


def test_request_principals_claims_and_audiences(local_mesh: LocalProvider, workloads: Workloads,
                                                 applied: list[dict[str, Any]]) -> None:
    issuer = TokenIssuer("https://claims.authn.test", "ES256")
    rule = {"issuer": issuer.issuer, "jwks": issuer.jwks, "audiences": ["orders"]}
    _apply(local_mesh, applied, _ra(workloads.namespace, rule), _ap(workloads.namespace, {"rules": [{
        "from": [{"source": {"requestPrincipals": [issuer.principal("alice"), issuer.principal("bob")]}}],
        "when": [{"key": "request.auth.claims[groups]", "values": ["admins"]},
                 {"key": "request.auth.claims[org][team]", "values": ["pay*"]}]}]}))
    member = {"groups": ["dev", "admins"], "org": {"team": "payments"}}
    _calls(local_mesh, workloads, 200, _bearer(issuer.token("alice", audience="orders", claims=member)))
    _calls(local_mesh, workloads, 200, _bearer(issuer.token("bob", audience=["x", "orders"],
                                                             claims={**member, "groups": "admins"})))
    _calls(local_mesh, workloads, 403, _bearer(issuer.token("carol", audience="orders", claims=member)))
    _calls(local_mesh, workloads, 403, _bearer(issuer.token("alice", audience="orders",
                                                             claims={**member, "groups": ["dev"]})))
    _calls(local_mesh, workloads, 403, _bearer(issuer.token("alice", audience="orders",
                                                             claims={**member, "org": {"team": "web"}})))
    # a verified token for another audience: Envoy's jwt_authn answers 403 (not RBAC's), as on Istio
    wrong = _calls(local_mesh, workloads, 403, _bearer(issuer.token("alice", audience="billing", claims=member)))
    assert wrong.responses[0].body == "Audiences in Jwt are not allowed"


def test_space_delimited_claims_are_lists(local_mesh: LocalProvider, workloads: Workloads,
                                         applied: list[dict[str, Any]]) -> None:
    """buildSpaceDelimitedClaims: ``scope`` and ``permission`` always, and ``spaceDelimitedClaims``, are split at
    spaces in the payload the policies match."""
    issuer = TokenIssuer("https://scopes.authn.test")
    _apply(local_mesh, applied,
           _ra(workloads.namespace, {"issuer": issuer.issuer, "jwks": issuer.jwks, "spaceDelimitedClaims": ["roles"]}),
           _ap(workloads.namespace, {"rules": [{"when": [{"key": "request.auth.claims[scope]", "values": ["write"]},
                                                         {"key": "request.auth.claims[roles]", "values": ["ops"]}]}]}))
    _calls(local_mesh, workloads, 200, _bearer(issuer.token("alice", claims={"scope": "read write",
                                                                              "roles": "dev ops"})))
    _calls(local_mesh, workloads, 403, _bearer(issuer.token("alice", claims={"scope": "read", "roles": "dev ops"})))
    _calls(local_mesh, workloads, 403, _bearer(issuer.token("alice", claims={"scope": "read write", "roles": "dev"})))


def test_what_the_app_receives(local_mesh: LocalProvider, workloads: Workloads, applied: list[dict[str, Any]]) -> None:
    """forwardOriginalToken keeps the token; outputPayloadToHeader and outputClaimToHeaders add headers."""
    issuer = TokenIssuer("https://forward.authn.test")
    _apply(local_mesh, applied, _ra(workloads.namespace, {
        "issuer": issuer.issuer, "jwks": issuer.jwks, "forwardOriginalToken": True,
        "outputPayloadToHeader": "x-jwt-payload", "outputClaimToHeaders": [{"header": "x-jwt-team", "claim": "team"}]}))
    token = issuer.token("alice", claims={"team": "payments"})
    seen = _calls(local_mesh, workloads, 200, _bearer(token)).responses[0].request_headers
    assert seen["authorization"] == f"Bearer {token}"
    payload = seen["x-jwt-payload"]
    assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"] == "alice"
    assert seen["x-jwt-team"] == "payments"


def test_token_locations(local_mesh: LocalProvider, workloads: Workloads, applied: list[dict[str, Any]]) -> None:
    """fromHeaders (with a value prefix), fromParams and fromCookies replace Envoy's default locations."""
    issuer = TokenIssuer("https://where.authn.test")
    _apply(local_mesh, applied,
           _ra(workloads.namespace, {"issuer": issuer.issuer, "jwks": issuer.jwks,
                                     "fromHeaders": [{"name": "x-token", "prefix": "Token "}], "fromParams": ["tok"],
                                     "fromCookies": ["session"]}),
           _ap(workloads.namespace, {"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}))
    token = issuer.token("alice")
    _calls(local_mesh, workloads, 200, {"x-token": f"Token {token}"})
    _calls(local_mesh, workloads, 200, path=f"/?tok={token}")
    _calls(local_mesh, workloads, 200, {"Cookie": f"theme=dark; session={token}"})
    _calls(local_mesh, workloads, 403, _bearer(token))  # not a location of this rule: no token, no principal


class _KeyServer:
    """An OpenID provider on 127.0.0.1: its discovery document (``issuer`` is its own address) and its JWKS."""

    def __init__(self) -> None:
        self.keys = b""
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                discovery = json.dumps({"issuer": outer.issuer, "jwks_uri": f"{outer.issuer}/keys"}).encode()
                body = {"/.well-known/openid-configuration": discovery, "/keys": outer.keys}.get(self.path)
                self.send_response(200 if body else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_control_plane_fetches_jwks_uri_and_openid_discovery(local_mesh: LocalProvider, workloads: Workloads,
                                                                 applied: list[dict[str, Any]]) -> None:
    """BuildLocalJwks: istiod fetches the keys (jwksUri, else the issuer's OpenID discovery document) and
    inlines them; when it cannot, no token verifies (FakeJwks)."""
    provider = _KeyServer()
    try:
        by_uri, discovered = TokenIssuer("https://uri.authn.test"), TokenIssuer(provider.issuer, "ES256")
        keys = json.loads(by_uri.jwks)["keys"] + json.loads(discovered.jwks)["keys"]
        provider.keys = json.dumps({"keys": keys}).encode()
        down = TokenIssuer("https://down.authn.test")
        _apply(local_mesh, applied, _ra(workloads.namespace,
                                        {"issuer": by_uri.issuer, "jwksUri": f"{provider.issuer}/keys"},
                                        {"issuer": discovered.issuer},
                                        {"issuer": down.issuer, "jwksUri": f"{provider.issuer}/gone"}))
        assert {"/keys", "/.well-known/openid-configuration", "/gone"} <= set(provider.requests)
        _calls(local_mesh, workloads, 200, _bearer(by_uri.token("alice")))
        _calls(local_mesh, workloads, 200, _bearer(discovered.token("alice")))
        _calls(local_mesh, workloads, 401, _bearer(down.token("alice")))
    finally:
        provider.close()


def test_dry_run_enforces_nothing_and_counts_what_it_would_deny(local_mesh: LocalProvider, workloads: Workloads,
                                                                applied: list[dict[str, Any]]) -> None:
    policy = _ap(workloads.namespace, {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]})
    policy["metadata"]["annotations"] = {"istio.io/dry-run": "true"}
    _apply(local_mesh, applied, policy)

    def denied() -> int:
        # Envoy 1.40 names it rbac.istio_dry_run_deny_.shadow_denied (the prefix, then its own segment)
        stats = local_mesh.proxy_admin(workloads.server, "/stats?filter=istio_dry_run_deny_")
        return sum(int(n) for n in re.findall(r"rbac\.istio_dry_run_deny_\.shadow_denied: (\d+)", stats))

    # until every connection is on the new filter chain: one call that would be denied is counted
    deadline = time.monotonic() + WITHIN
    while True:
        before = denied()
        _calls(local_mesh, workloads, 200, path="/admin/users", count=1)
        if denied() - before == 1 or time.monotonic() > deadline:
            break
    before = denied()
    _calls(local_mesh, workloads, 200, path="/admin/users", count=4)
    _calls(local_mesh, workloads, 200, path="/public", count=3)
    assert denied() - before == 4


def test_trust_domain_aliases_admit_principals_written_for_an_alias(local_mesh: LocalProvider, workloads: Workloads,
                                                                   applied: list[dict[str, Any]]) -> None:
    _apply(local_mesh, applied, _ap(workloads.namespace, {"rules": [{"from": [{"source": {
        "principals": [f"td1/ns/{workloads.namespace}/sa/client"]}}]}]}))
    _calls(local_mesh, workloads, 403)
    undo = local_mesh.mesh_config({"trustDomainAliases": ["td1"]}, CLUSTERS)
    try:
        assert undo == {"cluster1": {"trustDomainAliases": None}, "cluster2": {"trustDomainAliases": None}}
        _calls(local_mesh, workloads, 200)
    finally:
        for cluster, restore in undo.items():
            local_mesh.mesh_config(restore, [cluster])
    _calls(local_mesh, workloads, 403)


def test_ingress_gateway_validates_tokens_and_trusts_proxies_as_configured(
        local_mesh: LocalProvider, workloads: Workloads, applied: list[dict[str, Any]]) -> None:
    """A RequestAuthentication selecting the gateway runs there; remoteIpBlocks read X-Forwarded-For past
    numTrustedProxies (MeshConfig defaultConfig.gatewayTopology)."""
    ns = workloads.namespace
    issuer = TokenIssuer("https://edge.authn.test")
    gateway = {"matchLabels": {"istio": "ingressgateway"}}
    _apply(local_mesh, applied,
           doc("Gateway", "web", ns, {"selector": {"istio": "ingressgateway"}, "servers": [
               {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [f"{ns}.example.com"]}]}),
           doc("VirtualService", "web", ns, {"hosts": [f"{ns}.example.com"], "gateways": ["web"],
                                             "http": [{"route": [{"destination": {"host": "server"}}]}]}),
           doc("RequestAuthentication", f"edge-{ns}", "istio-system", {
               "selector": gateway, "jwtRules": [{"issuer": issuer.issuer, "jwks": issuer.jwks}]}),
           doc("AuthorizationPolicy", f"edge-{ns}", "istio-system", {"selector": gateway, "action": "DENY", "rules": [
               {"from": [{"source": {"notRemoteIpBlocks": ["10.1.2.0/24"]}}],
                "to": [{"operation": {"hosts": [f"{ns}.example.com"], "paths": ["/office/*"]}}]},
               {"from": [{"source": {"notRequestPrincipals": ["*"]}}],
                "to": [{"operation": {"hosts": [f"{ns}.example.com"]}}]}]}))
    url = f"http://{local_mesh.ingress_address('cluster1')}"
    host = {"Host": f"{ns}.example.com"}
    token = _bearer(issuer.token("alice"))

    def through(path: str, status: int, headers: dict[str, str]) -> None:
        result = eventually(
            lambda: call(local_mesh, workloads.outsider, f"{url}{path}", 3, headers={**host, **headers}),
            lambda r: r.statuses() == {status: 3}, within_s=WITHIN)
        assert result.statuses() == {status: 3}, result.summary()

    through("/", 403, {})
    through("/", 401, _bearer(issuer.forged("alice")))
    through("/", 200, token)
    office = {**token, "X-Forwarded-For": "10.1.2.3"}
    through("/office/x", 403, office)  # 0 trusted proxies: the client address is the outsider's own
    undo = local_mesh.mesh_config({"defaultConfig": {"gatewayTopology": {"numTrustedProxies": 1}}}, ["cluster1"])
    try:
        through("/office/x", 200, office)
        through("/office/x", 403, {**token, "X-Forwarded-For": "10.9.9.9"})
    finally:
        local_mesh.mesh_config(undo["cluster1"], ["cluster1"])
