"""The CRDs' CEL rules (x-kubernetes-validations) refuse what the API server refuses and accept what it accepts.

The documents are in ``istio_cel_documents.yaml`` beside this file; most come from Istio's own CRD validation
tests (istio/istio pkg/config/validation/testdata/crds/, run by pkg/config/validation/openapi_test.go through
the API server's validator), each marked with its file.
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.errors import ManifestError
from conformance.istio import validate_document
from conformance.istio.cel import CelRuleError, RuleTree, compile_rules
from conformance.istio.cel_urls import is_url, parse_url
from conformance.istio.schema import _rules, _schemas, load_schemas

ROOT = Path(__file__).resolve().parents[2]

DOCUMENTS = Path(__file__).with_name("istio_cel_documents.yaml")


def _cases(refused: bool) -> Iterator[Any]:
    for doc in yaml.safe_load_all(DOCUMENTS.read_text()):
        if ("_err" in doc) is refused:
            doc["metadata"]["namespace"] = "n"
            expected = (doc.pop("_path", None), doc.pop("_err", None))
            yield pytest.param(doc, *expected, id=doc["metadata"]["name"])


@pytest.mark.parametrize(("doc", "path", "message"), list(_cases(refused=True)))
def test_refused_as_the_api_server_refuses(doc: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(ManifestError) as refused:
        validate_document(doc)
    text = str(refused.value)
    assert text.startswith(f"{doc['kind']} n/{doc['metadata']['name']}: field '{path}': "), text
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(("doc", "path", "message"), list(_cases(refused=False)))
def test_accepted_as_the_api_server_accepts(doc: dict[str, Any], path: None, message: None) -> None:
    validate_document(doc)


def _declared_rules(node: Any) -> int:
    """Rules anywhere in a CRD, counted without the compiler's walk (so a rule it misses shows)."""
    if isinstance(node, Mapping):
        own = len(node.get("x-kubernetes-validations") or [])
        return own + sum(_declared_rules(v) for k, v in node.items() if k != "x-kubernetes-validations")
    if isinstance(node, list):
        return sum(_declared_rules(v) for v in node)
    return 0


def test_every_rule_of_every_kind_compiles() -> None:
    load_schemas()  # raises CelRuleError for a rule meshconf cannot compile
    text = (ROOT / "conformance/istio/crd-all.gen.yaml").read_text()
    declared = {}
    for crd in yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        for version in crd["spec"]["versions"]:
            key = (crd["spec"]["group"], crd["spec"]["names"]["kind"], version["name"])
            declared[key] = _declared_rules(version["schema"]["openAPIV3Schema"])
    compiled = {key: (tree.count() if (tree := _rules(*key)) else 0) for key in _schemas()}
    assert compiled == {key: n for key, n in declared.items() if key in compiled}
    assert sum(compiled.values()) == 398  # Istio's CRDs as shipped (345 x-kubernetes-validations lists)


def test_istio_declares_no_transition_rules() -> None:
    """The local mesh validates without the stored document; that loses nothing while no rule reads oldSelf."""
    def transition(tree: RuleTree | None) -> bool:
        if tree is None:
            return False
        children = [*tree.properties.values(), tree.items, tree.values]
        return any(r.transition for r in tree.rules) or any(transition(c) for c in children)

    with_old_self = [key for key in _schemas() if transition(_rules(*key))]
    assert not with_old_self, f"pass the stored document as validate_document(doc, old) for {with_old_self}"


class _SuiteVariables(dict[str, str]):
    """A check's ${variables}: regions (``region1``, ``near_region``...) become a region, others a name."""

    def __missing__(self, key: str) -> str:
        return "region1" if "region" in key else "x"


def test_every_suite_manifest_passes_the_rules() -> None:
    variables = _SuiteVariables(namespace="n", external_address="127.0.0.1")
    checked = 0
    for path in sorted((ROOT / "suites").rglob("*.yaml")):
        for doc in yaml.safe_load_all(string.Template(path.read_text()).substitute(variables)):
            if doc and str(doc.get("apiVersion", "")).split("/")[0].endswith("istio.io"):
                validate_document(doc)
                checked += 1
    assert checked > 30


