"""Evaluate the CRDs' CEL validation rules (``x-kubernetes-validations``) as the Kubernetes API server does.

Semantics followed (k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel/validation.go and
k8s.io/apiserver/pkg/cel/common/schemas.go; kubernetes.io "Validation rules" in the CRD docs):

- A rule is evaluated at the schema node that declares it, with ``self`` bound to that node's value, once per
  list item (``items``) and once per map value (``additionalProperties``). A node that is absent or null is
  not evaluated: presence is checked from the enclosing object with ``has()``.
- ``self`` is typed by the schema: ``number`` is a double, ``integer`` an int, declared properties appear
  under their escaped names (``namespace`` -> ``__namespace__``, ``a-b`` -> ``a__dash__b``), undeclared
  (preserved unknown) fields are not visible. Formats that change the CEL type (byte, date, date-time,
  duration) are refused at load if a rule can see one: meshconf does not convert them, and none of Istio's
  rules can.
- A rule passes only if it evaluates to ``true``. An evaluation error (a missing key, a bad ``int()``
  conversion, an invalid ``url()``) refuses the document, as the API server does.
- The message is ``messageExpression`` if it evaluates to a non-empty one-line string, else ``message``, else
  ``failed rule: <rule>``; ``fieldPath`` extends the reported path; ``reason`` picks the error's wording.
- Transition rules (those that read ``oldSelf``) apply only on update, when the node has a correlated old
  value (same property, same map key, same list-map key); the caller passes the stored document as ``old``.
  ``optionalOldSelf`` is refused at load. Ratcheting (the API server forgiving errors already present in an
  unchanged stored value) is not modelled: meshconf never stores a document that failed validation.

A rule meshconf cannot compile or evaluate raises CelRuleError (a defect in meshconf, found by the unit test
that compiles every rule), never a silent skip. The CEL implementation is cel-expr-python (Google's CEL C++
runtime) with the strings extension (``substring`` etc., as cel-go's ext.Strings in the API server) and the
Kubernetes URL library (``cel_urls``). Known differences from cel-go: ``int(" 80")`` accepts surrounding
whitespace and ``duration("1µs")`` refuses the micro sign (cel-go: the opposite); the tests pin both.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext import ext_optional, ext_strings

from conformance.istio.cel_urls import URL_FUNCTIONS

__all__ = ["CelRuleError", "RuleTree", "Violation", "compile_rules"]

# CEL reserved words; a property with one of these names is visible to rules as __name__
# (k8s.io/apiserver/pkg/cel/escaping.go)
_RESERVED = frozenset({
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if",
    "import", "let", "loop", "package", "namespace", "return", "var", "void", "while",
})
_ESCAPABLE = re.compile(r"[a-zA-Z_.\-/][a-zA-Z0-9_.\-/]*")
_ESCAPES = re.compile(r"__|[.\-/]")
_ESCAPE_NAMES = {"__": "__underscores__", ".": "__dot__", "-": "__dash__", "/": "__slash__"}
_TYPED_FORMATS = frozenset({"byte", "date", "date-time", "duration"})
_REASONS = {
    None: "", "FieldValueInvalid": "", "FieldValueForbidden": "forbidden: ", "FieldValueRequired": "required: ",
    "FieldValueDuplicate": "duplicate value: ",
}
_RULE_KEYS = frozenset({"rule", "message", "messageExpression", "fieldPath", "reason", "optionalOldSelf"})
_UNSUPPORTED_POSITIONS = ("allOf", "anyOf", "oneOf", "not")


class CelRuleError(RuntimeError):
    """A CRD validation rule meshconf cannot compile or evaluate: a defect in meshconf, never skipped."""


@dataclass(frozen=True)
class Violation:
    """A rule the document breaks: where (dotted path from the root) and the API server's message."""

    path: str
    message: str


@dataclass(frozen=True)
class _Rule:
    text: str
    program: Any
    transition: bool  # reads oldSelf
    message: str
    message_program: Any | None
    field_path: tuple[str, ...]
    reason_prefix: str


