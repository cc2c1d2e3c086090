"""kind clusters running Istio, installed per Istio's multi-cluster guides (``meshconf plan`` prints how)."""

from conformance.providers.kind.provider import KindProvider

__all__ = ["KindProvider"]
