"""Workload identities as a sidecar holds them: its certificate chain and trusted roots, read from Envoy.

Both the local mesh and Istio serve a sidecar's key pair as the SDS secret ``default``; Istio serves the mesh
roots as the secret ``ROOTCA``, the local mesh inline in each validation context. Envoy's ``/config_dump``
shows all of it (private keys redacted); the roots are every ``trusted_ca`` it holds.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from conformance.errors import ProviderError

__all__ = ["SECRETS_PATH", "ServedIdentity", "served_identity"]

SECRETS_PATH = "/config_dump"


@dataclass(frozen=True)
class ServedIdentity:
    chain: tuple[x509.Certificate, ...]
    """The workload certificate first, then the intermediates that issued it."""
    roots: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def uris(self) -> list[str]:
        try:
            sans = self.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return [str(u) for u in sans.get_values_for_type(x509.UniformResourceIdentifier)]


def _pem(source: dict[str, object]) -> bytes:
    if "inline_bytes" in source:
        return base64.b64decode(str(source["inline_bytes"]))
    if "inline_string" in source:
        return str(source["inline_string"]).encode()
    raise ProviderError(f"certificate source {sorted(source)} is not inline; cannot read it from the config dump")


def served_identity(config_dump: str) -> ServedIdentity:
    """Parse a secrets config dump. Raises ProviderError if the sidecar holds no workload certificate."""
    try:
        data = json.loads(config_dump)
    except ValueError:
        raise ProviderError(f"Envoy secrets dump is not JSON: {config_dump[:120]!r}") from None
    chain: list[x509.Certificate] = []
    for config in data.get("configs", []):
        # a whole SecretsConfigDump, or (with ?resource=) one DynamicSecret per entry
        for entry in config.get("dynamic_active_secrets", [config]):
            secret = entry.get("secret", {})
            if entry.get("name") == "default" and "tls_certificate" in secret:
                chain = x509.load_pem_x509_certificates(_pem(secret["tls_certificate"]["certificate_chain"]))
    roots = {root.fingerprint(hashes.SHA256()): root for source in _trusted_cas(data)
             for root in x509.load_pem_x509_certificates(_pem(source))}
    if not chain or not roots:
        raise ProviderError("the sidecar holds no workload certificate (SDS secret default) or no trusted roots")
    return ServedIdentity(tuple(chain), tuple(roots.values()))


def _trusted_cas(node: object) -> list[dict[str, object]]:
    """Every ``trusted_ca`` in the dump (the ROOTCA secret's, and validation contexts' inline ones)."""
    found: list[dict[str, object]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "trusted_ca" and isinstance(value, dict):
                found.append(value)
            else:
                found += _trusted_cas(value)
    elif isinstance(node, list):
        for item in node:
            found += _trusted_cas(item)
    return found
