"""Fixtures for the framework's own tests. Every process a test starts is stopped by PID when it ends."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.providers import build_config
from conformance.providers.local.provider import LocalProvider
from conformance.topology import load_topology

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test session keeps its run directories to itself (never the user's ~/.local/state)."""
    monkeypatch.setenv("MESHCONF_STATE_DIR", str(tmp_path_factory.getbasetemp() / "runs"))


@pytest.fixture(scope="module")
def local_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProvider]:
    """A two-cluster local mesh for one test module, torn down (every process) afterwards."""
    saved = os.environ.get("MESHCONF_STATE_DIR")
    os.environ["MESHCONF_STATE_DIR"] = str(tmp_path_factory.getbasetemp() / "runs")
    provider = LocalProvider(build_config(), load_topology("multi-primary"))
    try:
        provider.up()
        yield provider
    finally:
        provider.down()
        if saved is None:
            os.environ.pop("MESHCONF_STATE_DIR", None)
        else:
            os.environ["MESHCONF_STATE_DIR"] = saved


def run_meshconf(*args: str, cwd: Path = REPO, timeout: float = 600,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``meshconf`` command in a subprocess (stopped on timeout); ``env`` adds variables."""
    return subprocess.run([sys.executable, "-m", "conformance.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def processes_mentioning(marker: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains ``marker`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append((int(entry.name), cmdline))
    return found
