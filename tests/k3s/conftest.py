"""Fixtures for the k3s provider tests: a recording Docker engine under the real testcontainers and docker-py,
recorded host commands (kubectl, istioctl), and a fake istioctl binary. No Docker, no cluster."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


TOPOLOGIES = ("multi-primary", "multi-network", "primary-remote")
TWO_ZONES = """
name: two-zones
meshID: mesh1
trustDomain: cluster.local
linkRttMs: 25
clusters:
  - {name: east, network: net1, region: r1, zones: [z1, z2]}
  - {name: west, network: net1, region: r2, zones: [z3]}
"""
"""A topology whose first cluster spans two zones: a server and an agent."""


@pytest.fixture(scope="session")
def mesh_ca(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conformance.certs import MeshCA

    return MeshCA.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def plan_for(mesh_ca: Any) -> Callable[[str], Any]:
    """The k3s plan of a shipped topology (or of TWO_ZONES), built offline."""
    from conformance.probe import probe_source
    from conformance.providers.k3s.plan import PlanContext, build_plan
    from conformance.topology import load_topology, parse_topology

    cache: dict[str, Any] = {}

    def make(topology: str) -> Any:
        if topology not in cache:
            mesh = parse_topology(yaml.safe_load(TWO_ZONES)) if topology == "two-zones" else load_topology(topology)
            cache[topology] = build_plan(PlanContext(mesh, "1.28.0", mesh_ca, probe_source().read_text()))
        return cache[topology]

    return make
