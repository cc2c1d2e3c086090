"""A sidecar's inbound side: the ``virtualInbound`` listener and the ``inbound|<port>||`` clusters.

The listener binds the pod IP on 15006 and on every service port (what iptables capture does in a pod) and
picks a filter chain by destination port and transport, as Istio's ``pilot/pkg/networking/core/
filterchain_options.go`` does for a port whose protocol is HTTP (every probe port is named ``http*``):
STRICT has one chain for TLS; PERMISSIVE one for TLS that offers one of Istio's ALPN values (a sidecar's
mTLS) and one for plaintext, so TLS without them matches no chain and the connection is closed; DISABLE
one for plaintext. The mTLS chain requires a client certificate chaining to the mesh root. Every chain's
HTTP connection manager handles ``x-forwarded-client-cert`` as Istio's inbound one does
(``buildSidecarInboundHTTPOpts`` in listener_inbound.go): APPEND_FORWARD with the peer certificate's
subject, URI and DNS SANs. On a plaintext connection Envoy removes any XFCC the caller sent, so the app
sees an identity only from mTLS. Authorization runs in two RBAC filters (DENY, then ALLOW),
inline in the listener; a policy change re-creates the filter chains, and Envoy drains the old ones at once
(``--drain-strategy immediate``), so kept-alive connections see the new policy within the drain time.
"""

from __future__ import annotations

from typing import Any

from conformance.providers.local.addresses import INBOUND_PORT, INBOUND_SOURCE
from conformance.providers.local.defects import Defect
from conformance.providers.local.envoy import any_config
from conformance.providers.local.model import Workload
from conformance.providers.local.translate.context import MeshView, SourceFn
from conformance.providers.local.translate.mtls import MtlsMode, peer_mtls_mode
from conformance.providers.local.translate.tls import downstream_mtls

__all__ = ["RBAC_FILTERS", "inbound_clusters", "inbound_listener", "pass_through_rbac"]

_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ISTIO_MTLS_ALPN = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]
"""Istio's ``allIstioMtlsALPNs`` (listener.go): what a PERMISSIVE HTTP port's mTLS chain matches."""
RBAC_FILTERS = ("istio.rbac.deny", "istio.rbac.allow")
"""Names of the two RBAC filters, in evaluation order."""
_RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
SIDECAR_DELAYS = {
    Defect.SLOW_SIDECAR: "0.020s",
    Defect.SIDECAR_OVER_OVERHEAD_BUDGET: "0.006s",
    Defect.SIDECAR_OVER_IN_CLUSTER_BUDGET: "0.012s",
}
"""Latency defects: how long every sidecar delays each inbound request."""


def _delays(defects: frozenset[Defect]) -> list[dict[str, Any]]:
    return [{"name": "envoy.filters.http.fault", "typed_config": any_config(
        "envoy.extensions.filters.http.fault.v3.HTTPFault",
        delay={"fixed_delay": delay, "percentage": {"numerator": 100, "denominator": "HUNDRED"}},
    )} for defect, delay in SIDECAR_DELAYS.items() if defect in defects]


def _socket(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def inbound_cluster_name(port: int) -> str:
    return f"inbound|{port}||"


def _hcm(view: MeshView, port: int, rbac: dict[str, dict[str, Any]], jwt: dict[str, Any] | None,
         plaintext: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "stat_prefix": f"inbound_0.0.0.0_{port}",
        "route_config": {
            "name": f"inbound|{port}||",
            "virtual_hosts": [{
                "name": f"inbound|http|{port}",
                "domains": ["*"],
                "routes": [{
                    "name": "default",
                    "match": {"prefix": "/"},
                    "route": {"cluster": inbound_cluster_name(port), "timeout": "0s"},
                }],
            }],
        },
        "http_filters": [
            *([jwt] if jwt is not None else []),  # authentication, then authorization (listener_builder.go)
            *({"name": name, "typed_config": rbac[name]} for name in RBAC_FILTERS),
            *_delays(view.defects),
            {"name": "envoy.filters.http.router",
             "typed_config": any_config("envoy.extensions.filters.http.router.v3.Router")},
        ],
        "use_remote_address": False,
        # Istio's default path normalization (meshConfig pathNormalization BASE): RBAC sees /a/../b as /b
        "normalize_path": True,
    }
    if Defect.NO_CLIENT_CERT_FORWARDING in view.defects:
        config["forward_client_cert_details"] = "SANITIZE"
    elif plaintext and Defect.PLAINTEXT_XFCC_TRUSTED in view.defects:
        config["forward_client_cert_details"] = "ALWAYS_FORWARD_ONLY"
    else:
        config["forward_client_cert_details"] = "APPEND_FORWARD"
        config["set_current_client_cert_details"] = {"subject": True, "dns": True, "uri": True}
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": any_config(_HCM, **config)}


def inbound_listener(view: MeshView, workload: Workload, source: SourceFn,
                     rbac: dict[str, dict[str, Any]] | None = None,
                     jwt: dict[str, Any] | None = None) -> dict[str, Any]:
    """``rbac``: the typed configs of the DENY and ALLOW RBAC filters (default: enforce nothing); ``jwt``: the
    ``jwt_authn`` filter of the workload's RequestAuthentications (authn.py), if any."""
    rbac = rbac or {name: pass_through_rbac() for name in RBAC_FILTERS}
    pod_ip = workload.addresses.pod_ip
    chains: list[dict[str, Any]] = []
    for port in workload.spec.ports:
        mode = peer_mtls_mode(view.store, workload, port, view.defects)
        if mode in (MtlsMode.STRICT, MtlsMode.PERMISSIVE):
            match: dict[str, Any] = {"destination_port": port, "transport_protocol": "tls"}
            if mode is MtlsMode.PERMISSIVE:
                match["application_protocols"] = ISTIO_MTLS_ALPN
            chains.append({
                "name": f"{pod_ip}_{port}_mtls",
                "filter_chain_match": match,
                "transport_socket": downstream_mtls(source),
                "filters": [_hcm(view, port, rbac, jwt, plaintext=False)],
            })
        if mode in (MtlsMode.PERMISSIVE, MtlsMode.DISABLE):
            chains.append({
                "name": f"{pod_ip}_{port}_plaintext",
                "filter_chain_match": {"destination_port": port, "transport_protocol": "raw_buffer"},
                "filters": [_hcm(view, port, rbac, jwt, plaintext=True)],
            })
    return {
        "name": "virtualInbound",
        "address": _socket(pod_ip, INBOUND_PORT),
        "additional_addresses": [{"address": _socket(pod_ip, port)} for port in workload.spec.ports],
        "listener_filters": [{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": any_config("envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"),
        }],
        "filter_chains": chains,
        "traffic_direction": "INBOUND",
    }


def inbound_clusters(workload: Workload) -> list[dict[str, Any]]:
    """One cluster per service port, to the app on the pod's loopback, from 127.0.0.6 as Istio does."""
    return [
        {
            "name": inbound_cluster_name(port),
            "type": "STATIC",
            "connect_timeout": "10s",
            "upstream_bind_config": {"source_address": {"address": INBOUND_SOURCE, "port_value": 0}},
            "load_assignment": {
                "cluster_name": inbound_cluster_name(port),
                "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": _socket(workload.addresses.loopback, port)}},
                ]}],
            },
        }
        for port in workload.spec.ports
    ]


def pass_through_rbac() -> dict[str, Any]:
    """An RBAC filter config that enforces nothing (no ``rules``)."""
    return {"@type": _RBAC_TYPE}
