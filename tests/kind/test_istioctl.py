"""istioctl download: served from a local HTTP server on 127.0.0.1, checked with a real sha256."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conformance.errors import EnvironmentBroken, UsageError
from conformance.providers.kind.istioctl import archive_name, cache_dir, download_istioctl, resolve_istioctl

VERSION = "1.28.0"


def _tarball() -> bytes:
    payload = b"#!/bin/sh\necho 1.28.0\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("istioctl")
        info.size, info.mode = len(payload), 0o755
        tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


@pytest.fixture
def release_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, bytes]]:
    """A fake GitHub release: files[name] is served at /<version>/<name>."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path.rsplit("/", 1)[-1])
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    files["__url__"] = f"http://127.0.0.1:{server.server_address[1]}".encode()
    try:
        yield files
    finally:
        server.shutdown()
        server.server_close()


def _serve(files: dict[str, bytes], digest: str | None = None) -> tuple[str, str]:
    name = archive_name(VERSION, "linux", "x86_64")
    archive = _tarball()
    files[name] = archive
    files[name + ".sha256"] = f"{digest or hashlib.sha256(archive).hexdigest()}  {name}\n".encode()
    return files["__url__"].decode(), name


def test_archive_names() -> None:
    assert archive_name("1.28.0", "Linux", "x86_64") == "istioctl-1.28.0-linux-amd64.tar.gz"
    assert archive_name("1.28.0", "Darwin", "arm64") == "istioctl-1.28.0-osx-arm64.tar.gz"
    with pytest.raises(UsageError, match="--istioctl"):
        archive_name("1.28.0", "Windows", "x86_64")


def test_download_is_verified_and_cached(release_server: dict[str, bytes]) -> None:
    url, name = _serve(release_server)
    binary = download_istioctl(VERSION, base_url=url, system="linux", machine="x86_64")
    assert binary == cache_dir(VERSION) / "istioctl"
    assert binary.read_bytes().startswith(b"#!/bin/sh") and binary.stat().st_mode & 0o111
    assert (cache_dir(VERSION) / f"{name}.sha256").is_file()
    release_server.clear()  # a second resolve uses the cache, not the network
    assert resolve_istioctl(VERSION, base_url="http://127.0.0.1:9") == binary


def test_a_wrong_digest_installs_nothing(release_server: dict[str, bytes]) -> None:
    url, _ = _serve(release_server, digest="0" * 64)
    with pytest.raises(EnvironmentBroken, match="failed its sha256 check"):
        download_istioctl(VERSION, base_url=url, system="linux", machine="x86_64")
    assert not (cache_dir(VERSION) / "istioctl").exists()


def test_a_missing_digest_file_installs_nothing(release_server: dict[str, bytes]) -> None:
    url, name = _serve(release_server)
    del release_server[name + ".sha256"]
    with pytest.raises(EnvironmentBroken, match="cannot download"):
        download_istioctl(VERSION, base_url=url, system="linux", machine="x86_64")
    assert not (cache_dir(VERSION) / "istioctl").exists()


def test_given_istioctl_wins(tmp_path: Path, fake_istioctl: Path) -> None:
    assert resolve_istioctl(VERSION, fake_istioctl) == fake_istioctl
    with pytest.raises(UsageError, match="not an executable"):
        resolve_istioctl(VERSION, tmp_path / "missing")
    with pytest.raises(UsageError, match="must look like"):
        resolve_istioctl("latest", fake_istioctl)