@dataclass
class RuleTree:
    """The rules of one schema node, and the children whose subtrees hold rules (as the API server's Validator)."""

    schema: Mapping[str, Any]
    rules: list[_Rule] = field(default_factory=list)
    properties: dict[str, RuleTree] = field(default_factory=dict)
    items: RuleTree | None = None
    values: RuleTree | None = None  # additionalProperties

    def count(self) -> int:
        """How many rules this subtree evaluates."""
        children = [*self.properties.values(), self.items, self.values]
        return len(self.rules) + sum(c.count() for c in children if c is not None)

    def check(self, value: Any, old: Any = None, path: str = "") -> Iterator[Violation]:
        """Every rule ``value`` breaks, in document order; ``old`` is the stored value on update."""
        if value is None:
            return
        if self.rules:
            yield from self._evaluate(value, old, path)
        if isinstance(value, Mapping):
            for key, child in value.items():
                node = self.properties.get(key) if self.properties else self.values
                if node is not None:
                    old_child = old.get(key) if isinstance(old, Mapping) else None
                    yield from node.check(child, old_child, _join(path, key))
        elif isinstance(value, list) and self.items is not None:
            for i, item in enumerate(value):
                yield from self.items.check(item, self._old_item(item, old), _join(path, i))

    def _old_item(self, item: Any, old: Any) -> Any:
        """The stored item an item replaces: only map-type lists correlate items (by their keys)."""
        keys = self.schema.get("x-kubernetes-list-map-keys")
        if self.schema.get("x-kubernetes-list-type") != "map" or not keys or not isinstance(old, list):
            return None
        if not isinstance(item, Mapping):
            return None
        wanted = [item.get(k) for k in keys]
        return next((o for o in old if isinstance(o, Mapping) and [o.get(k) for k in keys] == wanted), None)

    def _evaluate(self, value: Any, old: Any, path: str) -> Iterator[Violation]:
        data = {"self": _view(self.schema, value)}
        if old is not None and any(r.transition for r in self.rules):
            data["oldSelf"] = _view(self.schema, old)
        for rule in self.rules:
            if rule.transition and "oldSelf" not in data:
                continue  # a transition rule applies on update only, as the API server does
            result = _eval(rule, rule.program, data)
            if result == ("BOOL", True):
                continue
            if result[0] == "ERROR":
                failure = _one_line(str(result[1]))
                yield Violation(path or "<root>", f"{rule.message} (evaluating the rule failed: {failure})")
                continue
            where = _join(path, *rule.field_path) if rule.field_path else path
            yield Violation(where or "<root>", rule.reason_prefix + self._message(rule, data))

    def _message(self, rule: _Rule, data: Mapping[str, Any]) -> str:
        if rule.message_program is not None:
            kind, text = _eval(rule, rule.message_program, data)
            if kind == "STRING" and isinstance(text, str) and text.strip() and "\n" not in text.strip():
                return text.strip()
        return rule.message


def compile_rules(schema: Mapping[str, Any], where: str) -> RuleTree | None:
    """Compile every rule in ``schema`` (an openAPIV3Schema); None if it has none. Raises CelRuleError."""
    if schema.get("x-kubernetes-validations"):
        # the API server shows root rules apiVersion, kind and metadata too; meshconf validates only spec
        raise CelRuleError(f"{where}: rules on the resource root are not evaluated by meshconf")
    return _compile_node(schema, where, "")


def _compile_node(schema: Mapping[str, Any], where: str, path: str) -> RuleTree | None:
    for keyword in _UNSUPPORTED_POSITIONS:
        if keyword in schema and "x-kubernetes-validations" in repr(schema[keyword]):
            raise CelRuleError(f"{where}: rules under {_join(path, keyword)} are not evaluated by meshconf")
    node = RuleTree(schema)
    declared = schema.get("x-kubernetes-validations") or []
    if declared:
        _refuse_typed_formats(schema, where, path)
    node.rules = [_compile_rule(spec, schema, where, path) for spec in declared]
    for name, sub in (schema.get("properties") or {}).items():
        child = _compile_node(sub, where, _join(path, name))
        if child is not None:
            node.properties[name] = child
    items = schema.get("items")
    if isinstance(items, Mapping):
        node.items = _compile_node(items, where, _join(path, "[]"))
    values = schema.get("additionalProperties")
    if isinstance(values, Mapping):
        node.values = _compile_node(values, where, _join(path, "{}"))
    if not (node.rules or node.properties or node.items or node.values):
        return None
    return node


def _compile_rule(spec: Mapping[str, Any], schema: Mapping[str, Any], where: str, path: str) -> _Rule:
    at = f"{where}: rule at {path or '<root>'}"
    unknown = set(spec) - _RULE_KEYS
    if unknown:
        raise CelRuleError(f"{at} has fields meshconf does not know: {', '.join(sorted(unknown))}")
    if spec.get("optionalOldSelf"):
        raise CelRuleError(f"{at} sets optionalOldSelf, which meshconf does not evaluate")
    text = str(spec.get("rule", ""))
    program, transition = _program(text, at)
    if program.return_type().name() not in ("BOOL", "DYN"):
        raise CelRuleError(f"{at} does not evaluate to a bool: {text!r}")
    message_program = None
    if spec.get("messageExpression"):
        message_program = _compiled(str(spec["messageExpression"]), transition, at)
        if message_program.return_type().name() not in ("STRING", "DYN"):
            raise CelRuleError(f"{at} has a messageExpression that is not a string")
    reason = spec.get("reason")
    if reason not in _REASONS:
        raise CelRuleError(f"{at} has an unknown reason {reason!r}")
    message = str(spec.get("message") or "").strip() or f"failed rule: {text.strip()}"
    return _Rule(text, program, transition, _one_line(message), message_program,
                 _field_path(str(spec.get("fieldPath") or ""), schema, at), _REASONS[reason])


