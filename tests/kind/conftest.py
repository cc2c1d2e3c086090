"""Fixtures for the kind/existing provider tests: plans built offline, no Docker, no cluster."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conformance.certs import MeshCA
from conformance.probe import probe_source
from conformance.providers.kind.plan import PlanContext, build_plan
from conformance.providers.kind.steps import Step
from conformance.topology import load_topology

TOPOLOGIES = ("multi-primary", "multi-network", "primary-remote", "three-cluster")


@pytest.fixture(scope="session")
def mesh_ca(tmp_path_factory: pytest.TempPathFactory) -> MeshCA:
    return MeshCA.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def plan_for(mesh_ca: MeshCA) -> Callable[[str], list[Step]]:
    cache: dict[str, list[Step]] = {}

    def make(topology: str) -> list[Step]:
        if topology not in cache:
            ctx = PlanContext(load_topology(topology), "1.28.0", mesh_ca, probe_source().read_text())
            cache[topology] = build_plan(ctx)
        return cache[topology]

    return make


@pytest.fixture
def fake_istioctl(tmp_path: Path) -> Path:
    binary = tmp_path / "istioctl"
    binary.write_text("#!/bin/sh\necho 1.28.0\n")
    binary.chmod(0o755)
    return binary
