"""Validate Istio documents offline against Istio's own CRD schemas (``crd-all.gen.yaml`` beside this file).

An unknown or misspelled field, a wrong type or a bad enum value is a ManifestError that names the document
and the field path. The CRD schemas are structural (the API server prunes unknown fields instead of
rejecting them), so every object schema that lists its properties is closed here: a typo in a check's YAML
must never be silently dropped. A document that passes the schema then goes through the CRDs' CEL rules
(``x-kubernetes-validations``, evaluated by ``conformance.istio.cel`` as the API server evaluates them).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jsonschema
import yaml

from conformance.errors import ManifestError
from conformance.istio.cel import RuleTree, compile_rules

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


def validate_document(doc: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> None:
    """Raise ManifestError if ``doc`` is not a valid Istio resource of a version Istio serves.

    ``old`` is the stored document ``doc`` replaces, if any: the CRDs' transition rules (those reading
    ``oldSelf``) apply only then, as on the API server. Raises CelRuleError if meshconf cannot evaluate a rule.
    """
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
    duplicate = _duplicate_list_entry(schema, body, "")
    if duplicate:
        raise ManifestError(f"{ref}: {duplicate}")
    rules = _rules(group, kind, version)
    if rules is not None:
        old_body = {"spec": old.get("spec")} if old is not None else None
        violation = next(rules.check(body, old_body), None)
        if violation is not None:
            raise ManifestError(f"{ref}: field {violation.path!r}: {violation.message}")


def _duplicate_list_entry(schema: Mapping[str, Any], value: Any, path: str) -> str | None:
    """A repeated entry of an ``x-kubernetes-list-type`` map (same keys) or set, which the API server refuses."""
    if isinstance(value, list):
        items = schema.get("items") or {}
        list_type = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen = set()
        for i, item in enumerate(value):
            if list_type in ("map", "set"):
                identity = {k: item.get(k) for k in keys} if list_type == "map" and isinstance(item, Mapping) else item
                text = json.dumps(identity, sort_keys=True, default=str)
                if text in seen:
                    unique = f"the keys {', '.join(keys)}" if list_type == "map" else "the entries"
                    return f"field '{path}.{i}': duplicate value {text} ({unique} of this list must be unique)"
                seen.add(text)
            found = _duplicate_list_entry(items, item, f"{path}.{i}")
            if found:
                return found
    elif isinstance(value, Mapping):
        properties = schema.get("properties") or {}
        values = schema.get("additionalProperties")
        for key, child in value.items():
            sub = properties.get(key, values if isinstance(values, Mapping) else None)
            found = _duplicate_list_entry(sub, child, f"{path}.{key}" if path else str(key)) if sub else None
            if found:
                return found
    return None


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
    """Parse the schemas and compile their CEL rules now rather than on the first validation.

    Raises CelRuleError if meshconf cannot compile one of the rules.
    """
    for group, kind, version in _schemas():
        _rules(group, kind, version)


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


@functools.cache
def _rules(group: str, kind: str, version: str) -> RuleTree | None:
    return compile_rules(_schemas()[(group, kind, version)], f"{kind} {group}/{version}")


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
