"""Bad input and a broken environment get one clear message and the right exit code, before anything starts
where possible, and leave nothing behind (issue 14's table, row by row)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.cli import list_checks
from tests.conftest import REPO, processes_mentioning, run_meshconf

ALL_CHECKS = {info.id for info in list_checks(REPO / "suites")}
KEY_LINE = "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5S4ZVdvyfzcn1oAoGCCqGSM49AwEHoUQDQgAE"
"""A line of a PEM private key body that the fake Envoy below prints: it must not reach out/."""


def _meshconf(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``meshconf`` with its own run-state directory, so "nothing was started" can be checked exactly."""
    return run_meshconf(*args, env={"MESHCONF_STATE_DIR": str(tmp_path / "runs"), **(env or {})}, timeout=300)


def _started_nothing(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), f"left behind: {list(runs.iterdir())}"
    assert processes_mentioning(str(runs)) == []


def _lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def _report(out: Path) -> dict[str, object]:
    report: dict[str, object] = json.loads((out / "conformance-report.json").read_text())
    return report


def _all_broken_with(out: Path, checks: set[str], reason: str) -> None:
    report = _report(out)
    assert reason in str(report["run"]["error"])  # type: ignore[index]
    statuses = {c["id"]: (c["status"], c["message"]) for c in report["checks"]}  # type: ignore[attr-defined]
    assert set(statuses) == checks
    assert all(status == "broken" and reason in message for status, message in statuses.values()), statuses
    assert "did not complete" in (out / "conformance-report.md").read_text()


# -- usage errors only the provider can detect: exit 2, one line, before anything starts -----------------------


@pytest.mark.parametrize("flag", ["--defect", "--mesh-defect"])  # --mesh-defect: the spelling scripts still use
def test_unknown_mesh_defect_is_one_line_and_exit_2(tmp_path: Path, flag: str) -> None:
    out = tmp_path / "out"
    done = _meshconf(tmp_path, "run", flag, "nope", "--out", str(out))
    assert done.returncode == 2
    assert _lines(done) == [done.stderr.strip()]
    assert "unknown --defect 'nope'" in done.stderr and "ignore-peer-authentication" in done.stderr
    assert not out.exists()
    _started_nothing(tmp_path)


def test_unknown_mesh_defect_under_plain_pytest_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "suites", "--mesh-defect=nope",
                           f"--mesh-out={tmp_path / 'out'}"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**_env(tmp_path)})
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "unknown --defect 'nope'" in done.stderr and "Traceback" not in done.stdout + done.stderr
    assert len(_lines(done)) <= 2
    _started_nothing(tmp_path)


@pytest.mark.parametrize("workers", ["abc", "-1", "two"])
def test_workers_must_be_a_number(tmp_path: Path, workers: str) -> None:
    done = _meshconf(tmp_path, "run", "-n", workers, "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert _lines(done) == [f"meshconf run: error: argument -n/--workers: {workers!r} is not a number of workers "
                            "(0 runs in this process; 1, 2, ... or auto) (see `meshconf run --help`)"]
    _started_nothing(tmp_path)


# -- the output directory --------------------------------------------------------------------------------------


def test_out_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    for out, said in ((blocker, "is a file, not a directory"), (blocker / "out", f"{blocker} is a file")):
        done = _meshconf(tmp_path, "run", "--out", str(out), "-k", "strict_rejects")
        assert done.returncode == 2, done.stdout + done.stderr
        assert len(_lines(done)) == 1 and said in done.stderr
    assert blocker.read_text() == "mine"
    _started_nothing(tmp_path)


def test_a_file_where_meshconf_writes_a_directory_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "allure-results").write_text("mine")
    done = _meshconf(tmp_path, "run", "--out", str(out), "-k", "strict_rejects")
    assert done.returncode == 2
    assert len(_lines(done)) == 1 and "allure-results is in the way" in done.stderr
    assert (out / "allure-results").read_text() == "mine"
    _started_nothing(tmp_path)


def test_out_that_cannot_be_written_is_a_usage_error(tmp_path: Path) -> None:
    # sysfs refuses new files to every user, root included
    done = _meshconf(tmp_path, "run", "--out", "/sys/kernel", "-k", "strict_rejects")
    assert done.returncode == 2
    assert len(_lines(done)) == 1 and "--out /sys/kernel is not writable" in done.stderr
    _started_nothing(tmp_path)


# -- preflight and bring-up: exit 3, a few lines, a report with every selected check broken ---------------------


