"""KubeAPI against a fake API server on 127.0.0.1 (plain HTTP, bearer token): the real ``kubernetes`` client
builds the requests, so the URL paths, methods, bodies and credentials of the pod proxy, the metadata-only
Secret list, and a port-forward (a minimal websocket server speaking Kubernetes' v4.channel.k8s.io framing) are
checked here. Server-side apply, exec and waits against a real API server remain unverified (see the README)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import ProviderError
from conformance.providers.kube.api import KubeAPI
from conformance.providers.kube.podhttp import http_over_socket

TOKEN = "test-token"


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[KubeAPI, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            seen.append({"method": self.command, "path": self.path, "auth": self.headers.get("Authorization"),
                         "body": body, "accept": self.headers.get("Accept")})
            if "/portforward" in self.path and self.headers.get("Upgrade", "").lower() == "websocket":
                seen.append({"method": self.command, "path": self.path, "auth": self.headers.get("Authorization"),
                             "body": ""})
                _port_forward(self)
                return
            if self.path.split("?")[0].rstrip("/") == "/version":
                payload: Any = {"major": "1", "minor": "34", "gitVersion": "v1.34.1", "gitCommit": "x",
                                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25",
                                "compiler": "gc", "platform": "linux/amd64"}
                status = 200
            elif "/proxy/" in self.path and "/pods/gone" not in self.path:
                payload, status = {"status": "ok", "echo": json.loads(body) if body else None}, 200
            elif self.path.startswith("/api/v1/namespaces/istio-system/secrets"):
                if "forbidden" in self.path:
                    payload, status = {"kind": "Status", "code": 403, "message": "forbidden"}, 403
                else:  # what the API server sends for as=PartialObjectMetadataList: metadata, never data
                    payload, status = {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                       "items": [{"metadata": {"name": "istio-remote-secret-west-1", "annotations": {
                                           "networking.istio.io/cluster": "west-1"}}}]}, 200
            else:
                payload, status = {"kind": "Status", "code": 404, "message": "not found"}, 404
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer  # the http.server API

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "fake", "user": {"token": TOKEN}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    }))
    try:
        yield KubeAPI("fake", kubeconfig), seen
    finally:
        server.shutdown()
        server.server_close()


def test_server_version(api_server: tuple[KubeAPI, list[dict[str, Any]]]) -> None:
    api, seen = api_server
    assert api.server_version() == "v1.34.1"
    assert seen[-1]["auth"] == f"Bearer {TOKEN}"


def test_probe_control_through_the_pod_proxy(api_server: tuple[KubeAPI, list[dict[str, Any]]]) -> None:
    api, seen = api_server
    assert api.proxy("meshconf-x", "client-v1-abc", 15100, "GET", "/healthz") == {"status": "ok", "echo": None}
    expected = "/api/v1/namespaces/meshconf-x/pods/client-v1-abc:15100/proxy/healthz"
    assert seen[-1]["path"].replace("%3A", ":") == expected
    answer = api.proxy("meshconf-x", "client-v1-abc", 15100, "POST", "/forward", {"url": "http://s:8080/"})
    assert answer["echo"] == {"url": "http://s:8080/"}
    assert seen[-1]["method"] == "POST" and seen[-1]["auth"] == f"Bearer {TOKEN}"
    assert seen[-1]["path"] == "/api/v1/namespaces/meshconf-x/pods/client-v1-abc:15100/proxy/forward"


def test_errors_name_the_context(api_server: tuple[KubeAPI, list[dict[str, Any]]], tmp_path: Path) -> None:
    api, _ = api_server
    with pytest.raises(ProviderError, match="fake: GET /healthz on meshconf-x/gone:15100: 404"):
        api.proxy("meshconf-x", "gone", 15100, "GET", "/healthz")
    with pytest.raises(ProviderError, match="fake: POST /forward on meshconf-x/gone:15100 answered 404"):
        api.proxy("meshconf-x", "gone", 15100, "POST", "/forward", {})
    with pytest.raises(ProviderError, match="cannot be loaded"):
        KubeAPI("missing-context", api.kubeconfig)


# -- a port-forward endpoint: the websocket handshake (RFC 6455) and v4.channel.k8s.io channels --------------


def _ws_read(rfile: Any) -> tuple[int, bytes]:
    first, second = rfile.read(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack(">H", rfile.read(2))[0]
    elif length == 127:
        length = struct.unpack(">Q", rfile.read(8))[0]
    mask = rfile.read(4) if second & 0x80 else b"\0\0\0\0"
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(rfile.read(length)))
    return first & 0x0F, data


def _ws_write(wfile: Any, data: bytes, opcode: int = 2) -> None:
    head = bytes([0x80 | opcode])
    if len(data) < 126:
        head += bytes([len(data)])
    elif len(data) < 65536:
        head += bytes([126]) + struct.pack(">H", len(data))
    else:
        head += bytes([127]) + struct.pack(">Q", len(data))
    wfile.write(head + data)
    wfile.flush()


def _port_forward(handler: BaseHTTPRequestHandler) -> None:
    """Answer one HTTP request forwarded to ``ports=N`` with its JSON echo, then leave the stream open (the
    client must stop at Content-Length, as it would when the kubelet keeps the stream)."""
    key = handler.headers["Sec-WebSocket-Key"]
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    handler.send_response(101)
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept.decode())
    handler.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
    handler.end_headers()
    port = int(handler.path.split("ports=")[1].split("&")[0])
    for channel in (0, 1):  # each channel's first frame names the port
        _ws_write(handler.wfile, bytes([channel]) + struct.pack("<H", port))
    request = b""
    while b"\r\n\r\n" not in request or len(request.partition(b"\r\n\r\n")[2]) < int(
            re.search(rb"Content-Length: (\d+)", request).group(1)):  # type: ignore[union-attr]
        opcode, data = _ws_read(handler.rfile)
        if opcode == 8:
            return
        request += data[1:]
    head, _, body = request.partition(b"\r\n\r\n")
    answer = json.dumps({"via": "port-forward", "port": port, "request": head.split(b"\r\n")[0].decode(),
                         "echo": json.loads(body) if body else None}).encode()
    _ws_write(handler.wfile, bytes([0]) + b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(answer)}\r\n\r\n".encode() + answer)
    with contextlib.suppress(OSError, ValueError):
        while _ws_read(handler.rfile)[0] != 8:  # until the client closes
            pass


def test_port_forward_carries_probe_calls_when_the_pod_proxy_is_blocked(
        api_server: tuple[KubeAPI, list[dict[str, Any]]]) -> None:
    """Item 9: the same probe call over a port-forward through the kubelet (API server -> kubelet -> pod)."""
    api, seen = api_server
    api.transport = "port-forward"
    answer = api.proxy("meshconf-x", "client-v1-abc", 15100, "POST", "/forward", {"url": "http://s:8080/"})
    assert answer == {"via": "port-forward", "port": 15100, "request": "POST /forward HTTP/1.1",
                      "echo": {"url": "http://s:8080/"}}
    assert seen[-1]["path"].startswith("/api/v1/namespaces/meshconf-x/pods/client-v1-abc/portforward?ports=15100")
    assert seen[-1]["auth"] == f"Bearer {TOKEN}"
    text = api.pod_text("istio-system", "istiod-abc", 15014, "/version", "port-forward")
    assert json.loads(text)["request"] == "GET /version HTTP/1.1"


def test_secrets_are_listed_as_metadata_only(api_server: tuple[KubeAPI, list[dict[str, Any]]]) -> None:
    """Item 13: the Secret list asks for PartialObjectMetadataList (no data crosses the wire), by label; a 403
    is "not allowed", not a failure."""
    api, seen = api_server
    assert api.secret_metadata("istio-system", "istio/multiCluster=true") == [
        ("istio-remote-secret-west-1", {"networking.istio.io/cluster": "west-1"})]
    assert seen[-1]["accept"] == "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
    from urllib.parse import parse_qs, urlsplit

    assert parse_qs(urlsplit(seen[-1]["path"]).query) == {"labelSelector": ["istio/multiCluster=true"]}
    assert api.secret_metadata("istio-system", "forbidden=true") is None


def test_posts_through_the_pod_proxy_ignore_proxy_variables(api_server: tuple[KubeAPI, list[dict[str, Any]]],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 13: neither GETs (the kubernetes client, which reads them in recent versions) nor POSTs (httpx) use
    HTTPS_PROXY/HTTP_PROXY: the same path for both, only a kubeconfig's proxy-url."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there: using it would fail the call
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    api = KubeAPI("fake", api_server[0].kubeconfig)  # made while the variables are set
    assert api.proxy("meshconf-x", "client-v1-abc", 15100, "POST", "/forward", {"n": 1})["echo"] == {"n": 1}
    assert api.proxy("meshconf-x", "client-v1-abc", 15100, "GET", "/healthz")["status"] == "ok"


def test_an_exec_does_not_take_over_other_threads_calls(api_server: tuple[KubeAPI, list[dict[str, Any]]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 13: ``kubernetes.stream.stream`` swaps its ApiClient's call_api for a websocket while it runs; an exec
    on the shared client would send another thread's request (here: server_version) over that websocket."""
    import kubernetes.stream

    api, _ = api_server
    during: list[str] = []

    def stream(api_method: Any, *args: Any, **kwargs: Any) -> str:
        client = api_method.__self__.api_client
        original = client.call_api

        def websocket_only(*a: Any, **k: Any) -> Any:
            raise RuntimeError("this request went over the exec's websocket")

        client.call_api = websocket_only
        try:
            during.append(api.server_version())  # what another thread does meanwhile
        finally:
            client.call_api = original
        return "exec output"

    monkeypatch.setattr(kubernetes.stream, "stream", stream)
    assert api.exec("meshconf-x", "client-v1-abc", "istio-proxy", ["pilot-agent", "request", "GET", "stats"]) \
        == "exec output"
    assert during == ["v1.34.1"]


def test_http_over_a_socket_stops_at_the_answers_length() -> None:
    import socket

    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n")
        assert http_over_socket(ours, "GET", "/x", None, 5) == (200, '{"a":1}')  # the stream stays open
        assert theirs.recv(100).startswith(b"GET /x HTTP/1.1\r\n")
