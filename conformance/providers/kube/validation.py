"""Validate generated Kubernetes manifests against the Kubernetes OpenAPI schemas (``kubernetes-validate``).

One Kubernetes version is targeted: :data:`KUBERNETES_VERSION`, the version of the kind node image meshconf
pins (``kindest/node:v1.34.x``), inside the range Istio 1.28 supports. The schemas are the strict variant, so
an unknown field is an error, as ``kubectl apply --validate=strict`` would report it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from conformance.errors import ManifestError, UsageError

__all__ = ["KUBERNETES_VERSION", "is_kubernetes_kind", "validate_kubernetes"]

KUBERNETES_VERSION = "1.34.0"

_CORE_GROUPS = ("v1", "apps/v1", "rbac.authorization.k8s.io/v1", "policy/v1", "batch/v1")


def is_kubernetes_kind(doc: Mapping[str, Any]) -> bool:
    """True for the built-in Kubernetes APIs meshconf generates (not CRDs such as Istio's or MetalLB's)."""
    return str(doc.get("apiVersion", "")) in _CORE_GROUPS


def validate_kubernetes(docs: Iterable[Mapping[str, Any]], version: str = KUBERNETES_VERSION) -> None:
    """Raise ManifestError naming the document and the field if one is not valid Kubernetes ``version``.

    Needs the ``kind`` extra (``pip install 'meshconf[kind]'``); raises UsageError saying so when it is missing.
    """
    try:
        import kubernetes_validate
    except ImportError:
        raise UsageError("validating manifests needs kubernetes-validate: pip install 'meshconf[kind]'") from None
    for doc in docs:
        ref = f"{doc.get('kind', '?')} {(doc.get('metadata') or {}).get('name', '?')}"
        try:
            kubernetes_validate.validate(dict(doc), version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "(top level)"
            raise ManifestError(f"{ref}: field {path}: {exc.message} (Kubernetes {version})") from None
        except kubernetes_validate.SchemaNotFoundError:
            raise ManifestError(f"{ref}: {doc.get('apiVersion')} is not a Kubernetes {version} API") from None
