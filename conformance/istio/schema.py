"""Validate Istio documents offline against Istio's own CRD schemas (``crd-all.gen.yaml`` beside this file).

An unknown or misspelled field, a wrong type or a bad enum value is a ManifestError that names the document
and the field path. The CRD schemas are structural (the API server prunes unknown fields instead of
rejecting them), so every object schema that lists its properties is closed here: a typo in a check's YAML
must never be silently dropped.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jsonschema
import yaml

from conformance.errors import ManifestError

__all__ = ["ISTIO_KINDS", "doc_ref", "load_schemas", "validate_document"]

ISTIO_KINDS = frozenset({
    "AuthorizationPolicy", "DestinationRule", "EnvoyFilter", "Gateway", "PeerAuthentication", "ProxyConfig",
    "RequestAuthentication", "ServiceEntry", "Sidecar", "Telemetry", "VirtualService", "WasmPlugin",
    "WorkloadEntry", "WorkloadGroup", "TrafficExtension",
})


def doc_ref(doc: Mapping[str, Any]) -> str:
    """``Kind namespace/name`` for messages."""
    meta = doc.get("metadata") or {}
    namespace = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{doc.get('kind', '?')} {namespace}/{name}" if namespace else f"{doc.get('kind', '?')} {name}"


def validate_document(doc: Mapping[str, Any]) -> None:
    """Raise ManifestError if ``doc`` is not a valid Istio resource of a version Istio serves."""
    if not isinstance(doc, Mapping):
        raise ManifestError(f"a YAML document must be a mapping, got {type(doc).__name__}")
    api_version = str(doc.get("apiVersion", ""))
    kind = str(doc.get("kind", ""))
    ref = doc_ref(doc)
    group, _, version = api_version.partition("/")
    schemas = _schemas()
    if (group, kind) not in {(g, k) for g, k, _ in schemas}:
        raise ManifestError(f"{ref}: apiVersion {api_version!r} kind {kind!r} is not an Istio resource")
    schema = schemas.get((group, kind, version))
    if schema is None:
        served = sorted(v for g, k, v in schemas if (g, k) == (group, kind))
        raise ManifestError(f"{ref}: Istio does not serve {kind} at {api_version}; use one of "
                            + ", ".join(f"{group}/{v}" for v in served))
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("name"):
        raise ManifestError(f"{ref}: metadata.name is required")
    body = {k: v for k, v in doc.items() if k in ("spec",)}
    errors = sorted(_validator(group, kind, version).iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        raise ManifestError(f"{ref}: {_describe(errors[0])}")


def _describe(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "spec"
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = ", ".join(sorted(error.schema.get("properties", {})))
        where = f"{path}.{extra[0]}" if extra else path
        return f"unknown field {where!r} (fields Istio defines here: {known})"
    if error.validator == "enum":
        return f"field {path!r}: {error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    return f"field {path!r}: {error.message}"


def load_schemas() -> None:
    """Parse the schemas now (about a second) rather than on the first validation."""
    _schemas()


@functools.cache
def _schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    text = (resources.files("conformance.istio") / "crd-all.gen.yaml").read_text()
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader parses the 1 MB file ~10x faster
    for crd in yaml.load_all(text, Loader=loader):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served", True) and "schema" in version:
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                _close(schema)
                found[(spec["group"], spec["names"]["kind"], version["name"])] = schema
    return found


@functools.cache
def _validator(group: str, kind: str, version: str) -> jsonschema.protocols.Validator:
    schema = _schemas()[(group, kind, version)]
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema)


def _close(schema: Any) -> None:
    """Forbid properties a structural schema does not list (unless it preserves unknown fields)."""
    if isinstance(schema, dict):
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for value in schema.values():
            _close(value)
    elif isinstance(schema, list):
        for item in schema:
            _close(item)
