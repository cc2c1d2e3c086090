"""End-user tokens for the RequestAuthentication checks: JWTs (RS256 or ES256) and the JWKS that verifies them.

A :class:`TokenIssuer` makes its signing key when it is created and keeps it in memory only: the key is never
written to disk, and neither it nor any token goes into a report, a log or an attachment (:func:`redact` takes
tokens out of text that is about to be attached). The JWKS holds the public key only; checks put it inline in
their RequestAuthentication (``jwks``), which every provider honours without network access (on Istio,
``jwksUri`` must be reachable from istiod, which fetches it and inlines it into the proxies' config).

Signing and the JWK encoding are PyJWT's (with ``cryptography``); nothing here is hand-written JOSE.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from conformance.errors import UsageError

__all__ = ["ALGORITHMS", "TokenIssuer", "redact"]

ALGORITHMS = ("RS256", "ES256")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
"""A compact JWS whose header and payload are JSON objects (base64url of ``{"`` is ``eyJ``)."""


def redact(text: str) -> str:
    """``text`` with every JWT replaced by ``<redacted JWT>``."""
    return _JWT.sub("<redacted JWT>", text)


def _new_key(algorithm: str) -> Any:
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise UsageError(f"token algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")


class TokenIssuer:
    """Mints JWTs as ``issuer``, signed with a key made here (``algorithm``: RS256 or ES256)."""

    def __init__(self, issuer: str, algorithm: str = "RS256") -> None:
        self.issuer = issuer
        self.algorithm = algorithm
        self.key_id = secrets.token_hex(8)
        self._key = _new_key(algorithm)

    @property
    def jwks(self) -> str:
        """The JSON Web Key Set (RFC 7517) with this issuer's public key, as RequestAuthentication's ``jwks``."""
        encode = RSAAlgorithm.to_jwk if self.algorithm == "RS256" else ECAlgorithm.to_jwk
        key = json.loads(encode(self._key.public_key()))
        return json.dumps({"keys": [{**key, "kid": self.key_id, "alg": self.algorithm, "use": "sig"}]})

    def principal(self, subject: str) -> str:
        """Istio's request principal of a token this issuer gives ``subject``: ``<iss>/<sub>``."""
        return f"{self.issuer}/{subject}"

    def token(self, subject: str, *, audience: str | list[str] | None = None,
              claims: Mapping[str, Any] | None = None, expires_in_s: float = 3600.0,
              issuer: str | None = None) -> str:
        """A signed token for ``subject`` (``iss``, ``sub``, ``iat``, ``exp``, optional ``aud``, and ``claims``).

        ``expires_in_s`` < 0 gives a token that has already expired; ``issuer`` overrides ``iss`` (a token from
        an issuer no RequestAuthentication names)."""
        return self._sign(self._key, subject, audience, claims, expires_in_s, issuer)

    def forged(self, subject: str, *, claims: Mapping[str, Any] | None = None) -> str:
        """A token that claims to be this issuer's (same ``iss`` and key id) but is signed with another key:
        its signature does not verify against :attr:`jwks`."""
        return self._sign(_new_key(self.algorithm), subject, None, claims, 3600.0, None)

    def _sign(self, key: Any, subject: str, audience: str | list[str] | None, claims: Mapping[str, Any] | None,
              expires_in_s: float, issuer: str | None) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {"iss": issuer or self.issuer, "sub": subject, "iat": now,
                                   "exp": now + int(expires_in_s)}
        if audience is not None:
            payload["aud"] = audience
        payload.update(claims or {})
        return jwt.encode(payload, key, algorithm=self.algorithm, headers={"kid": self.key_id})

    def __repr__(self) -> str:  # never the key
        return f"TokenIssuer({self.issuer!r}, {self.algorithm})"
