"""The controller's view of a run: every check's result (pytest-xdist forwards its workers' reports here), the
run's reports, the mesh's tear-down when this session brought it up, and the exit code.

Only checks that finished are reported: a check stopped by Ctrl-C / SIGTERM never reached its teardown, and
the run's ``error`` names it instead. The reports are the verdict, so failing to write them (a full disk) is
one line and exit 3, never a traceback.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any, cast

import pytest

from conformance.config import RunConfig
from conformance.errors import EXIT_ENVIRONMENT, EXIT_NON_CONFORMANT, EXIT_OK
from conformance.preflight import OUT_DIRS, OUT_FILES
from conformance.providers import release_provider
from conformance.redact import redact_tree
from conformance.report.allure import write_run_files
from conformance.report.conformance import run_metadata, write_reports
from conformance.report.model import CheckResult, Measurement, Status
from conformance.session import lost_reason, session_mesh, shared_dir
from conformance.topology import load_topology

__all__ = ["RunCollector"]


class RunCollector:
    """On the controller: gathers every check's result (xdist forwards workers' reports here), writes the
    run's reports, tears the mesh down, and sets the exit code."""

    def __init__(self, config: pytest.Config, run_config: RunConfig, owns_shared: bool = True) -> None:
        self.config = config
        self.run_config = run_config
        self.results: dict[str, CheckResult] = {}
        self.started = time.time()
        self.owns_shared = owns_shared
        """False when ``meshconf run`` made the session directory (it removes it, and tears the mesh down)."""
        self.finished: set[str] = set()
        """Checks whose teardown reported: an interrupted check never gets there, and is not reported."""

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props: dict[str, Any] = dict(report.user_properties) if report.user_properties else {}
        if "meshconf.check" not in props:
            return
        info = props["meshconf.check"]
        status = Status(props["meshconf.status"])
        result = self.results.get(report.nodeid)
        if result is None:
            result = self.results[report.nodeid] = CheckResult(
                id=info["id"], area=info["area"], description=info["description"], status=Status.PASSED,
                duration_s=0.0, nodeid=report.nodeid, severity=info["severity"],
            )
        if report.when == "teardown":
            self.finished.add(report.nodeid)
        result.duration_s += report.duration
        result.measurements += [Measurement.from_dict(cast(dict[str, Any], v)) for k, v in report.user_properties
                                if k == "meshconf.measurement"]
        if report.when == "teardown" and status is Status.BROKEN and result.status is Status.FAILED:
            return  # a failed check whose cleanup also broke is still a non-conformance
        if status.rank > result.status.rank:
            result.status = status
            result.message = _message(report)
            failed_on = cast(dict[str, Any], props.get("meshconf.failed_on") or {})
            result.expectation = failed_on.get("expectation")
            result.precondition = bool(failed_on.get("precondition"))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        shared = shared_dir(self.config)
        mesh_info = session_mesh(self.config)
        results = [r for r in self.results.values() if r.nodeid in self.finished]
        stopped = sorted(r.id for r in self.results.values() if r.nodeid not in self.finished)
        error = mesh_info.get("error") or lost_reason(self.config)
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            error = (f"interrupted: {len(results)} check(s) finished"
                     + (f", stopped while running: {', '.join(stopped)}" if stopped else "")
                     + (f"; {error}" if error else ""))
        written = True
        try:
            if (results or error) and not self.config.option.collectonly:
                written = self._write_reports(mesh_info, results, error)
        finally:
            managed = mesh_info.get("owner") is not None or self.config.getoption("--mesh-attach")
            if mesh_info.get("run_dir") and not self.run_config.keep and not managed:
                release_provider(self.run_config, load_topology(self.run_config.topology), Path(mesh_info["run_dir"]))
            if self.owns_shared:
                shutil.rmtree(shared, ignore_errors=True)
        if results and exitstatus in (0, 1):
            statuses = {r.status for r in results}
            session.exitstatus = (EXIT_NON_CONFORMANT if Status.FAILED in statuses
                                  else EXIT_ENVIRONMENT if Status.BROKEN in statuses else EXIT_OK)
        if not written and session.exitstatus != pytest.ExitCode.INTERRUPTED:
            session.exitstatus = EXIT_ENVIRONMENT  # no report is no verdict

    def _write_reports(self, mesh_info: dict[str, Any], results: list[CheckResult], error: str | None) -> bool:
        """Write the run's reports; on an OSError (a full disk) say so in one line and return False."""
        run = run_metadata(self.run_config, mesh_info.get("description"), self.started, error)
        out = self.run_config.out
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        try:
            write_reports(out, run, results)
            alluredir = self.config.getoption("allure_report_dir", None)
            if alluredir:
                write_run_files(Path(alluredir), run)
            # the last word on secrets: whatever was attached or dumped during the run is scrubbed
            redact_tree([out / name for name in (*OUT_DIRS, *OUT_FILES) if (out / name).exists()])
        except OSError as exc:
            line = f"meshconf: error: the reports could not be written in {out}/: {exc.strerror or exc}"
            if reporter is not None:
                reporter.write_line(line)
            else:
                print(line, file=sys.stderr)
            return False
        if reporter is not None:
            reporter.write_line(f"meshconf: reports in {out}/ (conformance-report.json, .md)")
        return True


def _message(report: pytest.TestReport) -> str | None:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        text = crash.message if crash is not None else str(report.longrepr)
        return text.removeprefix("conformance.expect.Nonconformance: ")[:4000]
    return None
