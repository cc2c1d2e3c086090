"""Fixtures for the k3s provider tests: a recording Docker engine under the real testcontainers and docker-py,
recorded host commands (kubectl, istioctl), and a fake istioctl binary. No Docker, no cluster."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .docker_engine import Engine, Server

K3S_YAML = yaml.safe_dump({
    "apiVersion": "v1", "kind": "Config", "current-context": "default", "preferences": {},
    "clusters": [{"name": "default", "cluster": {"server": "https://127.0.0.1:6443",
                                                 "certificate-authority-data": base64.b64encode(b"ca").decode()}}],
    "users": [{"name": "default", "user": {"client-certificate-data": base64.b64encode(b"cert").decode(),
                                           "client-key-data": base64.b64encode(b"KEY-MATERIAL").decode()}}],
    "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
})
"""What ``cat /etc/rancher/k3s/k3s.yaml`` prints in a k3s server (k3s names everything ``default``)."""


def answer(_name: str, cmd: list[str]) -> tuple[int, bytes]:
    if cmd == ["cat", "/etc/rancher/k3s/k3s.yaml"]:
        return 0, K3S_YAML.encode()
    return 0, b""


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A recording Docker engine on 127.0.0.1 that testcontainers finds through DOCKER_HOST; the host already has
    the k3s and Ryuk images (so only meshconf's own images are pulled)."""
    from testcontainers.core.config import ConnectionMode, testcontainers_config
    from testcontainers.core.container import Reaper

    engine = Engine(images={"rancher/k3s:v1.34.11-k3s1", testcontainers_config.ryuk_image}, exec_answer=answer)
    with Server(engine) as server:
        monkeypatch.setenv("DOCKER_HOST", server.url)
        # this sandbox is itself a container: testcontainers would then look for a docker network it runs in
        monkeypatch.setattr(testcontainers_config, "connection_mode_override", ConnectionMode.docker_host)
        monkeypatch.setattr(testcontainers_config, "_ryuk_disabled", None)
        try:
            yield engine
        finally:
            Reaper.delete_instance()  # while the engine still answers (testcontainers would at exit)


@pytest.fixture
def fake_istioctl(tmp_path: Path) -> Path:
    binary = tmp_path / "istioctl"
    binary.write_text("#!/bin/sh\necho 1.28.0\n")
    binary.chmod(0o755)
    return binary
