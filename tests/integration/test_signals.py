"""``meshconf run`` stopped by SIGINT or SIGTERM mid-load: the running check stops, the mesh is torn down, the
run directory is removed, the report of the checks that finished is written, and the exit code says which
signal (130 / 143). A second signal skips the report and still tears down.

The run is a real ``meshconf run`` started with ``subprocess.Popen`` from this process, so its SIGINT
disposition is the default one (a background job of a non-interactive shell would start with SIGINT
ignored). The signal goes to meshconf's process only, as ``kill`` / CI / ``timeout`` send it; a terminal's
Ctrl-C reaches the same process (pytest runs in a session of its own).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, processes_mentioning

pytestmark = pytest.mark.integration

FINISHES_FIRST = "authz-allow-principal"
LOADED = "latency-ingress-budget"
"""A Locust load through the ingress gateway: its own process, which must not be left behind."""
SELECTION = "test_authz_allow_principal or test_latency_ingress_budget"


class Run:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.out = tmp_path / "out"
        self.runs = tmp_path / "runs"
        self.log = tmp_path / "meshconf.log"
        env = {**os.environ, "MESHCONF_STATE_DIR": str(self.runs), "PYTHONUNBUFFERED": "1"}
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "conformance.cli", "run", "--out", str(self.out), "-k", SELECTION,
                 "--load", "duration_s=20", *args],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_for(self, condition: object, what: str, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():  # type: ignore[operator]
            if self.process.poll() is not None:
                pytest.fail(f"meshconf ended before {what}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout_s:.0f}s")
            time.sleep(0.1)

    def load_running(self) -> bool:
        return any("locust" in cmd for _, cmd in processes_mentioning(str(self.out / "load" / LOADED)))

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def finish(self, timeout_s: float = 120) -> int:
        code = self.process.wait(timeout_s)
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def left_behind(self) -> list[object]:
        time.sleep(0.5)  # processes killed by their parent's death are reaped by init
        runs = list(self.runs.iterdir()) if self.runs.exists() else []
        return [*runs, *processes_mentioning(str(self.runs)), *processes_mentioning(str(self.out))]

    def report(self) -> dict[str, object]:
        report: dict[str, object] = json.loads((self.out / "conformance-report.json").read_text())
        return report


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_load_tears_down_and_reports_what_finished(tmp_path: Path, sig: int, code: int) -> None:
    run = Run(tmp_path)
    try:
        run.wait_for(run.load_running, "Locust load")
        time.sleep(1)
        run.signal(sig)
        assert run.finish() == code, run.output()
        assert run.left_behind() == []
        report = run.report()
        assert {c["id"]: c["status"] for c in report["checks"]} == {FINISHES_FIRST: "passed"}  # type: ignore[attr-defined]
        name = signal.Signals(sig).name
        assert report["run"]["error"] == f"interrupted by {name}: 1 check(s) finished, stopped while running: {LOADED}"  # type: ignore[index]
        assert f"meshconf: {name}: stopping the running checks" in run.output()
    finally:
        run.stop()


def test_sigint_with_xdist_workers(tmp_path: Path) -> None:
    """Under -n 2 the signal reaches only meshconf; it stops pytest's controller and workers together."""
    run = Run(tmp_path, "-n", "2")
    try:
        run.wait_for(run.load_running, "Locust load")
        time.sleep(1)
        run.signal(signal.SIGINT)
        assert run.finish() == 130, run.output()
        assert run.left_behind() == []
        report = run.report()
        assert str(report["run"]["error"]).startswith("interrupted by SIGINT")  # type: ignore[index]
        assert LOADED in str(report["run"]["error"])  # type: ignore[index]
        assert {c["status"] for c in report["checks"]} <= {"passed"}  # type: ignore[attr-defined]
        assert LOADED not in {c["id"] for c in report["checks"]}  # type: ignore[attr-defined]
    finally:
        run.stop()


def test_a_second_signal_skips_the_report_and_still_tears_down(tmp_path: Path) -> None:
    run = Run(tmp_path)
    try:
        run.wait_for(run.load_running, "Locust load")
        run.signal(signal.SIGINT)
        time.sleep(0.1)
        run.signal(signal.SIGINT)
        assert run.finish() == 130, run.output()
        assert "SIGINT again: skipping the report" in run.output()
        assert run.left_behind() == []
        assert not (run.out / "conformance-report.json").exists()
    finally:
        run.stop()


def test_sigterm_while_the_mesh_comes_up(tmp_path: Path) -> None:
    run = Run(tmp_path)
    try:
        run.wait_for(lambda: run.runs.exists() and any(run.runs.iterdir()), "run directory")
        run.signal(signal.SIGTERM)
        assert run.finish() == 143, run.output()
        assert run.left_behind() == []
        report = run.report()
        assert report["run"]["error"] == "interrupted by SIGTERM while the mesh was coming up"  # type: ignore[index]
    finally:
        run.stop()