def test_envoy_that_does_not_run_fails_preflight(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _meshconf(tmp_path, "run", "--envoy-binary", "/bin/false", "--out", str(out))
    assert done.returncode == 3, done.stdout + done.stderr
    lines = _lines(done)
    assert len(lines) <= 5, lines
    assert "Traceback" not in done.stdout + done.stderr
    assert "Envoy /bin/false does not run: `/bin/false --version` exited with 1" in done.stderr
    _all_broken_with(out, ALL_CHECKS, "preflight for --provider local failed")
    _started_nothing(tmp_path)


@pytest.mark.integration
def test_mesh_that_does_not_come_up_is_one_event(tmp_path: Path) -> None:
    """Envoy answers --version but dies at start-up, printing (among other things) a key: one message with its
    stderr and where the log is, the log kept in out/ without the key, every check broken, nothing left."""
    envoy = tmp_path / "envoy"
    envoy.write_text("#!/bin/sh\n"
                     'if [ "$1" = "--version" ]; then echo "envoy  version: 0/1.40.0/Clean/RELEASE/BoringSSL"; '
                     "exit 0; fi\n"
                     f"printf -- '-----BEGIN EC PRIVATE KEY-----\\n{KEY_LINE}\\n-----END EC PRIVATE KEY-----\\n' >&2\n"
                     "echo 'critical: error initializing configuration: boom' >&2\nexit 1\n")
    envoy.chmod(0o755)
    out = tmp_path / "out"
    done = _meshconf(tmp_path, "run", "--envoy-binary", str(envoy), "--out", str(out), "-k", "mtls")
    assert done.returncode == 3, done.stdout + done.stderr
    lines = _lines(done)
    assert len(lines) <= 6, lines
    assert "Traceback" not in done.stdout + done.stderr
    failure = next(line for line in lines if line.startswith("meshconf: error: the mesh did not come up"))
    assert "exited during start-up" in failure and "boom" in failure
    log = out / "diagnostics" / "bring-up" / "mesh.log"
    assert f"(bring-up log: {log})" in failure
    assert "boom" in log.read_text() and KEY_LINE not in log.read_text() and "PRIVATE KEY-----" not in log.read_text()
    mtls = {c for c in ALL_CHECKS if "mtls" in c.replace("-", "_")}
    _all_broken_with(out, mtls, "the mesh did not come up")
    _started_nothing(tmp_path)


def _tool(folder: Path, name: str, script: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text("#!/bin/sh\n" + script + "\n")
    (folder / name).chmod(0o755)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    import os

    return {**os.environ, "MESHCONF_STATE_DIR": str(tmp_path / "runs"), "PYTHONUNBUFFERED": "1", **extra}


def test_kind_without_a_docker_daemon_fails_preflight(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    _tool(tools, "docker", 'if [ "$1" = "info" ]; then echo "Cannot connect to the Docker daemon" >&2; exit 1; fi\n'
                           'echo "Docker version 28.2.2, build test"')
    _tool(tools, "kind", "echo kind v0.33.0 go1.25 linux/amd64")
    _tool(tools, "kubectl", """echo '{"clientVersion": {"gitVersion": "v1.34.1"}}'""")
    out = tmp_path / "out"
    done = _meshconf(tmp_path, "run", "--provider", "kind", "--istio-version", "1.28.0", "--out", str(out),
                     env={"PATH": str(tools)})
    assert done.returncode == 3, done.stdout + done.stderr
    lines = _lines(done)
    assert "Traceback" not in done.stdout + done.stderr and len(lines) <= 8, lines
    daemon = next(line for line in lines if "docker daemon" in line)
    assert "not reachable" in daemon and "see `meshconf doctor --provider kind`" in daemon
    assert not any("kind " in line and "older" in line for line in lines)
    _all_broken_with(out, ALL_CHECKS, "preflight for --provider kind failed")
    _started_nothing(tmp_path)


def test_plain_pytest_gets_one_line_per_check_not_a_traceback(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "pytest", "suites", "--mesh-envoy-binary=/bin/false",
                           f"--mesh-out={out}", "-p", "no:cacheprovider"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=_env(tmp_path))
    assert done.returncode == 3, done.stdout[-3000:]
    assert "Traceback" not in done.stdout and "\n>" not in done.stdout and "\nE " not in done.stdout
    errors = [line for line in done.stdout.splitlines() if line.startswith("preflight for --provider local failed")]
    assert len(errors) == len(ALL_CHECKS)  # one line under each check's header, nothing else
    _all_broken_with(out, ALL_CHECKS, "preflight for --provider local failed")
    _started_nothing(tmp_path)


def test_reports_that_cannot_be_written_are_one_line_and_exit_3(tmp_path: Path) -> None:
    """The reports are the verdict: when they cannot be written (here a directory is in the way; a full disk
    fails the same way) the session says so in one line and exits 3, whatever the checks did."""
    out = tmp_path / "out"
    (out / "conformance-report.json").mkdir(parents=True)
    done = subprocess.run([sys.executable, "-m", "pytest", "suites", "-k", "strict_rejects", f"--mesh-out={out}",
                           "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=_env(tmp_path))
    assert done.returncode == 3, done.stdout[-3000:]
    assert f"meshconf: error: the reports could not be written in {out}/: Is a directory" in done.stdout
    assert "INTERNALERROR" not in done.stdout + done.stderr and "Traceback" not in done.stdout + done.stderr
    assert (out / "conformance-report.json").is_dir()
    _started_nothing(tmp_path)
