"""What istiod's JWKS resolver does for the local mesh's control planes (pilot/pkg/model/jwks_resolver.go).

A RequestAuthentication without inline ``jwks`` names a ``jwksUri`` (or only an ``issuer``, whose OpenID
discovery document, ``<issuer>/.well-known/openid-configuration``, names it). The control plane fetches it
with the rule's timeout and inlines the keys into the proxies' config. A host of the mesh
(``<svc>.<ns>.svc.cluster.local``) resolves as it does for istiod, through its cluster's registry, to a pod of
that service (plain HTTP, so the workload must accept plaintext, as under PERMISSIVE); any other host is
fetched as it is. A fetched JWKS is kept for 20 minutes (``PILOT_JWT_PUB_KEY_REFRESH_INTERVAL``); a failure is
retried after a second (``JwtPubKeyRetryInterval``) and, meanwhile, the proxies get a JWKS that verifies no
token. Differences: Istio refreshes in the background and pushes when keys change; the local mesh fetches when
it recomputes config (every change), and treats a body that is not a JWKS as a failure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import httpx

__all__ = ["JwksResolver"]

_REFRESH_S = 20 * 60.0
_RETRY_S = 1.0
_DISCOVERY = "/.well-known/openid-configuration"

Resolve = Callable[[str, str, int], list[str]]
"""(cluster, host, port) -> ``ip:port`` of the pods behind a mesh service in that cluster."""


class JwksResolver:
    """Fetches and caches JWKS per (control plane, issuer, URI)."""

    def __init__(self, resolve: Resolve) -> None:
        self._resolve = resolve
        self._cache: dict[tuple[str, str, str], tuple[str | None, float]] = {}

    def for_cluster(self, cluster: str) -> Callable[[str, str, float], str | None]:
        """The resolver of ``cluster``'s control plane: (issuer, jwksUri, timeout) -> JWKS, or None."""
        return lambda issuer, uri, timeout_s: self.get(cluster, issuer, uri, timeout_s)

    def get(self, cluster: str, issuer: str, uri: str, timeout_s: float) -> str | None:
        key = (cluster, issuer, uri)
        found = self._cache.get(key)
        now = time.monotonic()
        if found is not None and now < found[1]:
            return found[0]
        try:
            jwks_uri = uri or self._discover(cluster, issuer, timeout_s)
            keys = self._fetch(cluster, jwks_uri, timeout_s)
            parsed = json.loads(keys)
            if not isinstance(parsed, dict) or not isinstance(parsed.get("keys"), list):
                raise ValueError("not a JWK Set")
        except (httpx.HTTPError, ValueError, OSError):
            self._cache[key] = (None, now + _RETRY_S)
            return None
        self._cache[key] = (keys, now + _REFRESH_S)
        return keys

    def _discover(self, cluster: str, issuer: str, timeout_s: float) -> str:
        if not issuer:
            raise ValueError("neither jwksUri nor issuer")
        document = json.loads(self._fetch(cluster, issuer.rstrip("/") + _DISCOVERY, timeout_s))
        uri = document.get("jwks_uri") if isinstance(document, dict) else None
        if not isinstance(uri, str) or not uri:
            raise ValueError("the discovery document has no jwks_uri")
        return uri

    def _fetch(self, cluster: str, uri: str, timeout_s: float) -> str:
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported URI {uri!r}")
        url, headers = uri, {}
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if parts.hostname.endswith(".svc.cluster.local"):
            addresses = self._resolve(cluster, parts.hostname, port)
            if not addresses or parts.scheme != "http":
                raise ValueError(f"{parts.hostname}:{port} has no plain-HTTP endpoint in {cluster}")
            url = urlunsplit((parts.scheme, addresses[0], parts.path or "/", parts.query, ""))
            headers["Host"] = parts.netloc
        with httpx.Client(timeout=timeout_s, trust_env=False) as client:
            response = client.get(url, headers=headers)
        if not 200 <= response.status_code < 300:
            raise ValueError(f"{uri} answered {response.status_code}")
        return response.text
