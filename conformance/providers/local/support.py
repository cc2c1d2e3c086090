"""What the local mesh's translator implements, field by field.

Documents are first validated against Istio's schemas (an unknown field is a ManifestError). A field that
Istio defines but the translator does not implement is an UnsupportedError naming the field: the local
mesh never silently ignores config, because a check that passes on ignored config proves nothing.

The table is a tree of the supported fields: ``True`` = any value, a set = only these values, ``"*"`` = any
map key, and a list's items are checked against the tree of the list field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conformance.errors import UnsupportedError
from conformance.istio import doc_ref

__all__ = ["SUPPORTED", "check_supported"]

_LABELS = {"*": True}
SUPPORTED: dict[str, dict[str, Any]] = {
    "PeerAuthentication": {
        "selector": {"matchLabels": _LABELS},
        "mtls": {"mode": True},
        "portLevelMtls": {"*": {"mode": True}},
    },
    "DestinationRule": {
        "host": True,
        "trafficPolicy": {"tls": {"mode": {"ISTIO_MUTUAL", "DISABLE"}}},
    },
}


def check_supported(doc: Mapping[str, Any]) -> None:
    """Raise UnsupportedError if ``doc`` uses anything the local mesh cannot honour."""
    kind = str(doc.get("kind"))
    tree = SUPPORTED.get(kind)
    if tree is None:
        kinds = ", ".join(sorted(SUPPORTED))
        raise UnsupportedError(f"{doc_ref(doc)}: {kind} is supported by Istio, not by the local mesh "
                               f"(it implements {kinds})")
    _walk(doc.get("spec") or {}, tree, "spec", doc)


def _walk(value: Any, tree: Any, path: str, doc: Mapping[str, Any]) -> None:
    if tree is True:
        return
    if isinstance(tree, set):
        if value not in tree:
            raise UnsupportedError(
                f"{doc_ref(doc)}: {path}={value!r} is supported by Istio, not by the local mesh "
                f"(it implements {', '.join(sorted(tree))})"
            )
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, tree, f"{path}[{i}]", doc)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            sub = tree.get(key, tree.get("*"))
            if sub is None:
                raise UnsupportedError(
                    f"{doc_ref(doc)}: field {path}.{key} is supported by Istio, not by the local mesh"
                )
            _walk(item, sub, f"{path}.{key}", doc)
