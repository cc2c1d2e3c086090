"""End-user tokens: what the issuer signs verifies against the JWKS it publishes (checked with PyJWT's verifier),
forged, expired and foreign tokens do not, and tokens never survive into text meant for reports."""

from __future__ import annotations

import json

import jwt
import pytest

from conformance.errors import UsageError
from conformance.tokens import TokenIssuer, redact

ISSUER = "https://issuer.meshconf.test/ns"


def _verify(issuer: TokenIssuer, token: str, **options: object) -> dict[str, object]:
    keys = jwt.PyJWKSet.from_json(issuer.jwks)
    key = keys[jwt.get_unverified_header(token)["kid"]]
    return dict(jwt.decode(token, key.key, algorithms=[issuer.algorithm], issuer=ISSUER, **options))  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_tokens_verify_against_the_published_jwks(algorithm: str) -> None:
    issuer = TokenIssuer(ISSUER, algorithm)
    token = issuer.token("alice", audience="orders", claims={"groups": ["admins", "dev"], "org": {"team": "a"}})
    claims = _verify(issuer, token, audience="orders")
    assert claims["sub"] == "alice" and claims["groups"] == ["admins", "dev"] and claims["org"] == {"team": "a"}
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    (key,) = json.loads(issuer.jwks)["keys"]
    assert key["kid"] == issuer.key_id and key["alg"] == algorithm and key["use"] == "sig"
    assert "d" not in key  # public parts only
    assert issuer.principal("alice") == f"{ISSUER}/alice"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_forged_expired_and_foreign_tokens_do_not_verify(algorithm: str) -> None:
    issuer = TokenIssuer(ISSUER, algorithm)
    forged = issuer.forged("alice")
    assert jwt.get_unverified_header(forged)["kid"] == issuer.key_id
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(issuer, forged)
    with pytest.raises(jwt.ExpiredSignatureError):
        _verify(issuer, issuer.token("alice", expires_in_s=-60))
    with pytest.raises(jwt.InvalidIssuerError):
        _verify(issuer, issuer.token("alice", issuer="https://elsewhere.test"))


def test_every_issuer_has_its_own_key() -> None:
    first, second = TokenIssuer(ISSUER), TokenIssuer(ISSUER)
    assert first.key_id != second.key_id and first.jwks != second.jwks
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(second.token("alice"), jwt.PyJWKSet.from_json(first.jwks).keys[0].key, algorithms=["RS256"],
                   issuer=ISSUER)


def test_unknown_algorithms_are_refused() -> None:
    with pytest.raises(UsageError, match="'HS256' is not one of RS256, ES256"):
        TokenIssuer(ISSUER, "HS256")


def test_redact_removes_tokens_and_keeps_the_rest() -> None:
    token = TokenIssuer(ISSUER, "ES256").token("alice")
    text = json.dumps({"headers": {"authorization": f"Bearer {token}"}, "url": f"http://s/?access_token={token}"})
    cleaned = redact(text)
    assert token not in cleaned and "Bearer <redacted JWT>" in cleaned and "access_token=<redacted JWT>" in cleaned
    assert redact("eyJnot a token, and x.y.z") == "eyJnot a token, and x.y.z"


def test_the_key_never_shows_in_a_repr() -> None:
    issuer = TokenIssuer(ISSUER)
    assert repr(issuer) == f"TokenIssuer({ISSUER!r}, RS256)"


def test_call_results_never_carry_tokens_into_attachments_or_messages() -> None:
    from conformance.probe import CallResult, Response

    token = TokenIssuer(ISSUER).token("alice")
    echoed = {"cluster": "c1", "instance": "s-1", "headers": {"authorization": f"Bearer {token}"}}
    result = CallResult("client", f"http://s/?access_token={token}",
                        (Response(200, 10, echo=echoed), Response(401, 10, body="Jwt verification fails")),
                        {"headers": {"authorization": f"Bearer {token}"}})
    assert token not in result.to_json() and token not in result.summary()
    assert "<redacted JWT>" in result.to_json()
