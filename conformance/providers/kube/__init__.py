"""Kubernetes plumbing shared by the providers that run on real clusters (kind, existing).

Not a provider itself: ``probes`` generates the probe workload's manifests, ``api`` talks to one cluster's
API server through the official ``kubernetes`` client (imported lazily: the local provider never needs it),
``validation`` checks generated manifests against the Kubernetes OpenAPI schemas.
"""

from conformance.providers.kube.probes import (
    CONTROL_PORT,
    PROBE_CONFIGMAP,
    PROBE_IMAGE,
    namespace_doc,
    probe_docs,
    probe_workload_name,
)

__all__ = ["CONTROL_PORT", "PROBE_CONFIGMAP", "PROBE_IMAGE", "namespace_doc", "probe_docs", "probe_workload_name"]