def _program(text: str, at: str) -> tuple[Any, bool]:
    """Compile ``text``; it is a transition rule if it compiles only with ``oldSelf`` declared."""
    try:
        return _compiled(text, False, at), False
    except CelRuleError as plain:
        try:
            return _compiled(text, True, at), True
        except CelRuleError:
            raise plain from None


def _compiled(text: str, transition: bool, at: str) -> Any:
    program = _compile_text(text, transition)
    if isinstance(program, str):
        raise CelRuleError(f"{at} does not compile: {program}")
    return program


@functools.cache
def _compile_text(text: str, transition: bool) -> Any:
    """The compiled program, or the compiler's message (cached: Istio's 398 rules are 36 distinct texts)."""
    try:
        return _environment(transition).compile(text)
    except RuntimeError as e:
        return _one_line(str(e))


@functools.cache
def _environment(transition: bool) -> Any:
    variables = {"self": cel.Type.DYN}
    if transition:
        variables["oldSelf"] = cel.Type.DYN
    extensions = [ext_strings.ExtStrings(), ext_optional.ExtOptional()]
    return cel.NewEnv(variables=variables, extensions=extensions, functions=URL_FUNCTIONS)


def _eval(rule: _Rule, program: Any, data: Mapping[str, Any]) -> tuple[str, Any]:
    try:
        result = program.eval(data=dict(data))
        return str(result.type().name()), result.value()
    except Exception as e:  # the runtime itself failed (not a CEL error value): meshconf cannot judge
        raise CelRuleError(f"rule {rule.text!r} could not be evaluated by meshconf: {_one_line(str(e))}") from e


def _field_path(text: str, schema: Mapping[str, Any], at: str) -> tuple[str, ...]:
    """``fieldPath`` (``.a.b`` or ``['a']``) as path segments; it must name a field of the schema."""
    if not text:
        return ()
    segments = re.findall(r"\.([^.\[\]]+)|\['((?:[^'\\]|\\.)*)'\]", text)
    if "".join(f".{a}" if a else f"['{b}']" for a, b in segments) != text:
        raise CelRuleError(f"{at} has an invalid fieldPath {text!r}")
    names = tuple(a or b for a, b in segments)
    node = schema
    for name in names:
        if name in (node.get("properties") or {}):
            node = node["properties"][name]
        elif isinstance(node.get("additionalProperties"), Mapping):
            node = node["additionalProperties"]
        else:
            raise CelRuleError(f"{at} has a fieldPath {text!r} that does not name a field")
    return names


def _refuse_typed_formats(schema: Mapping[str, Any], where: str, path: str) -> None:
    if schema.get("type") == "string" and schema.get("format") in _TYPED_FORMATS:
        raise CelRuleError(f"{where}: a rule sees {path or '<root>'} (format {schema['format']}), "
                           "which meshconf does not convert for CEL")
    for name, sub in (schema.get("properties") or {}).items():
        _refuse_typed_formats(sub, where, _join(path, name))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), Mapping):
            _refuse_typed_formats(schema[key], where, _join(path, key))


# -- the value a rule sees ------------------------------------------------------------------------------------


def _view(schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` as the API server exposes it to CEL under ``schema`` (see the module docstring)."""
    if value is None or schema.get("x-kubernetes-int-or-string"):
        return value
    kind = schema.get("type")
    if kind == "object" and isinstance(value, Mapping):
        values = schema.get("additionalProperties")
        if isinstance(values, Mapping):
            return {_json_key(k): _view(values, v) for k, v in value.items()}
        visible = {}
        for key, child in value.items():
            sub = (schema.get("properties") or {}).get(key)
            name = _escape(str(key))
            if sub is not None and name is not None and _exposed(sub):
                visible[name] = _view(sub, child)
        return visible
    if kind == "array" and isinstance(value, list):
        items = schema.get("items") or {}
        return [_view(items, v) for v in value]
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _exposed(schema: Mapping[str, Any]) -> bool:
    """Whether the API server declares a CEL type for ``schema`` (common.SchemaDeclType is not nil)."""
    if schema.get("x-kubernetes-int-or-string"):
        return True
    kind = schema.get("type")
    if kind == "array":
        return isinstance(schema.get("items"), Mapping) and _exposed(schema["items"])
    if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
        return _exposed(schema["additionalProperties"])
    return kind in ("object", "string", "boolean", "number", "integer")


def _escape(name: str) -> str | None:
    """A property name as a CEL identifier, or None if the API server hides it (cel.Escape)."""
    if not name or name[0].isdigit():
        return None
    if name in _RESERVED:
        return f"__{name}__"
    if not _ESCAPABLE.fullmatch(name):
        return None
    return _ESCAPES.sub(lambda m: _ESCAPE_NAMES[m.group(0)], name)


def _json_key(key: Any) -> str:
    """A YAML map key as the JSON the API server receives spells it."""
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _join(path: str, *parts: object) -> str:
    return ".".join([path, *map(str, parts)]) if path else ".".join(map(str, parts))


def _one_line(text: str) -> str:
    return " ".join(text.split())
