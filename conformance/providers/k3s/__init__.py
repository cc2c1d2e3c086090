"""k3s clusters in Docker through testcontainers, running Istio installed per Istio's multi-cluster guides
(``meshconf plan --provider k3s`` prints how)."""

from conformance.providers.k3s.provider import K3sProvider

__all__ = ["K3sProvider"]
