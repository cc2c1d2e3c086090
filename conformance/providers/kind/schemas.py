"""Closed schemas for the install documents only kind writes; the rest is the kube layer's (``kube/schemas.py``).

- kind ``Cluster`` (kind.x-k8s.io/v1alpha4): the fields of kind's ``pkg/apis/config/v1alpha4`` types.
- MetalLB ``IPAddressPool`` / ``L2Advertisement`` (metallb.io/v1beta1): the documented spec fields.
- ``IstioOperator``: ``kube/schemas.py``.

These are meshconf's own schemas written from those APIs, narrower than the real ones; ``validate_manifest``
routes every generated document to the right validator (Istio CRDs, Kubernetes, or these).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conformance.providers.kube import schemas as kube
from conformance.providers.kube.schemas import ISTIO_OPERATOR
from conformance.providers.kube.schemas import closed_object as _obj

__all__ = ["INSTALL_KINDS", "validate_install_document", "validate_manifest"]

_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_INT = {"type": "integer"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_STR_LIST = {"type": "array", "items": _STR}
_META = _obj({"name": _STR, "namespace": _STR, "labels": _STR_MAP, "annotations": _STR_MAP}, ("name",))

_KIND_NODE = _obj({
    "role": {"enum": ["control-plane", "worker"]}, "image": _STR, "labels": _STR_MAP,
    "extraMounts": {"type": "array", "items": _obj({
        "containerPath": _STR, "hostPath": _STR, "readOnly": _BOOL, "selinuxRelabel": _BOOL,
        "propagation": {"enum": ["None", "HostToContainer", "Bidirectional"]}})},
    "extraPortMappings": {"type": "array", "items": _obj({
        "containerPort": _INT, "hostPort": _INT, "listenAddress": _STR, "protocol": {"enum": ["TCP", "UDP", "SCTP"]}})},
    "gpus": _STR, "kubeadmConfigPatches": _STR_LIST, "kubeadmConfigPatchesJSON6902": {"type": "array"},
})
KIND_CLUSTER = _obj({
    "kind": {"const": "Cluster"}, "apiVersion": {"const": "kind.x-k8s.io/v1alpha4"}, "name": _STR,
    "nodes": {"type": "array", "items": _KIND_NODE, "minItems": 1},
    "networking": _obj({
        "ipFamily": {"enum": ["ipv4", "ipv6", "dual"]}, "apiServerPort": _INT, "apiServerAddress": _STR,
        "podSubnet": _STR, "serviceSubnet": _STR, "disableDefaultCNI": _BOOL,
        "kubeProxyMode": {"enum": ["iptables", "ipvs", "nftables", "none"]}, "dnsSearch": _STR_LIST}),
    "featureGates": {"type": "object", "additionalProperties": _BOOL}, "runtimeConfig": _STR_MAP,
    "kubeadmConfigPatches": _STR_LIST, "kubeadmConfigPatchesJSON6902": {"type": "array"},
    "containerdConfigPatches": _STR_LIST, "containerdConfigPatchesJSON6902": _STR_LIST,
}, ("kind", "apiVersion"))

_SELECTORS = {"type": "array", "items": {"type": "object"}}
IP_ADDRESS_POOL = _obj({
    "apiVersion": {"const": "metallb.io/v1beta1"}, "kind": {"const": "IPAddressPool"}, "metadata": _META,
    "spec": _obj({"addresses": {"type": "array", "items": _STR, "minItems": 1}, "autoAssign": _BOOL,
                  "avoidBuggyIPs": _BOOL, "serviceAllocation": {"type": "object"}}, ("addresses",)),
}, ("apiVersion", "kind", "metadata", "spec"))
L2_ADVERTISEMENT = _obj({
    "apiVersion": {"const": "metallb.io/v1beta1"}, "kind": {"const": "L2Advertisement"}, "metadata": _META,
    "spec": _obj({"ipAddressPools": _STR_LIST, "ipAddressPoolSelectors": _SELECTORS,
                  "nodeSelectors": _SELECTORS, "interfaces": _STR_LIST}),
}, ("apiVersion", "kind", "metadata"))

INSTALL_KINDS: dict[tuple[str, str], dict[str, Any]] = {
    ("kind.x-k8s.io/v1alpha4", "Cluster"): KIND_CLUSTER,
    ("metallb.io/v1beta1", "IPAddressPool"): IP_ADDRESS_POOL,
    ("metallb.io/v1beta1", "L2Advertisement"): L2_ADVERTISEMENT,
    ("install.istio.io/v1alpha1", "IstioOperator"): ISTIO_OPERATOR,
}


def validate_install_document(doc: Mapping[str, Any]) -> None:
    """Validate a kind config, MetalLB pool or IstioOperator; raise ManifestError naming the field."""
    kube.validate_install_document(doc, INSTALL_KINDS)


def validate_manifest(doc: Mapping[str, Any], kubernetes_version: str | None = None) -> str:
    """Validate any document the kind provider generates with the validator that owns it; returns which one."""
    return kube.validate_manifest(doc, kubernetes_version, INSTALL_KINDS)
