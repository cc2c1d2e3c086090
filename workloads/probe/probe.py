#!/usr/bin/env python3
"""meshconf probe: the workload every conformance check sends traffic from and to.

One file, standard library only, Python 3.9+, so it runs as a local process and, mounted from a ConfigMap,
in a stock ``python:3.12-alpine`` image. asyncio HTTP/1.1 with keep-alive, on both sides.

Command line (each flag falls back to an environment variable, so the downward API can fill it)::

    python probe.py --cluster c1 --network n1 --region r1 --zone z1 --namespace ns1 --service server \\
        --version v1 --instance server-v1-abc12 --service-account server \\
        --address 127.11.128.5 --ports 8080,9090 --control-address 127.11.0.5 --control-port 15100 \\
        [--ready-file PATH]

    PROBE_CLUSTER PROBE_NETWORK PROBE_REGION PROBE_ZONE PROBE_NAMESPACE PROBE_SERVICE PROBE_VERSION
    PROBE_SERVICE_ACCOUNT (required, may be empty), PROBE_INSTANCE (hostname), PROBE_ADDRESS (0.0.0.0),
    PROBE_PORTS (8080), PROBE_CONTROL_ADDRESS (0.0.0.0), PROBE_CONTROL_PORT (15100)

Once every socket listens, ``--ready-file`` gets "ready\\n" (written whole, then renamed into place).
SIGTERM/SIGINT close the listeners and exit 0. Bad flags exit 2 with one line on stderr. Each control
request is logged as one line on stderr; data requests are not logged.

Data ports (any method, any path) answer JSON: the identity (cluster, network, region, zone, namespace,
service, version, instance, serviceAccount), ``address``/``port`` that accepted, ``method``, ``path``,
``query``, ``protocol``, ``headers`` (lower-case names, repeats joined with ","), ``remoteAddress`` and
``bodyBytes``. Query parameters: ``status=NNN``, ``delay_ms=N``, ``size=N`` (adds ``padding``: N "x").
The mode set on the control port overrides the status and adds its delay to every data request.

Control port, JSON in and out:
    GET /healthz               {"status": "ok"}
    GET /info                  the identity, plus the data ports
    GET|POST /mode             {"status": 503 | null, "delay_ms": 0}; a POST replaces the whole mode
    POST /forward              calls FROM this workload; the body fields are:
        url (required, http://), count (1; max 100000), concurrency (1; max 256), method ("GET"),
        headers ({}), body (null), timeout_ms (2000; per call: connect + request + response),
        proxy (null | "host:port": connect there instead, origin-form request, Host from the url),
        resolve (null | {"host:port": ["ip:port", ...]}: like curl --resolve, round-robin per connection;
                 an empty list means the name does not resolve: every call fails with "unresolved host"),
        new_connection (false: each concurrency slot keeps one keep-alive connection),
        rate (null | calls/s: call starts paced evenly across slots; a late call starts at once and the
        schedule continues from it, no catch-up burst), duration_ms (with rate: call until it elapses or
        count calls are made; count then defaults to its maximum), max_duration_ms (60000; max 600000:
        hard bound, calls not started by then are not made and "truncated" is true), summary (false),
        body_limit (65536 characters of each response body), name (null | a string: POST /forward/stop
        ends this forward early).
    POST /forward/stop         {"name": "..."}: the named forward starts no more calls (those under way
        finish); it answers as usual. The answer here: {"stopped": true | false (no such forward running)}.
    The answer: {"calls": [{"index", "status" (0: no response), "latencyUs", "startedUs", "connection"
    (id; 0: none), "body", "headers", "error"}], "durationUs", "cpuUs", "truncated"}, or with summary:
    {"latenciesUs", "startedUs", "callStatuses" (each call's status, 0: no response), "statuses": {"200": n},
    "errors": {"timeout": n}, "durationUs", "cpuUs", "truncated", "sample": [up to 5 call records, one per
    distinct outcome first]}. "cpuUs" is the CPU time this probe process used meanwhile (its load share).
    Errors: "unresolved host" (the name did not resolve), "connection refused", "connection reset",
    "connection closed", "timeout", "connect error: ...", "bad response: ...".
    A bad request body answers 400 {"error": "..."}.
Latency runs from just before the request is written (connect included when one is needed) to the last
byte of the response body.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import re
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

MAX_HEAD = 64 * 1024
MAX_CONTROL_BODY = 1024 * 1024
CHUNK = 64 * 1024
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
HEX = re.compile(rb"[0-9A-Fa-f]+")

Fields = List[Tuple[str, str]]


# ---------------------------------------------------------------------------------------------- HTTP/1.1


class BadMessage(Exception):
    """A message that is not valid HTTP/1.1; the text says why."""


def header_map(fields: Fields) -> Dict[str, str]:
    joined: Dict[str, str] = {}
    for name, value in fields:
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    return joined


def wants_keep_alive(version: str, fields: Fields) -> bool:
    tokens = {t.strip().lower() for name, v in fields if name == "connection" for t in v.split(",")}
    return "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens


async def read_head(reader: asyncio.StreamReader) -> Optional[Tuple[str, Fields]]:
    """The start line and fields of the next message; None when the peer closed before sending one."""
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise
            return None
        except asyncio.LimitOverrunError:
            raise BadMessage("header section too large") from None
        text = raw.decode("latin-1").lstrip("\r\n")  # stray CRLFs between messages are allowed
        if text:
            break
    start, *lines = text.rstrip("\r\n").split("\r\n")
    fields: Fields = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not TOKEN.fullmatch(name):
            raise BadMessage(f"malformed header line {line[:40]!r}")
        fields.append((name.lower(), value.strip()))
    return start, fields


def framing(fields: Fields, is_request: bool) -> Tuple[str, int]:
    """How the body is delimited: ("none" | "length" | "chunked" | "close", content length)."""
    codings = [c.strip().lower() for n, v in fields if n == "transfer-encoding" for c in v.split(",")]
    if codings:
        if codings[-1] == "chunked":
            return "chunked", 0
        if is_request:
            raise BadMessage("transfer-encoding without chunked")
        return "close", 0
    lengths = {v.strip() for n, value in fields if n == "content-length" for v in value.split(",")}
    if lengths:
        if len(lengths) > 1 or not next(iter(lengths)).isdigit():
            raise BadMessage(f"bad content-length {sorted(lengths)}")
        return "length", int(lengths.pop())
    return ("none" if is_request else "close"), 0


async def read_body(reader: asyncio.StreamReader, kind: str, length: int, keep: int) -> Tuple[bytes, int]:
    """Read one body; returns its first ``keep`` bytes and its full length."""
    kept = bytearray()
    total = 0

    async def take(count: int) -> None:
        nonlocal total
        while count:
            data = await reader.readexactly(min(count, CHUNK))
            count -= len(data)
            total += len(data)
            kept.extend(data[: max(0, keep - len(kept))])

    try:
        if kind == "length":
            await take(length)
        elif kind == "chunked":
            while True:
                size = (await reader.readuntil(b"\n")).split(b";", 1)[0].strip()
                if not HEX.fullmatch(size):
                    raise BadMessage(f"bad chunk size {size[:20]!r}")
                if int(size, 16) == 0:
                    while (await reader.readuntil(b"\n")).strip():  # trailer fields, ignored
                        pass
                    break
                await take(int(size, 16))
                if (await reader.readuntil(b"\n")).strip():
                    raise BadMessage("chunk not followed by CRLF")
        elif kind == "close":
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                total += len(data)
                kept.extend(data[: max(0, keep - len(kept))])
    except asyncio.LimitOverrunError:
        raise BadMessage("chunk line too long") from None
    return bytes(kept), total


def format_address(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(text: str, what: str) -> Tuple[str, int]:
    host, colon, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} must be 'host:port', got {text!r}")
    return host, int(port)


# ------------------------------------------------------------------------------------------------ server


@dataclass
class Request:
    method: str
    path: str
    query: str
    version: str
    fields: Fields
    body: bytes
    body_bytes: int


Handler = Callable[[Request, str, str], Awaitable[Tuple[int, Any]]]


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       keep_body: int) -> Optional[Request]:
    head = await read_head(reader)
    if head is None:
        return None
    start, fields = head
    parts = start.split(" ")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not parts[2].startswith("HTTP/1."):
        raise BadMessage(f"malformed request line {start[:60]!r}")
    method, target, version = parts
    if target.startswith(("http://", "https://")):  # absolute-form, as sent to proxies
        url = urlsplit(target)
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    kind, length = framing(fields, is_request=True)
    if kind != "none" and "100-continue" in header_map(fields).get("expect", "").lower():
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body, total = await read_body(reader, kind, length, keep_body)
    if keep_body and total > keep_body:
        raise BadMessage(f"request body larger than {keep_body} bytes")
    path, _, query = target.partition("?")
    return Request(method, path, query, version, fields, body, total)


def write_json(writer: asyncio.StreamWriter, status: int, answer: Any, keep_alive: bool,
               version: str = "HTTP/1.1", head_only: bool = False) -> None:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    payload = json.dumps(answer, separators=(",", ":")).encode() + b"\n"
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json"]
    if status in (204, 304):  # these never carry a body
        payload = b""
    else:
        lines.append(f"Content-Length: {len(payload)}")
    if not keep_alive:
        lines.append("Connection: close")
    elif version == "HTTP/1.0":
        lines.append("Connection: keep-alive")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else payload))


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler,
                           keep_body: int) -> None:
    local = format_address(writer.get_extra_info("sockname"))
    peer = format_address(writer.get_extra_info("peername"))
    try:
        while True:
            try:
                request = await read_request(reader, writer, keep_body)
            except BadMessage as exc:
                write_json(writer, 400, {"error": str(exc)}, keep_alive=False)
                await writer.drain()
                return
            if request is None:
                return
            try:
                status, answer = await handler(request, local, peer)
            except Exception as exc:  # a bug here must not take the probe down: answer 500 and say why
                log(f"error: {request.method} {request.path}: {type(exc).__name__}: {exc}")
                status, answer = 500, {"error": f"{type(exc).__name__}: {exc}"}
            keep_alive = wants_keep_alive(request.version, request.fields)
            write_json(writer, status, answer, keep_alive, request.version, request.method == "HEAD")
            await writer.drain()
            if not keep_alive:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    except asyncio.CancelledError:  # shutdown; this task is the connection's outermost frame, so end quietly
        pass
    finally:
        writer.close()


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} probe: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------- request validation


def _number(data: Dict[str, Any], name: str, default: Any, low: float, high: float,
            integer: bool = True) -> Any:
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return value


def _bool(data: Dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _query_int(params: Dict[str, List[str]], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name, [str(default)])[-1]
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"query parameter {name} must be an integer from {low} to {high}, got {text!r}")
    return int(text)


@dataclass
class Mode:
    """Set through the control port; applies to every data request from then on."""

    status: Optional[int] = None
    delay_ms: float = 0

    @classmethod
    def parse(cls, data: Any) -> Mode:
        if not isinstance(data, dict):
            raise ValueError("mode must be a JSON object")
        unknown = sorted(set(data) - {"status", "delay_ms"})
        if unknown:
            raise ValueError(f"unknown mode field {unknown[0]!r}")
        return cls(_number(data, "status", None, 200, 599), _number(data, "delay_ms", 0, 0, 600000, False))

    def to_json(self) -> Dict[str, Any]:
        return {"status": self.status, "delay_ms": self.delay_ms}


FORWARD_FIELDS = {"url", "count", "concurrency", "method", "headers", "body", "timeout_ms", "proxy",
                  "resolve", "new_connection", "rate", "duration_ms", "max_duration_ms", "summary",
                  "body_limit", "name"}


@dataclass
class ForwardSpec:
    """A validated ``POST /forward`` body."""

    url: str
    request: bytes
    """The bytes of every call's request: the same for each call."""
    close_after: bool
    """The request says ``Connection: close``."""
    direct: Tuple[str, int]
    proxy: Optional[Tuple[str, int]]
    resolved: List[Tuple[str, int]]
    unresolvable: bool
    count: int
    concurrency: int
    timeout_s: float
    new_connection: bool
    rate: Optional[float]
    duration_s: Optional[float]
    max_duration_s: float
    summary: bool
    body_limit: int
    name: Optional[str] = None

    @classmethod
    def parse(cls, data: Any) -> ForwardSpec:
        """Raises ValueError with one line saying what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        unknown = sorted(set(data) - FORWARD_FIELDS)
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        url = data.get("url")
        if not isinstance(url, str) or not url.startswith("http://"):
            raise ValueError(f"url must be an http:// URL, got {url!r}")
        parts = urlsplit(url)
        authority = parts.netloc.rpartition("@")[2]  # the Host header: host[:port] exactly as written
        try:
            port = parts.port or 80
        except ValueError:
            raise ValueError(f"url has a bad port: {url!r}") from None
        if not parts.hostname or any(c in url for c in " \r\n"):
            raise ValueError(f"url has no host or contains whitespace: {url!r}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

        method = data.get("method", "GET")
        if not isinstance(method, str) or not TOKEN.fullmatch(method):
            raise ValueError(f"method must be an HTTP method name, got {method!r}")
        headers = data.get("headers") or {}
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and TOKEN.fullmatch(k) and "\r" not in v
                and "\n" not in v for k, v in headers.items()):
            raise ValueError("headers must be an object of header names to single-line strings")
        if {k.lower() for k in headers} & {"content-length", "transfer-encoding"}:
            raise ValueError("headers must not set content-length or transfer-encoding (the probe does)")
        body = data.get("body")
        if body is not None and not isinstance(body, str):
            raise ValueError("body must be a string")
        new_connection = _bool(data, "new_connection")

        fields = {"Host": authority, "User-Agent": "meshconf-probe"}
        if new_connection:
            fields["Connection"] = "close"
        for name, value in headers.items():  # caller's headers win, whatever their case
            fields = {k: v for k, v in fields.items() if k.lower() != name.lower()}
            fields[name] = value
        payload = body.encode() if body is not None else b""
        if body is not None or method in ("POST", "PUT", "PATCH"):
            fields["Content-Length"] = str(len(payload))
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        request = (head + "\r\n").encode("latin-1", "replace") + payload
        close_after = not wants_keep_alive("HTTP/1.1", [(k.lower(), v) for k, v in fields.items()])

        proxy = data.get("proxy")
        if proxy is not None:
            proxy = split_host_port(proxy if isinstance(proxy, str) else repr(proxy), "proxy")
        resolve = data.get("resolve") or {}
        if not isinstance(resolve, dict) or not all(
                isinstance(v, list) and all(isinstance(a, str) for a in v) for v in resolve.values()):
            raise ValueError('resolve must look like {"host:port": ["ip:port", ...]}')
        resolved: List[Tuple[str, int]] = []
        unresolvable = False
        for name, addresses in resolve.items():  # every entry must parse; only the url's host:port is used
            split_host_port(name, "a resolve key")
            found = [split_host_port(a, "a resolve address") for a in addresses]
            if name.lower() == f"{parts.hostname}:{port}":
                resolved, unresolvable = found, not found

        rate = _number(data, "rate", None, 0.001, 1e6, integer=False)
        duration_ms = _number(data, "duration_ms", None, 1, 600000, integer=False)
        if duration_ms is not None and rate is None:
            raise ValueError("duration_ms needs rate")
        count_default = 100000 if duration_ms is not None else 1
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise ValueError("name must be a string")
        return cls(
            url=url, request=request, close_after=close_after, direct=(parts.hostname, port), proxy=proxy,
            resolved=resolved, unresolvable=unresolvable,
            count=_number(data, "count", count_default, 1, 100000),
            concurrency=_number(data, "concurrency", 1, 1, 256),
            timeout_s=_number(data, "timeout_ms", 2000, 1, 600000, integer=False) / 1000,
            new_connection=new_connection, rate=rate,
            duration_s=None if duration_ms is None else duration_ms / 1000,
            max_duration_s=_number(data, "max_duration_ms", 60000, 1, 600000, integer=False) / 1000,
            summary=_bool(data, "summary"),
            body_limit=_number(data, "body_limit", 65536, 0, 1 << 30),
            name=name,
        )


# ------------------------------------------------------------------------------------------------ client


class CallError(Exception):
    """A call that got no (complete) response; the text is one of the stable error strings."""


@dataclass
class Connection:
    id: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


@dataclass
class Outcome:
    status: int = 0
    headers: Dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reusable: bool = False
    connection: Optional[Connection] = None
    began_ns: int = 0
    ended_ns: int = 0


def _refused(exc: OSError) -> bool:
    # create_connection folds several failed addresses (localhost: ::1 and 127.0.0.1) into one OSError
    return exc.errno == errno.ECONNREFUSED or f"[Errno {errno.ECONNREFUSED}]" in str(exc)


class Forward:
    """One ``POST /forward``: ``concurrency`` slots take calls from a shared counter until done."""

    def __init__(self, spec: ForwardSpec) -> None:
        self.spec = spec
        self.records: List[Dict[str, Any]] = []
        self.truncated = False
        self.connections = 0
        self.resolve_turn = 0
        self.next_index = 0
        self.started_ns = time.perf_counter_ns()
        self.deadline = time.perf_counter() + spec.max_duration_s
        self.stop_at = None if spec.duration_s is None else time.perf_counter() + spec.duration_s
        self.next_start = time.perf_counter()
        self.keep_bytes = spec.body_limit * 4  # enough UTF-8 for body_limit characters
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.compact: List[Tuple[int, int, int, int]] = []
        self.cpu_started = time.process_time()
        self.outcomes: Dict[Tuple[int, Optional[str]], Dict[str, Any]] = {}

    def stop(self) -> None:
        """Start no more calls; those under way finish."""
        self.stop_at = time.perf_counter()

    async def run(self) -> Dict[str, Any]:
        await asyncio.gather(*(self._slot() for _ in range(min(self.spec.concurrency, self.spec.count))))
        duration_us = (time.perf_counter_ns() - self.started_ns) // 1000
        cpu_us = int((time.process_time() - self.cpu_started) * 1e6)
        self.records.sort(key=lambda r: r["index"])
        if not self.spec.summary:
            return {"calls": self.records, "durationUs": duration_us, "cpuUs": cpu_us, "truncated": self.truncated}
        self.compact.sort()
        return {
            "latenciesUs": [c[1] for c in self.compact], "startedUs": [c[2] for c in self.compact],
            "callStatuses": [c[3] for c in self.compact],
            "statuses": dict(self.statuses), "errors": dict(self.errors),
            "durationUs": duration_us, "cpuUs": cpu_us, "truncated": self.truncated,
            "sample": sorted([*self.outcomes.values(), *self.records][:5], key=lambda r: r["index"]),
        }

    async def _slot(self) -> None:
        connection: Optional[Connection] = None
        try:
            while self.next_index < self.spec.count:
                now = time.perf_counter()
                start = now
                if self.spec.rate:  # no catch-up: a late start moves the schedule along with it
                    start = max(self.next_start, now)
                    self.next_start = start + 1 / self.spec.rate
                if self.stop_at is not None and start >= self.stop_at:
                    return
                if start >= self.deadline:
                    self.truncated = True
                    return
                index = self.next_index
                self.next_index += 1
                if start > now:
                    await asyncio.sleep(start - now)
                connection = await self._call(index, connection)
        finally:
            if connection is not None:
                connection.close()

    async def _call(self, index: int, connection: Optional[Connection]) -> Optional[Connection]:
        if connection is not None and connection.reader.at_eof():  # the server closed it while idle
            connection.close()
            connection = None
        outcome = Outcome(connection=connection)
        error: Optional[str] = None
        remaining = self.deadline - time.perf_counter()
        outcome.began_ns = time.perf_counter_ns()  # replaced by the exchange's own, more exact, clock
        try:
            await asyncio.wait_for(self._exchange(outcome), max(0.001, min(self.spec.timeout_s, remaining)))
        except asyncio.TimeoutError:
            error = "timeout"
            self.truncated = self.truncated or remaining < self.spec.timeout_s
        except CallError as exc:
            error = str(exc)
        except asyncio.CancelledError:
            if outcome.connection is not None:
                outcome.connection.close()
            raise
        end = outcome.ended_ns if error is None else time.perf_counter_ns()
        self._record(index, outcome, error, (end - outcome.began_ns) // 1000,
                     (outcome.began_ns - self.started_ns) // 1000)
        if error is None and outcome.reusable and not self.spec.new_connection:
            return outcome.connection
        if outcome.connection is not None:
            outcome.connection.close()
        return None

    def _record(self, index: int, outcome: Outcome, error: Optional[str], latency_us: int,
                started_us: int) -> None:
        status = 0 if error else outcome.status
        record = {
            "index": index, "status": status, "latencyUs": latency_us, "startedUs": started_us,
            "connection": outcome.connection.id if outcome.connection else 0,
            "body": "" if error else outcome.body.decode("utf-8", "replace")[: self.spec.body_limit],
            "headers": {} if error else outcome.headers, "error": error,
        }
        if not self.spec.summary:
            self.records.append(record)
            return
        self.compact.append((index, latency_us, started_us, status))
        self.statuses[str(status)] += 1
        if error:
            self.errors[error] += 1
        # the sample shows the first call of each outcome, then the first calls to finish
        if (status, error) not in self.outcomes and len(self.outcomes) < 5:
            self.outcomes[(status, error)] = record
        elif len(self.records) < 5:
            self.records.append(record)

    def _address(self) -> Tuple[str, int]:
        if self.spec.proxy:
            return self.spec.proxy
        if self.spec.resolved:
            self.resolve_turn += 1
            return self.spec.resolved[(self.resolve_turn - 1) % len(self.spec.resolved)]
        return self.spec.direct

    async def _exchange(self, outcome: Outcome) -> None:
        """One request and its response, on ``outcome.connection`` or a new one (stored there at once)."""
        outcome.began_ns = time.perf_counter_ns()
        if outcome.connection is None:
            if self.spec.unresolvable:
                raise CallError("unresolved host")
            host, port = self._address()
            try:
                reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD)
            except socket.gaierror:  # the name did not resolve (e.g. istio-agent's DNS proxy knows no such host)
                raise CallError("unresolved host") from None
            except OSError as exc:
                raise CallError("connection refused" if _refused(exc)
                                else f"connect error: {exc.strerror or exc}") from None
            self.connections += 1
            outcome.connection = Connection(self.connections, reader, writer)
        reader, writer = outcome.connection.reader, outcome.connection.writer
        try:
            writer.write(self.spec.request)
            await writer.drain()
            while True:
                head = await read_head(reader)
                if head is None:
                    raise CallError("connection closed")
                version, _, rest = head[0].partition(" ")
                code = rest[:3]
                if not version.startswith("HTTP/1.") or not code.isdigit() or rest[3:4] not in ("", " "):
                    raise BadMessage(f"malformed status line {head[0][:60]!r}")
                if not 100 <= int(code) < 200 or code == "101":
                    break  # 1xx answers are interim: the real one follows
            status, fields = int(code), head[1]
            no_body = status in (101, 204, 304) or self.spec.request.startswith(b"HEAD ")
            kind, length = ("none", 0) if no_body else framing(fields, is_request=False)
            body, _ = await read_body(reader, kind, length, self.keep_bytes)
            outcome.ended_ns = time.perf_counter_ns()
        except BadMessage as exc:
            raise CallError(f"bad response: {exc}") from None
        except asyncio.IncompleteReadError:
            raise CallError("connection closed") from None
        except (ConnectionResetError, BrokenPipeError):
            raise CallError("connection reset") from None
        except OSError as exc:
            raise CallError(f"connection error: {exc.strerror or exc}") from None
        outcome.status, outcome.headers, outcome.body = status, header_map(fields), body
        outcome.reusable = (kind != "close" and status != 101 and wants_keep_alive(version, fields)
                            and not self.spec.close_after)


# ------------------------------------------------------------------------------------------------- probe


@dataclass(frozen=True)
class Identity:
    """Who this workload is, as every answer reports it."""

    cluster: str
    network: str
    region: str
    zone: str
    namespace: str
    service: str
    version: str
    instance: str
    service_account: str

    def to_json(self) -> Dict[str, str]:
        return {"cluster": self.cluster, "network": self.network, "region": self.region, "zone": self.zone,
                "namespace": self.namespace, "service": self.service, "version": self.version,
                "instance": self.instance, "serviceAccount": self.service_account}


class Probe:
    """The request handlers of the data ports and the control port, and the mode they share."""

    def __init__(self, identity: Identity, ports: List[int]) -> None:
        self.identity = identity
        self.ports = ports
        self.mode = Mode()
        self.forwards: Dict[str, Forward] = {}
        """Named forwards under way (POST /forward/stop ends one)."""

    async def data(self, request: Request, local: str, peer: str) -> Tuple[int, Any]:
        params = parse_qs(request.query, keep_blank_values=True)
        try:
            status = _query_int(params, "status", 200, 200, 599)
            delay_ms = _query_int(params, "delay_ms", 0, 0, 600000) + self.mode.delay_ms
            size = _query_int(params, "size", 0, 0, 16 * 1024 * 1024)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        answer: Dict[str, Any] = self.identity.to_json()
        answer.update({
            "address": local, "port": int(local.rpartition(":")[2]), "method": request.method,
            "path": request.path, "query": request.query, "protocol": request.version,
            "headers": header_map(request.fields), "remoteAddress": peer, "bodyBytes": request.body_bytes,
        })
        if size:
            answer["padding"] = "x" * size
        return (self.mode.status or status), answer

    async def control(self, request: Request, local: str, peer: str) -> Tuple[int, Any]:
        began = time.perf_counter()
        status, answer, note = await self._control(request)
        if status != 200 and isinstance(answer, dict):
            note = str(answer.get("error", ""))
        log(f"control {request.method} {request.path} from {peer} -> {status} in "
            f"{(time.perf_counter() - began) * 1000:.1f} ms{f' ({note})' if note else ''}")
        return status, answer

    async def _control(self, request: Request) -> Tuple[int, Any, str]:
        routes = {"/healthz": ("GET",), "/info": ("GET",), "/mode": ("GET", "POST"), "/forward": ("POST",),
                  "/forward/stop": ("POST",)}
        if request.path not in routes:
            return 404, {"error": f"no such endpoint {request.path!r}; try {sorted(routes)}"}, ""
        if request.method not in routes[request.path]:
            return 405, {"error": f"{request.path} takes {' or '.join(routes[request.path])}"}, ""
        if request.path == "/healthz":
            return 200, {"status": "ok"}, ""
        if request.path == "/info":
            return 200, {**self.identity.to_json(), "ports": self.ports}, ""
        if request.method == "GET":
            return 200, self.mode.to_json(), ""
        try:
            data = json.loads(request.body or b"null")
        except ValueError:
            return 400, {"error": "the body is not JSON"}, ""
        try:
            if request.path == "/mode":
                self.mode = Mode.parse(data)
                return 200, self.mode.to_json(), f"status={self.mode.status} delay_ms={self.mode.delay_ms:g}"
            if request.path == "/forward/stop":
                if not isinstance(data, dict) or not isinstance(data.get("name"), str):
                    raise ValueError('the body must be {"name": "..."}')
                running = self.forwards.get(data["name"])
                if running is not None:
                    running.stop()
                return 200, {"stopped": running is not None}, data["name"]
            spec = ForwardSpec.parse(data)
        except ValueError as exc:
            return 400, {"error": str(exc)}, ""
        forward = Forward(spec)
        if spec.name is not None:
            self.forwards[spec.name] = forward
        try:
            answer = await forward.run()
        finally:
            if spec.name is not None and self.forwards.get(spec.name) is forward:
                del self.forwards[spec.name]
        made = len(answer["calls"]) if "calls" in answer else len(answer["latenciesUs"])
        return 200, answer, f"{made} calls to {spec.url}{', truncated' if answer['truncated'] else ''}"


# -------------------------------------------------------------------------------------------------- main


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2
        sys.stderr.write(f"probe: {message}\n")
        sys.exit(2)


def _port(text: str) -> int:
    if not text.strip().isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def _ports(text: str) -> List[int]:
    ports = [_port(p) for p in text.split(",")]
    if len(set(ports)) != len(ports):
        raise argparse.ArgumentTypeError(f"repeated port in {text!r}")
    return ports


IDENTITY_FLAGS = ["cluster", "network", "region", "zone", "namespace", "service", "version",
                  "service-account"]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = _Parser(prog="probe.py", description="meshconf probe workload (see the module docstring)")
    env = os.environ.get
    for flag in IDENTITY_FLAGS:
        name = f"PROBE_{flag.upper().replace('-', '_')}"
        parser.add_argument(f"--{flag}", default=env(name), help=f"(env {name}; required)")
    parser.add_argument("--instance", default=env("PROBE_INSTANCE", socket.gethostname()))
    parser.add_argument("--address", default=env("PROBE_ADDRESS", "0.0.0.0"))
    parser.add_argument("--ports", type=_ports, default=env("PROBE_PORTS", "8080"))
    parser.add_argument("--control-address", default=env("PROBE_CONTROL_ADDRESS", "0.0.0.0"))
    parser.add_argument("--control-port", type=_port, default=env("PROBE_CONTROL_PORT", "15100"))
    parser.add_argument("--ready-file", help="written with 'ready' once every port listens")
    args = parser.parse_args(argv)
    for flag in IDENTITY_FLAGS:
        if getattr(args, flag.replace("-", "_")) is None:
            parser.error(f"--{flag} is required (or set PROBE_{flag.upper().replace('-', '_')})")
    return args


async def run(args: argparse.Namespace) -> int:
    identity = Identity(args.cluster, args.network, args.region, args.zone, args.namespace, args.service,
                        args.version, args.instance, args.service_account)
    probe = Probe(identity, args.ports)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if args.ready_file and os.path.exists(args.ready_file):  # a stale file from an earlier run lies
        os.remove(args.ready_file)

    listeners: List[Tuple[Handler, int, str, int]] = [(probe.data, 0, args.address, p) for p in args.ports]
    listeners.append((probe.control, MAX_CONTROL_BODY, args.control_address, args.control_port))
    servers = []
    for handler, keep_body, host, port in listeners:
        def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          handler: Handler = handler, keep_body: int = keep_body) -> Awaitable[None]:
            return serve_connection(reader, writer, handler, keep_body)
        try:
            servers.append(await asyncio.start_server(on_connection, host, port, limit=MAX_HEAD))
        except OSError as exc:
            log(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
            for server in servers:
                server.close()
            return 1

    if args.ready_file:
        temporary = f"{args.ready_file}.{os.getpid()}.tmp"
        with open(temporary, "w") as ready:
            ready.write("ready\n")
        os.replace(temporary, args.ready_file)
    log(f"{identity.instance} ({identity.service}/{identity.version} in {identity.namespace}, "
        f"{identity.cluster}) data {args.address}:{','.join(map(str, args.ports))} "
        f"control {args.control_address}:{args.control_port}")
    await stop.wait()
    for server in servers:
        server.close()  # open connections are cancelled when run() returns
    log("stopped")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
