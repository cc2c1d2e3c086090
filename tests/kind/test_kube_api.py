"""KubeAPI against a fake API server on 127.0.0.1 (plain HTTP, bearer token): the real ``kubernetes`` client
builds the requests, so the URL paths, methods, bodies and credentials of the pod proxy are checked here.
Server-side apply, exec and waits against a real API server remain unverified (see the README)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import ProviderError
from conformance.providers.kube.api import KubeAPI

TOKEN = "test-token"


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[KubeAPI, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            seen.append({"method": self.command, "path": self.path, "auth": self.headers.get("Authorization"),
                         "body": body})
            if self.path.split("?")[0].rstrip("/") == "/version":
                payload: Any = {"major": "1", "minor": "34", "gitVersion": "v1.34.1", "gitCommit": "x",
                                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25",
                                "compiler": "gc", "platform": "linux/amd64"}
                status = 200
            elif "/proxy/" in self.path and "/pods/gone" not in self.path:
                payload, status = {"status": "ok", "echo": json.loads(body) if body else None}, 200
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
