"""TLS contexts and the SDS secrets of a proxy.

As in Istio (pilot/pkg/security/model/authentication.go): the workload's key pair is the SDS secret ``default``
and the mesh's trust bundle (every root it trusts, one or several) the SDS secret ``ROOTCA``; each TLS context
refers to both by name, its validation context being a ``combined_validation_context`` of the SAN matchers and
``ROOTCA``. So a certificate rotation or a new trust bundle is a push of secrets only: listeners and clusters
stay as they are, and open connections with them.
"""

from __future__ import annotations

from typing import Any

from conformance.certs import WorkloadCert
from conformance.providers.local.envoy import any_config
from conformance.providers.local.translate.context import SourceFn

__all__ = ["ISTIO_ALPN", "ROOT_SECRET", "downstream_mtls", "istio_sni", "secrets", "upstream_mtls"]

ISTIO_ALPN = ["istio-peer-exchange", "istio"]
ROOT_SECRET = "ROOTCA"
"""Istio's SDS name of the trust bundle (pkg/model/authentication.go ``SDSRootResourceName``)."""
_TLS = "envoy.extensions.transport_sockets.tls.v3"


def secrets(cert: WorkloadCert, trust_bundle: bytes) -> dict[str, dict[str, Any]]:
    """The workload's key pair (SDS ``default``) and the roots it trusts (SDS ``ROOTCA``)."""
    return {
        "default": {
            "name": "default",
            "tls_certificate": {
                "certificate_chain": {"inline_bytes": _b64(cert.chain_pem)},
                "private_key": {"inline_bytes": _b64(cert.key_pem)},
            },
        },
        ROOT_SECRET: {"name": ROOT_SECRET, "validation_context": {"trusted_ca": {"inline_bytes": _b64(trust_bundle)}}},
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
            "validation_context_sds_secret_config": {"name": ROOT_SECRET, "sds_config": source("sds", ROOT_SECRET)},
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
