"""Istio resources -> Envoy config for the local mesh, with Istio's semantics.

Pure functions of a control plane's view (:class:`MeshView`) and one proxy; no I/O. Unsupported Istio
fields never reach this package: ``conformance.providers.local.support`` rejects them first.
"""

from __future__ import annotations

from conformance.certs import WorkloadCert
from conformance.providers.local.envoy import XdsSnapshot
from conformance.providers.local.model import Workload
from conformance.providers.local.translate.authn import jwt_filter
from conformance.providers.local.translate.authz import rbac_filters
from conformance.providers.local.translate.context import MeshView, SourceFn
from conformance.providers.local.translate.inbound import inbound_clusters, inbound_listener
from conformance.providers.local.translate.outbound import outbound_config
from conformance.providers.local.translate.tls import secrets

__all__ = ["MeshView", "build_sidecar"]


def build_sidecar(view: MeshView, workload: Workload, cert: WorkloadCert, source: SourceFn) -> XdsSnapshot:
    """Everything a workload's sidecar should have, as the control plane of its cluster computes it."""
    listener, clusters = outbound_config(view, workload, source)
    return XdsSnapshot(
        listeners=[inbound_listener(view, workload, source,
                                    rbac_filters(view.store, workload, view.trust_domains, view.defects),
                                    jwt_filter(view, workload, gateway=False)), listener],
        clusters=[*inbound_clusters(workload), *clusters],
        secrets=secrets(cert, view.trust_root),
    )
