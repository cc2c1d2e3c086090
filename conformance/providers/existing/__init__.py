"""Clusters you already have: kubeconfig contexts that run Istio; meshconf touches only meshconf-* namespaces."""

from conformance.providers.existing.provider import ExistingProvider

__all__ = ["ExistingProvider"]