# -- rule semantics, on small schemas --------------------------------------------------------------------


def _tree(spec_schema: dict[str, Any]) -> RuleTree:
    tree = compile_rules({"type": "object", "properties": {"spec": spec_schema}}, "Test")
    assert tree is not None
    return tree


def _violations(tree: RuleTree, spec: Any, old: Any = None) -> list[tuple[str, str]]:
    old_body = {"spec": old} if old is not None else None
    return [(v.path, v.message) for v in tree.check({"spec": spec}, old_body)]


def _string(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"type": "string", "x-kubernetes-validations": list(rules)}


def test_message_expression_field_path_and_reason() -> None:
    tree = _tree({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}},
                  "x-kubernetes-validations": [
                      {"rule": "self.a.b != 'x'", "messageExpression": "'b is ' + self.a.b", "fieldPath": ".a.b"},
                      {"rule": "self.a.b != 'y'", "messageExpression": "''", "message": "empty falls back"},
                      {"rule": "self.a.b != 'z'", "reason": "FieldValueForbidden", "message": "no z"},
                      {"rule": "self.a.b != 'w'"},
                  ]})
    assert _violations(tree, {"a": {"b": "x"}}) == [("spec.a.b", "b is x")]
    assert _violations(tree, {"a": {"b": "y"}}) == [("spec", "empty falls back")]
    assert _violations(tree, {"a": {"b": "z"}}) == [("spec", "forbidden: no z")]
    assert _violations(tree, {"a": {"b": "w"}}) == [("spec", "failed rule: self.a.b != 'w'")]
    assert _violations(tree, {"a": {"b": "ok"}}) == []


def test_rules_run_per_list_item_and_map_value_and_never_on_absent_fields() -> None:
    rule = {"rule": "self.startsWith('a')", "message": "must start with a"}
    tree = _tree({"type": "object", "properties": {
        "list": {"type": "array", "items": _string(rule)},
        "map": {"type": "object", "additionalProperties": _string(rule)},
        "absent": _string({"rule": "false", "message": "never evaluated"}),
    }})
    assert _violations(tree, {"list": ["ab", "b"], "map": {"k": "c"}}) == [
        ("spec.list.1", "must start with a"), ("spec.map.k", "must start with a")]
    assert _violations(tree, {"absent": None}) == []  # null is not evaluated either


def test_self_is_typed_and_escaped_as_the_api_server_shows_it() -> None:
    preserved = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    tree = _tree({"type": "object", "properties": {
        "namespace": {"type": "string"}, "max-rate": {"type": "number"}, "unknown": preserved},
        "x-kubernetes-validations": [
            {"rule": "self.__namespace__ == 'ns'", "message": "namespace escaped"},
            {"rule": "type(self.max__dash__rate) == double", "message": "number is a double"},
            {"rule": "!has(self.unknown) || !has(self.unknown.extra)", "message": "unknown fields are invisible"},
        ]})
    assert _violations(tree, {"namespace": "ns", "max-rate": 5, "unknown": {"extra": 1}}) == []
    assert _violations(tree, {"namespace": "other", "max-rate": 5.0}) == [("spec", "namespace escaped")]


def test_transition_rules_apply_on_update_with_the_correlated_old_value() -> None:
    immutable = {"rule": "self == oldSelf", "message": "is immutable"}
    tree = _tree({"type": "object", "properties": {
        "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                  "items": {"type": "object", "properties": {"name": {"type": "string"},
                                                             "number": {"type": "integer",
                                                                        "x-kubernetes-validations": [immutable]}}}},
        "mode": _string(immutable)}})
    assert _violations(tree, {"mode": "a", "ports": [{"name": "p", "number": 1}]}) == []  # a create
    old = {"mode": "a", "ports": [{"name": "p", "number": 1}, {"name": "q", "number": 2}]}
    assert _violations(tree, {"mode": "a", "ports": [{"name": "q", "number": 2}, {"name": "p", "number": 1}]},
                       old) == []  # items correlate by key, not index
    assert _violations(tree, {"mode": "b", "ports": [{"name": "q", "number": 3}, {"name": "r", "number": 9}]},
                       old) == [("spec.mode", "is immutable"), ("spec.ports.0.number", "is immutable")]


