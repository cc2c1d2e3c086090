"""The Kubernetes CEL URL library (``isURL``, ``url``, ``getScheme``, ...) for Istio's CRD rules.

The API server's library (k8s.io/apiserver/pkg/cel/library/urls.go) parses with Go's ``net/url``: ``isURL(s)``
is true when ``url.ParseRequestURI(s)`` succeeds, and ``url(s)`` is an error unless it does (then the URL is
re-parsed with ``url.Parse``, which cuts off a ``#fragment``). Python's urllib accepts and splits URLs
differently, so the parts of ``net/url``'s parser that decide validity, scheme and host are written out here
(src/net/url/url.go: ``getScheme``, ``parse``, ``parseAuthority``, ``parseHost``, ``validUserinfo``,
``unescape``, ``splitHostPort``).

cel-expr-python cannot carry an opaque value between functions, so a URL is a ``map(string, string)`` of its
parsed parts; only the member functions below read it. ``getEscapedPath`` and ``getQuery`` are not provided:
no Istio rule uses them, and a rule that did would fail to compile (an error at load, never a skip).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from cel_expr_python import cel

__all__ = ["URL_FUNCTIONS", "URLParseError", "is_url", "parse_url"]

_HOST_EXTRA = frozenset("!$&'()*+,;=:[]<>\"")  # sub-delims and the bytes Go's host parser lets through unescaped
_UNRESERVED_MARKS = frozenset("-_.~")
_USERINFO_EXTRA = frozenset("-._:~!$&'()*+,;=%@")
_HEX = frozenset("0123456789abcdefABCDEF")


class URLParseError(ValueError):
    """``net/url`` would refuse the string."""


@dataclass(frozen=True)
class ParsedURL:
    """What Go's ``url.Parse`` returns, as far as the Kubernetes URL library reads it."""

    scheme: str
    host: str

    def hostname(self) -> str:
        return _split_host_port(self.host)[0]

    def port(self) -> str:
        return _split_host_port(self.host)[1]


def is_url(raw: str) -> bool:
    """Kubernetes ``isURL``: an absolute URI or an absolute path, by ``url.ParseRequestURI``."""
    try:
        _parse(raw, via_request=True)
    except URLParseError:
        return False
    return True


def parse_url(raw: str) -> ParsedURL:
    """Kubernetes ``url()``: ``ParseRequestURI`` decides validity, ``Parse`` (fragment cut off) the parts."""
    _parse(raw, via_request=True)
    without_fragment, _, _ = raw.partition("#")
    return _parse(without_fragment, via_request=False)


def _parse(raw: str, *, via_request: bool) -> ParsedURL:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise URLParseError("net/url: invalid control character in URL")
    if raw == "" and via_request:
        raise URLParseError("empty url")
    if raw == "*":
        return ParsedURL("", "")
    scheme, rest = _scheme(raw)
    scheme = scheme.lower()
    # a lone trailing "?" is an empty query (ForceQuery); else the query starts at the first "?"
    rest = rest[:-1] if rest.endswith("?") and rest.count("?") == 1 else rest.partition("?")[0]
    if not rest.startswith("/"):
        if scheme:
            return ParsedURL(scheme, "")  # a rootless path is opaque data
        if via_request:
            raise URLParseError("invalid URI for request")
        if ":" in rest.partition("/")[0]:
            raise URLParseError("first path segment in URL cannot contain colon")
    host = ""
    if (scheme or (not via_request and not rest.startswith("///"))) and rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        host = _authority_host(authority)
        rest = slash + path
    _unescape(rest, host_mode=False)  # the path: only its %-escapes can be invalid
    return ParsedURL(scheme, host)


def _scheme(raw: str) -> tuple[str, str]:
    for i, c in enumerate(raw):
        if c.isascii() and c.isalpha():
            continue
        if c.isascii() and (c.isdigit() or c in "+-."):
            if i == 0:
                return "", raw
            continue
        if c == ":":
            if i == 0:
                raise URLParseError("missing protocol scheme")
            return raw[:i], raw[i + 1 :]
        return "", raw
    return "", raw


