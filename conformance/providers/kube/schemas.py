"""Closed schemas for the install documents that are neither Kubernetes built-ins nor Istio CRDs, and the
router that validates every generated document with the validator that owns it.

- ``IstioOperator`` (install.istio.io/v1alpha1): the spec, component and Kubernetes-resources fields of Istio's
  operator API (``operator/pkg/apis/types.go``), and under ``values``/``meshConfig`` only the keys meshconf
  sets (an unlisted key is an error here, so a typo never reaches istioctl; add a key with its Istio reference).

These are meshconf's own schemas written from that API, narrower than the real one. A provider adds the
documents only it writes (kind: its cluster config and MetalLB's pools) with ``kinds``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema

from conformance.errors import ManifestError
from conformance.istio import ISTIO_KINDS, doc_ref, validate_document

__all__ = ["INSTALL_KINDS", "ISTIO_OPERATOR", "closed_object", "validate_install_document", "validate_manifest"]


def closed_object(properties: Mapping[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON schema object with exactly these properties: any other field is an error."""
    return {"type": "object", "properties": dict(properties), "additionalProperties": False,
            "required": list(required)}


_obj = closed_object

_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_INT = {"type": "integer"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_STR_LIST = {"type": "array", "items": _STR}
_META = _obj({"name": _STR, "namespace": _STR, "labels": _STR_MAP, "annotations": _STR_MAP}, ("name",))
_ENV_VAR = _obj({"name": _STR, "value": _STR, "valueFrom": {"type": "object"}}, ("name",))
_SERVICE_PORT = _obj({"name": _STR, "port": _INT, "targetPort": {"type": ["integer", "string"]},
                      "protocol": _STR, "nodePort": _INT, "appProtocol": _STR}, ("port",))
_K8S = _obj({
    "affinity": {"type": "object"}, "env": {"type": "array", "items": _ENV_VAR}, "hpaSpec": {"type": "object"},
    "imagePullPolicy": _STR, "nodeSelector": _STR_MAP, "podDisruptionBudget": {"type": "object"},
    "podAnnotations": _STR_MAP, "priorityClassName": _STR, "readinessProbe": {"type": "object"},
    "replicaCount": _INT, "resources": {"type": "object"},
    "service": _obj({"type": _STR, "ports": {"type": "array", "items": _SERVICE_PORT},
                     "loadBalancerIP": _STR, "externalTrafficPolicy": _STR}),
    "strategy": {"type": "object"}, "tolerations": {"type": "array"}, "serviceAnnotations": _STR_MAP,
    "securityContext": {"type": "object"}, "volumes": {"type": "array"}, "volumeMounts": {"type": "array"},
    "overlays": {"type": "array"},
})
_COMPONENT = {"enabled": _BOOL, "namespace": _STR, "hub": _STR, "tag": {"type": ["string", "number"]}, "k8s": _K8S}
_GATEWAY = _obj({**_COMPONENT, "name": _STR, "label": _STR_MAP}, ("name",))
_VALUES = _obj({
    "global": _obj({"meshID": _STR, "network": _STR, "multiCluster": _obj({"clusterName": _STR}),
                    "externalIstiod": _BOOL, "remotePilotAddress": _STR}),
    "pilot": _obj({"env": {"type": "object"}}),
    "istiodRemote": _obj({"injectionPath": _STR}),
    # gen-eastwest-gateway.sh: values.gateways.istio-ingressgateway.injectionTemplate
    "gateways": _obj({"istio-ingressgateway": _obj({"injectionTemplate": _STR})}),
})
_MESH_CONFIG = _obj({"trustDomain": _STR, "defaultConfig": _obj({"proxyMetadata": _STR_MAP})})
ISTIO_OPERATOR = _obj({
    "apiVersion": {"const": "install.istio.io/v1alpha1"}, "kind": {"const": "IstioOperator"}, "metadata": _META,
    "spec": _obj({
        "profile": {"enum": ["default", "demo", "minimal", "remote", "empty", "preview", "ambient"]},
        "installPackagePath": _STR, "hub": _STR, "tag": {"type": ["string", "number"]}, "namespace": _STR,
        "revision": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "compatibilityVersion": _STR, "meshConfig": _MESH_CONFIG,
        "components": _obj({"base": _obj({"enabled": _BOOL, "k8s": _K8S}), "pilot": _obj(_COMPONENT),
                            "cni": _obj(_COMPONENT), "ztunnel": _obj(_COMPONENT), "istiodRemote": _obj(_COMPONENT),
                            "ingressGateways": {"type": "array", "items": _GATEWAY},
                            "egressGateways": {"type": "array", "items": _GATEWAY}}),
        "values": _VALUES,
    }),
}, ("apiVersion", "kind"))

INSTALL_KINDS: dict[tuple[str, str], dict[str, Any]] = {
    ("install.istio.io/v1alpha1", "IstioOperator"): ISTIO_OPERATOR,
}
_VALIDATORS: dict[int, Any] = {}


def _validator(schema: dict[str, Any]) -> Any:
    if id(schema) not in _VALIDATORS:
        _VALIDATORS[id(schema)] = jsonschema.Draft7Validator(schema)
    return _VALIDATORS[id(schema)]


def validate_install_document(doc: Mapping[str, Any],
                              kinds: Mapping[tuple[str, str], dict[str, Any]] = INSTALL_KINDS) -> None:
    """Validate an install document of ``kinds`` (default: IstioOperator); raise ManifestError naming the field."""
    key = (str(doc.get("apiVersion", "")), str(doc.get("kind", "")))
    if key not in kinds:
        raise ManifestError(f"{doc_ref(doc)}: {key[0]} {key[1]} is not an install document meshconf knows")
    errors = sorted(_validator(kinds[key]).iter_errors(dict(doc)), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            raise ManifestError(f"{doc_ref(doc)}: unknown field {path}.{extra[0] if extra else '?'}")
        raise ManifestError(f"{doc_ref(doc)}: field {path}: {error.message}")


def validate_manifest(doc: Mapping[str, Any], kubernetes_version: str | None = None,
                      kinds: Mapping[tuple[str, str], dict[str, Any]] = INSTALL_KINDS) -> str:
    """Validate any document meshconf generates with the validator that owns it; returns which one.

    Istio resources: Istio's CRD schemas (conformance.istio). Kubernetes built-ins: kubernetes-validate.
    Install documents (``kinds``): the schemas above and the provider's.
    """
    from conformance.providers.kube.validation import KUBERNETES_VERSION, is_kubernetes_kind, validate_kubernetes

    if str(doc.get("kind")) in ISTIO_KINDS and str(doc.get("apiVersion", "")).split("/")[0].endswith("istio.io"):
        validate_document(doc)
        return "istio"
    if is_kubernetes_kind(doc):
        validate_kubernetes([doc], kubernetes_version or KUBERNETES_VERSION)
        return "kubernetes"
    validate_install_document(doc, kinds)
    return "install"
