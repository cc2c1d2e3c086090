"""Istio's API as data: its CRD schemas, and validation of Istio documents against them."""

from conformance.istio.schema import ISTIO_KINDS, doc_ref, validate_document

__all__ = ["ISTIO_KINDS", "doc_ref", "validate_document"]
