"""TLS contexts and the SDS secret of a proxy.

The workload's key pair is the SDS secret ``default`` (as in Istio), served from a file so a rotation reaches
new handshakes at once. The mesh root, which never rotates here, is inline in each validation context
rather than a second SDS secret: every file subscription costs Envoy an inotify instance, and a user has only
128 of them by default (``fs.inotify.max_user_instances``).
"""

from __future__ import annotations

from typing import Any

from conformance.certs import WorkloadCert
from conformance.providers.local.envoy import any_config
from conformance.providers.local.translate.context import SourceFn

__all__ = ["ISTIO_ALPN", "downstream_mtls", "istio_sni", "secrets", "upstream_mtls"]

ISTIO_ALPN = ["istio-peer-exchange", "istio"]
_TLS = "envoy.extensions.transport_sockets.tls.v3"


def secrets(cert: WorkloadCert) -> dict[str, dict[str, Any]]:
    """The workload's key pair, served through file SDS as the secret ``default``."""
    return {
        "default": {
            "name": "default",
            "tls_certificate": {
                "certificate_chain": {"inline_bytes": _b64(cert.chain_pem)},
                "private_key": {"inline_bytes": _b64(cert.key_pem)},
            },
        },
    }


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _common(source: SourceFn, sans: list[str] | None, alpn: list[str] | None, root_pem: bytes) -> dict[str, Any]:
    validation: dict[str, Any] = {"trusted_ca": {"inline_bytes": _b64(root_pem)}}
    if sans:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": san}} for san in sorted(sans)
        ]
    common: dict[str, Any] = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": source("sds", "default")}],
        "validation_context": validation,
    }
    if alpn:
        common["alpn_protocols"] = alpn
    return common


def downstream_mtls(source: SourceFn, root_pem: bytes) -> dict[str, Any]:
    """Inbound: require a client certificate that chains to the mesh root."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": any_config(
            f"{_TLS}.DownstreamTlsContext",
            require_client_certificate=True,
            common_tls_context=_common(source, None, ["h2", "http/1.1"], root_pem),
        ),
    }


def istio_sni(port: int, subset: str, host: str) -> str:
    """Istio's SNI for a mesh destination (what east-west gateways route on)."""
    return f"outbound_.{port}_.{subset}_.{host}"


def upstream_mtls(source: SourceFn, sans: list[str], sni: str, root_pem: bytes) -> dict[str, Any]:
    """Outbound: present the workload certificate, verify the server's SPIFFE identity."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": any_config(
            f"{_TLS}.UpstreamTlsContext",
            sni=sni,
            common_tls_context=_common(source, sans, ISTIO_ALPN, root_pem),
        ),
    }
