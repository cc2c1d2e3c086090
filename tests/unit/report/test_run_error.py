"""A run that did not complete says why (``run.error``), and its report is written whole or not at all."""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path

import pytest

from conformance.providers import build_config
from conformance.report.conformance import (
    CheckResult,
    not_run,
    read_report,
    record_run_error,
    run_metadata,
    write_reports,
)

CHECKS = [{"id": "mtls-strict-rejects-plaintext", "area": "mtls", "description": "d", "severity": "critical",
           "nodeid": "suites/mtls/test_mtls_strict_rejects_plaintext.py::test_mtls_strict_rejects_plaintext"}]


def test_checks_that_could_not_run_are_broken_with_the_reason(tmp_path: Path) -> None:
    run = run_metadata(build_config(), None, time.time(), "the mesh did not come up: boom")
    write_reports(tmp_path, run, not_run(CHECKS, "the mesh did not come up: boom"))
    report = json.loads((tmp_path / "conformance-report.json").read_text())
    assert report["run"]["error"] == "the mesh did not come up: boom"
    assert report["run"]["provider"] == "local" and "implementation" not in report["run"]
    assert report["summary"] == {"total": 1, "passed": 0, "failed": 0, "broken": 1, "skipped": 0}
    assert report["checks"][0]["status"] == "broken"
    assert report["checks"][0]["message"] == "not run: the mesh did not come up: boom"
    markdown = (tmp_path / "conformance-report.md").read_text()
    assert "**The run did not complete:** the mesh did not come up: boom" in markdown
    assert "mesh not known (it never came up)" in markdown


def test_recording_an_error_keeps_the_checks_that_finished(tmp_path: Path) -> None:
    passed = CheckResult("authz-allow-principal", "authz", "d", "passed", 3.2, "n")
    write_reports(tmp_path, {"provider": "local", "implementation": "x"}, [passed])
    record_run_error(tmp_path, {"provider": "ignored"}, "interrupted by SIGTERM: 1 check(s) finished")
    report = read_report(tmp_path)
    assert report is not None
    assert report.run == {"provider": "local", "implementation": "x",
                          "error": "interrupted by SIGTERM: 1 check(s) finished"}
    assert [(c.id, c.status, c.duration_s) for c in report.checks] == [("authz-allow-principal", "passed", 3.2)]


def test_recording_an_error_without_a_report_writes_one(tmp_path: Path) -> None:
    record_run_error(tmp_path, {"provider": "local"}, "interrupted by SIGINT before any check finished")
    report = json.loads((tmp_path / "conformance-report.json").read_text())
    assert report["checks"] == [] and report["run"]["error"].startswith("interrupted by SIGINT")


def test_a_full_disk_leaves_the_previous_report_and_no_partial_file(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    write_reports(tmp_path, {"provider": "local"}, [])
    before = (tmp_path / "conformance-report.json").read_text()
    original = Path.write_text

    def full(self: Path, *args: object, **kwargs: object) -> int:
        if self.name.endswith(".partial"):
            original(self, "{\"schemaVer")  # some bytes made it before the disk filled up
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left on device"):
        write_reports(tmp_path, {"provider": "local", "error": "x"}, [])
    assert (tmp_path / "conformance-report.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conformance-report.json", "conformance-report.md"]
