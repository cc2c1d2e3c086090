"""Faults in the middle of a run, from the checks' side: a sidecar someone else killed makes its check *broken*
(naming the process and its last output), not *failed*; the local mesh process dying makes every remaining
check broken at once with one reason, with no hang; the local mesh's kubelet starts a dead process again, so the
checks after it run on a healthy mesh, and a death counts only for the check it happened under."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from conformance.probe import ProbeClient
from conformance.provider import ProbeSpec
from conformance.providers.local.provider import LocalProvider
from conformance.runstate import RunState
from tests.conftest import processes_mentioning, run_meshconf
from tests.integration.mesh import eventually

pytestmark = pytest.mark.integration

_HEAD = """
import os
import signal

from conformance import Area, Scenario, check
from conformance.expect import expect_all_ok
from conformance.runstate import RunState


def kill(pid: int) -> None:  # someone else than meshconf
    os.kill(pid, signal.SIGKILL)
"""

SUITE = {
    "test_a_sidecar_killed.py": """
@check("a-sidecar-killed", area=Area.FAILOVER, description="someone else kills the server's sidecar")
def test_a_sidecar_killed(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1")
    expect_all_ok(scenario.call(client, server, count=3))
    processes = RunState(scenario.mesh.run_dir).read()["processes"]
    kill(next(p["pid"] for p in processes if p["name"] == f"{server.instances[0].name}/envoy"))
    expect_all_ok(scenario.call(client, server, count=3))
""",
    "test_b_mesh_killed.py": """
@check("b-mesh-killed", area=Area.FAILOVER, description="someone else kills the local mesh process")
def test_b_mesh_killed(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1")
    expect_all_ok(scenario.call(client, server, count=3))
    kill(RunState(scenario.mesh.run_dir).read()["daemon_pid"])
    expect_all_ok(scenario.call(client, server, count=3))
""",
    **{f"test_{x}_after.py": f"""
@check("{x}-after", area=Area.FAILOVER, description="a check after the mesh process died")
def test_{x}_after(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    expect_all_ok(scenario.call(scenario.deploy("client", "cluster1"), server, count=3))
""" for x in ("c", "d")},
}


def test_dead_sidecar_and_dead_mesh_break_checks_with_one_reason(tmp_path: Path) -> None:
    suites = tmp_path / "suites"
    suites.mkdir()
    for name, body in SUITE.items():
        (suites / name).write_text(textwrap.dedent(_HEAD) + textwrap.dedent(body))
    out, runs = tmp_path / "out", tmp_path / "runs"
    started = time.monotonic()
    done = run_meshconf("run", "--suites", str(suites), "--out", str(out), env={"MESHCONF_STATE_DIR": str(runs)},
                        timeout=300)
    took = time.monotonic() - started
    assert done.returncode == 3, done.stdout[-3000:]
    checks = {c["id"]: c for c in json.loads((out / "conformance-report.json").read_text())["checks"]}
    assert {k: c["status"] for k, c in checks.items()} == dict.fromkeys(
        ("a-sidecar-killed", "b-mesh-killed", "c-after", "d-after"), "broken")
    sidecar = checks["a-sidecar-killed"]["message"]
    assert "the environment broke underneath the check: server-v1-" in sidecar
    assert "its sidecar Envoy (pid " in sidecar and "was killed by signal 9 (SIGKILL)" in sidecar
    gone = checks["b-mesh-killed"]["message"]
    assert gone.startswith("the local mesh process (pid ") and "is gone" in gone
    assert checks["c-after"]["message"] == checks["d-after"]["message"] == gone
    assert checks["c-after"]["durationSeconds"] < 1 and checks["d-after"]["durationSeconds"] < 1
    assert took < 120  # no check waited out a timeout
    assert not runs.exists() or not any(runs.iterdir())
    assert processes_mentioning(str(runs)) == []


def _problems(mesh: LocalProvider, namespace: str) -> list[str]:
    """A kill is delivered asynchronously: give the death a moment to show."""
    deadline = time.monotonic() + 10
    while not (problems := mesh.environment_problems([namespace])) and time.monotonic() < deadline:
        time.sleep(0.05)
    return problems


def test_a_fault_the_check_asked_for_is_no_environment_problem(local_mesh: LocalProvider) -> None:
    namespace = "meshconf-faults-midrun"
    assert local_mesh.run_dir is not None
    try:
        asked = local_mesh.deploy_probe(ProbeSpec("asked", namespace, "cluster1"))
        other = local_mesh.deploy_probe(ProbeSpec("other", namespace, "cluster1"))
        local_mesh.faults.kill(asked)
        assert local_mesh.environment_problems([namespace]) == []
        processes = RunState(local_mesh.run_dir).read()["processes"]
        os.kill(next(p["pid"] for p in processes if p["name"] == f"{other.instances[0].name}/probe"), signal.SIGKILL)
        problems = _problems(local_mesh, namespace)
        assert len(problems) == 1, problems
        assert problems[0].startswith(f"{other.instances[0].name} (namespace {namespace}, cluster cluster1): its probe")
        assert local_mesh.environment_problems(["meshconf-elsewhere"]) == []
    finally:
        local_mesh.delete_namespace(namespace)
    # a gateway is under every check: its death is the problem of every check running then
    gateway = next(p for p in RunState(local_mesh.run_dir).read()["processes"]
                   if p["name"] == "istio-ingressgateway.cluster1/envoy")
    before = time.time()
    os.kill(gateway["pid"], signal.SIGKILL)
    problems = _problems(local_mesh, "meshconf-elsewhere")
    assert len(problems) == 1 and problems[0].startswith(
        f"istio-ingressgateway.cluster1 (ingress gateway of cluster cluster1): its Envoy (pid {gateway['pid']}) was "
        "killed by signal 9 (SIGKILL), and meshconf did not stop it; its last output: (no output) ("), problems
    # ... and the kubelet starts it again (its control plane ACKed its config), and a check that starts now
    # sees no problem
    assert _restarted(local_mesh, "istio-ingressgateway.cluster1/envoy", gateway["pid"])
    assert local_mesh.environment_problems(["meshconf-elsewhere"], since=time.time()) == []
    assert local_mesh.environment_problems(["meshconf-elsewhere"], since=before)[0].endswith("(restarted)")


def _restarted(mesh: LocalProvider, name: str, old_pid: int) -> bool:
    assert mesh.run_dir is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = [p["pid"] for p in RunState(mesh.run_dir).read()["processes"] if p["name"] == name]
        if pids and pids[0] != old_pid and all(
                p.endswith("(restarted)") for p in mesh.environment_problems(["meshconf-elsewhere"], since=0)):
            return True
        time.sleep(0.1)
    return False


def test_a_sidecar_someone_killed_is_started_again_and_serves(local_mesh: LocalProvider) -> None:
    namespace = "meshconf-kubelet"
    assert local_mesh.run_dir is not None
    try:
        server = local_mesh.deploy_probe(ProbeSpec("server", namespace, "cluster1"))
        client = local_mesh.deploy_probe(ProbeSpec("client", namespace, "cluster1"))
        name = f"{server.instances[0].name}/envoy"
        pid = next(p["pid"] for p in RunState(local_mesh.run_dir).read()["processes"] if p["name"] == name)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pids = [p["pid"] for p in RunState(local_mesh.run_dir).read()["processes"] if p["name"] == name]
            if pids and pids[0] != pid:
                break
            time.sleep(0.1)
        # the client's sidecar may still hold a connection to the dead Envoy: its first call can fail
        answered = eventually(lambda: ProbeClient(local_mesh, 2, 30).call(client, server.url(), 5),
                              lambda result: result.statuses() == {200: 5})
        assert answered.statuses() == {200: 5}, answered.summary()
        problems = local_mesh.environment_problems([namespace], since=killed_at)
        assert len(problems) == 1 and problems[0].endswith("(restarted)"), problems
    finally:
        local_mesh.delete_namespace(namespace)