def test_evaluation_errors_refuse() -> None:
    tree = _tree({"type": "object", "additionalProperties": {"type": "string"},
                  "x-kubernetes-validations": [{"rule": "self.all(k, int(k) > 0)", "message": "keys are ports"}]})
    [(path, message)] = _violations(tree, {"http": "x"})
    assert path == "spec"
    assert message.startswith("keys are ports (evaluating the rule failed: ")


@pytest.mark.parametrize(
    ("spec_schema", "problem"),
    [
        (_string({"rule": "isCIDR(self)"}), "does not compile"),
        (_string({"rule": "self.startsWith("}), "does not compile"),
        (_string({"rule": "self == oldSelf", "optionalOldSelf": True}), "optionalOldSelf"),
        (_string({"rule": "true", "reason": "FieldValueTooLong"}), "unknown reason"),
        (_string({"rule": "true", "messageExpression": "1"}), "not a string"),
        (_string({"rule": "true", "fieldPath": ".nope"}), "does not name a field"),
        ({"type": "object", "anyOf": [{"x-kubernetes-validations": [{"rule": "true"}]}]}, "not evaluated"),
        ({"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}},
          "x-kubernetes-validations": [{"rule": "true"}]}, "format date-time"),
    ],
)
def test_a_rule_meshconf_cannot_evaluate_is_an_error_at_load(spec_schema: dict[str, Any], problem: str) -> None:
    with pytest.raises(CelRuleError, match=problem):
        _tree(spec_schema)


# -- the Kubernetes URL library (examples from k8s.io/apiserver/pkg/cel/library/urls.go) --------------------


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        ("https://user:pass@example.com:80/path?query=val#fragment", True),
        ("/absolute-path", True),
        ("https://a:b:c/", False),
        ("../relative-path", False),
        ("example.com/path", False),  # neither an absolute URI nor an absolute path
        ("mailto:someone", True),  # opaque
        ("http://[::1]:80/", True),
        ("http://[example.com]/", False),  # brackets hold an IPv6 address only
        ("http://exa%41mple.com/", False),  # hosts %-encode non-ASCII bytes only
        ("http://example.com/a%zz", False),
        ("", False),
    ],
)
def test_is_url_follows_go_parse_request_uri(raw: str, valid: bool) -> None:
    assert is_url(raw) is valid


def test_url_parts() -> None:
    assert parse_url("https://example.com:80/").host == "example.com:80"
    assert parse_url("https://[::1]:80/").hostname() == "::1"
    assert parse_url("https://[::1]:80/").port() == "80"
    assert parse_url("/path").scheme == ""
    assert parse_url("HTTPS://example.com/").scheme == "https"


# -- known differences between cel-expr-python (CEL C++) and cel-go, the API server's CEL -------------------


@pytest.mark.xfail(reason="CEL C++'s int() accepts surrounding whitespace; cel-go (strconv.ParseInt) refuses it")
def test_int_of_a_spaced_port_key_is_refused() -> None:
    with pytest.raises(ManifestError, match="port must be between"):
        validate_document({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                           "metadata": {"name": "p", "namespace": "n"},
                           "spec": {"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {" 80": {}}}})


@pytest.mark.xfail(reason="CEL C++'s duration() refuses the micro sign; cel-go (time.ParseDuration) accepts it")
def test_microsecond_sign_duration_is_accepted() -> None:
    pool = {"tcp": {"connectTimeout": "5000µs"}}
    validate_document({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                       "metadata": {"name": "d", "namespace": "n"},
                       "spec": {"host": "a", "trafficPolicy": {"connectionPool": pool}}})