def _authority_host(authority: str) -> str:
    userinfo, at, hostport = authority.rpartition("@")
    host = _host(hostport if at else authority)
    if at:
        if not all((c.isascii() and c.isalnum()) or c in _USERINFO_EXTRA for c in userinfo):
            raise URLParseError("net/url: invalid userinfo")
        for part in userinfo.split(":", 1):
            _unescape(part, host_mode=False)
    return host


def _host(host: str) -> str:
    if host.startswith("["):
        end = host.rfind("]")
        if end < 0:
            raise URLParseError("missing ']' in host")
        if not _valid_optional_port(host[end + 1 :]):
            raise URLParseError(f"invalid port {host[end + 1:]!r} after host")
        literal, zone_mark, _ = host[1:end].partition("%25")
        try:
            ipaddress.IPv6Address(literal)  # brackets hold an IPv6 address only (RFC 3986; Go since 1.24.8)
        except ValueError as e:
            raise URLParseError(f"invalid IP-literal {host[: end + 1]!r}") from e
        if zone_mark:
            return host  # the zone identifier may use any %-encoding
    else:
        colon = host.rfind(":")
        if colon >= 0 and not _valid_optional_port(host[colon:]):
            raise URLParseError(f"invalid port {host[colon:]!r} after host")
    _unescape(host, host_mode=True)
    return host


def _valid_optional_port(port: str) -> bool:
    return port == "" or (port[0] == ":" and all("0" <= c <= "9" for c in port[1:]))


def _unescape(text: str, *, host_mode: bool) -> None:
    """Raise where Go's ``unescape`` would; the unescaped value itself is never needed here."""
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%":
            code = text[i + 1 : i + 3]
            if len(code) < 2 or not set(code) <= _HEX:
                raise URLParseError(f"invalid URL escape {text[i:i + 3]!r}")
            # in a host, %-encoding is only for non-ASCII bytes (RFC 3986 §3.2.2), and %25 (RFC 6874)
            if host_mode and int(code[0], 16) < 8 and code != "25":
                raise URLParseError(f"invalid URL escape {text[i:i + 3]!r}")
            i += 3
            continue
        if host_mode and c.isascii() and not (c.isalnum() or c in _HOST_EXTRA or c in _UNRESERVED_MARKS):
            raise URLParseError(f"invalid character {c!r} in host name")
        i += 1


def _split_host_port(host_port: str) -> tuple[str, str]:
    host, port = host_port, ""
    colon = host.rfind(":")
    if colon >= 0 and _valid_optional_port(host[colon:]):
        host, port = host[:colon], host[colon + 1 :]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


# -- as CEL functions ----------------------------------------------------------------------------------------

_URL = cel.Type.Map(cel.Type.STRING, cel.Type.STRING)


def _url(raw: str) -> dict[str, str]:
    try:
        parsed = parse_url(raw)
    except URLParseError as e:
        raise ValueError(f"URL parse error during conversion from string: {e}") from None
    return {"scheme": parsed.scheme, "host": parsed.host, "hostname": parsed.hostname(), "port": parsed.port()}


def _getter(part: str) -> Any:
    return lambda url: url[part]


def _member(name: str, part: str) -> Any:
    overload = cel.Overload(f"url_{part}", cel.Type.STRING, [_URL], is_member=True, impl=_getter(part))
    return cel.FunctionDecl(name, [overload])


URL_FUNCTIONS = [
    cel.FunctionDecl("isURL", [cel.Overload("is_url_string", cel.Type.BOOL, [cel.Type.STRING], impl=is_url)]),
    cel.FunctionDecl("url", [cel.Overload("string_to_url", _URL, [cel.Type.STRING], impl=_url)]),
    _member("getScheme", "scheme"),
    _member("getHost", "host"),
    _member("getHostname", "hostname"),
    _member("getPort", "port"),
]
