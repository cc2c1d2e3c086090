"""A small model of how Envoy's HTTP RBAC filter decides, so translation can be tested as request -> verdict.

It covers only the matchers the translator emits. The integration tests hold the same cases against real
Envoy, which keeps this model honest.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Request", "verdict"]


@dataclass(frozen=True)
class Request:
    """What the server's sidecar knows about one request."""

    peer: str | None = "spiffe://cluster.local/ns/ns/sa/frontend"
    """The URI SAN of the client certificate; None for a plaintext caller."""
    path: str = "/"
    method: str = "GET"
    host: str = "server.ns.svc.cluster.local:8080"
    port: int = 8080
    source_ip: str = "127.11.0.3"
    headers: Mapping[str, str] = field(default_factory=dict)
    jwt: Mapping[str, Any] | None = None
    """The payload of a JWT that jwt_authn verified (its dynamic metadata); None: no verified token."""
    sni: str = "outbound_.8080_._.server.ns.svc.cluster.local"
    destination_ip: str = "127.11.0.2"

    def header(self, name: str) -> str | None:
        pseudo = {":authority": self.host, ":method": self.method, ":path": self.path}
        if name in pseudo:
            return pseudo[name]
        return {k.lower(): v for k, v in self.headers.items()}.get(name.lower())

    @property
    def remote_ip(self) -> str:
        """With use_remote_address false, Envoy trusts the last X-Forwarded-For entry when there is one."""
        xff = self.header("x-forwarded-for")
        return xff.split(",")[-1].strip() if xff else self.source_ip


def verdict(filters: Mapping[str, Mapping[str, Any]]) -> Any:
    """A function Request -> 200 or 403 for the filters (name -> RBAC typed config), in order."""

    def decide(request: Request) -> int:
        for config in filters.values():
            rules = config.get("rules")
            if rules is None:
                continue
            matched = any(_policy(p, request) for p in (rules.get("policies") or {}).values())
            if matched == (rules["action"] == "DENY"):
                return 403
        return 200

    return decide


def _policy(policy: Mapping[str, Any], request: Request) -> bool:
    return (any(_permission(p, request) for p in policy["permissions"])
            and any(_principal(p, request) for p in policy["principals"]))


def _permission(rule: Mapping[str, Any], request: Request) -> bool:
    (kind, value), = rule.items()
    if kind == "any":
        return bool(value)
    if kind == "and_rules":
        return all(_permission(r, request) for r in value["rules"])
    if kind == "or_rules":
        return any(_permission(r, request) for r in value["rules"])
    if kind == "not_rule":
        return not _permission(value, request)
    if kind == "header":
        return _header(value, request)
    if kind == "url_path":
        return _string(value["path"], request.path.split("?", 1)[0])
    if kind == "destination_port":
        return bool(request.port == value)
    if kind == "destination_ip":
        return _in(request.destination_ip, value)
    if kind == "requested_server_name":
        return _string(value, request.sni)
    if kind == "uri_template":
        return _template(value["typed_config"]["path_template"], request.path.split("?", 1)[0])
    if kind == "metadata":
        return _metadata(value, request)
    raise AssertionError(f"the model does not know permission {kind}")


def _principal(rule: Mapping[str, Any], request: Request) -> bool:
    (kind, value), = rule.items()
    if kind == "any":
        return bool(value)
    if kind == "and_ids":
        return all(_principal(r, request) for r in value["ids"])
    if kind == "or_ids":
        return any(_principal(r, request) for r in value["ids"])
    if kind == "not_id":
        return not _principal(value, request)
    if kind == "authenticated":
        return request.peer is not None and _string(value["principal_name"], request.peer)
    if kind == "header":
        return _header(value, request)
    if kind in ("direct_remote_ip", "remote_ip"):
        return _in(request.source_ip if kind == "direct_remote_ip" else request.remote_ip, value)
    if kind == "metadata":
        return _metadata(value, request)
    raise AssertionError(f"the model does not know principal {kind}")


def _in(address: str, cidr: Mapping[str, Any]) -> bool:
    network = ipaddress.ip_network(f"{cidr['address_prefix']}/{cidr['prefix_len']}", strict=False)
    return ipaddress.ip_address(address) in network


def _template(template: str, path: str) -> bool:
    """Envoy's uri_template: ``*`` is one path segment, ``**`` (last) zero or more."""
    pattern = "".join("[^/]+" if part == "*" else ".*" if part == "**" else re.escape(part)
                      for part in re.split(r"(\*\*|\*)", template))
    return re.fullmatch(pattern, path) is not None


def _metadata(matcher: Mapping[str, Any], request: Request) -> bool:
    """A metadata matcher over jwt_authn's dynamic metadata (the only metadata the translator matches)."""
    if matcher["filter"] != "envoy.filters.http.jwt_authn" or request.jwt is None:
        return False
    found: Any = {"payload": request.jwt}
    for segment in matcher["path"]:
        if not isinstance(found, Mapping) or segment["key"] not in found:
            return False
        found = found[segment["key"]]
    return _value(matcher["value"], found)


def _value(matcher: Mapping[str, Any], value: Any) -> bool:
    (kind, spec), = matcher.items()
    if kind == "string_match":
        return isinstance(value, str) and _string(spec, value)
    if kind == "list_match":
        return isinstance(value, list) and any(_value(spec["one_of"], item) for item in value)
    if kind == "or_match":
        return any(_value(m, value) for m in spec["value_matchers"])
    raise AssertionError(f"the model does not know value matcher {kind}")


def _header(matcher: Mapping[str, Any], request: Request) -> bool:
    found = request.header(matcher["name"])
    if found is None:
        return False
    if matcher.get("present_match"):
        return True
    return _string(matcher["string_match"], found)


def _string(matcher: Mapping[str, Any], text: str) -> bool:
    fold = (lambda s: s.lower()) if matcher.get("ignore_case") else (lambda s: s)
    if "exact" in matcher:
        return bool(fold(text) == fold(matcher["exact"]))
    if "prefix" in matcher:
        return fold(text).startswith(fold(matcher["prefix"]))
    if "suffix" in matcher:
        return fold(text).endswith(fold(matcher["suffix"]))
    if "safe_regex" in matcher:
        return re.fullmatch(matcher["safe_regex"]["regex"], text) is not None
    raise AssertionError(f"the model does not know string matcher {sorted(matcher)}")
