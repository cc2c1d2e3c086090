"""TLS contexts and SDS secrets of a sidecar, as Istio builds them (secrets ``default`` and ``ROOTCA``)."""

from __future__ import annotations

from typing import Any

from conformance.certs import WorkloadCert
from conformance.providers.local.envoy import any_config
from conformance.providers.local.translate.context import SourceFn

__all__ = ["ISTIO_ALPN", "downstream_mtls", "istio_sni", "secrets", "upstream_mtls"]

ISTIO_ALPN = ["istio-peer-exchange", "istio"]
_TLS = "envoy.extensions.transport_sockets.tls.v3"


def secrets(cert: WorkloadCert) -> dict[str, dict[str, Any]]:
    """The workload's key pair (``default``) and the mesh root (``ROOTCA``), served through file SDS."""
    return {
        "default": {
            "name": "default",
            "tls_certificate": {
                "certificate_chain": {"inline_bytes": _b64(cert.chain_pem)},
                "private_key": {"inline_bytes": _b64(cert.key_pem)},
            },
        },
        "ROOTCA": {"name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_bytes": _b64(cert.root_pem)}}},
    }


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _common(source: SourceFn, sans: list[str] | None, alpn: list[str] | None) -> dict[str, Any]:
    validation: dict[str, Any] = {}
    if sans:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": san}} for san in sorted(sans)
        ]
    common: dict[str, Any] = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": source("sds", "default")}],
        "combined_validation_context": {
            "default_validation_context": validation,
            "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": source("sds", "ROOTCA")},
        },
    }
    if alpn:
        common["alpn_protocols"] = alpn
    return common


def downstream_mtls(source: SourceFn) -> dict[str, Any]:
    """Inbound: require a client certificate that chains to the mesh root."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": any_config(
            f"{_TLS}.DownstreamTlsContext",
            require_client_certificate=True,
            common_tls_context=_common(source, None, ["h2", "http/1.1"]),
        ),
    }


def istio_sni(port: int, subset: str, host: str) -> str:
    """Istio's SNI for a mesh destination (what east-west gateways route on)."""
    return f"outbound_.{port}_.{subset}_.{host}"


def upstream_mtls(source: SourceFn, sans: list[str], sni: str) -> dict[str, Any]:
    """Outbound: present the workload certificate, verify the server's SPIFFE identity."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": any_config(
            f"{_TLS}.UpstreamTlsContext",
            sni=sni,
            common_tls_context=_common(source, sans, ISTIO_ALPN),
        ),
    }
