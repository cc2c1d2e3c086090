"""The local mesh starts, stops, and leaves nothing behind — also when its owner or itself is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from conformance.provider import ProbeSpec
from conformance.providers import build_config
from conformance.providers.local.provider import LocalProvider
from conformance.runstate import RunState
from conformance.topology import load_topology
from tests.conftest import processes_mentioning, run_meshconf

pytestmark = pytest.mark.integration


def _kind(cmdline: str) -> str:
    return next(k for k in ("daemon", "envoy", "probe.py") if k in cmdline)


def _wait_until_gone(marker: str, timeout_s: float = 10.0) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout_s
    left = processes_mentioning(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_mentioning(marker)
    return left


def test_up_and_down_leave_no_process_and_no_directory() -> None:
    provider = LocalProvider(build_config(), load_topology("multi-primary"))
    provider.up()
    run_dir = provider.run_dir
    assert run_dir is not None
    try:
        provider.deploy_probe(ProbeSpec("server", "ns1", "cluster1"))
        provider.deploy_probe(ProbeSpec("outsider", "ns1", "cluster2", in_mesh=False))
        kinds = Counter(_kind(cmd) for _, cmd in processes_mentioning(str(run_dir)))
        # the mesh process; an ingress gateway per cluster + the in-mesh probe's sidecar; two probes
        assert kinds == {"daemon": 1, "envoy": 3, "probe.py": 2}
    finally:
        provider.down()
    assert _wait_until_gone(str(run_dir), timeout_s=1) == []
    assert not run_dir.exists()
    provider.down()  # idempotent


def test_mesh_stops_when_its_owner_dies(tmp_path: Path) -> None:
    """A crashed test run (owner killed with SIGKILL) does not leak a mesh."""
    script = textwrap.dedent("""
        import sys, time
        from conformance.providers import build_config
        from conformance.provider import ProbeSpec
        from conformance.providers.local.provider import LocalProvider
        from conformance.topology import load_topology
        import os
        p = LocalProvider(build_config(), load_topology("multi-primary"))
        p.up(owner_pid=os.getpid())
        p.deploy_probe(ProbeSpec("server", "ns1", "cluster1"))
        print(p.run_dir, flush=True)
        time.sleep(120)
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ) as owner:
        try:
            assert owner.stdout is not None
            run_dir = owner.stdout.readline().strip()
            kinds = Counter(_kind(cmd) for _, cmd in processes_mentioning(run_dir))
            assert kinds == {"daemon": 1, "envoy": 3, "probe.py": 1}  # 2 ingress gateways + 1 sidecar
            owner.send_signal(signal.SIGKILL)
            owner.wait(10)
            assert _wait_until_gone(run_dir) == []
            assert RunState(Path(run_dir)).read().get("stopped") is True
        finally:
            if owner.poll() is None:
                owner.kill()
                owner.wait(10)
    result = run_meshconf("down", run_dir)
    assert result.returncode == 0, result.stderr
    assert not Path(run_dir).exists()


def test_killing_the_mesh_process_kills_its_children_and_down_cleans_up() -> None:
    provider = LocalProvider(build_config(), load_topology("multi-primary"))
    provider.up()
    run_dir = provider.run_dir
    assert run_dir is not None
    try:
        provider.deploy_probe(ProbeSpec("server", "ns1", "cluster1"))
        daemon_pid = RunState(run_dir).read()["daemon_pid"]
        os.kill(daemon_pid, signal.SIGKILL)
        assert _wait_until_gone(str(run_dir)) == []  # Envoy and probe die with it (PR_SET_PDEATHSIG)
        assert run_dir.exists()  # the crash left its directory for `meshconf down`
    finally:
        result = run_meshconf("down")
        provider.down()  # reaps the killed mesh process; nothing else is left to do
    assert result.returncode == 0, result.stderr
    assert str(run_dir) in result.stdout
    assert not run_dir.exists()


def test_down_refuses_a_directory_meshconf_did_not_create(tmp_path: Path) -> None:
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "file.txt").write_text("mine")
    result = run_meshconf("down", str(keep))
    assert result.returncode == 2
    assert "not a meshconf run directory" in result.stderr
    assert (keep / "file.txt").read_text() == "mine"
