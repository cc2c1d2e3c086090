"""Writing conformance-report.json (schemaVersion 1) and conformance-report.md.

The report's classes (``Report``, ``CheckResult``, ``Measurement``, ``Status``) are in ``model.py``, which
also reads reports back; this module makes a run's report and writes both files. The JSON is the
machine-readable verdict of a run: what was tested (provider, topology, implementation and versions), when
and for how long, summary counts, and per check its id, area, status, duration, every
measurement beside its budget, and a one-paragraph message when it did not pass. ``meshconf compare`` and
the upgrade gate read it; its shape only changes with a new schemaVersion.

Statuses: ``passed``; ``failed`` (the mesh does not conform); ``broken`` (the environment failed, no
verdict); ``skipped`` (with the reason, e.g. a feature the provider lacks). A failed check also says what it
failed on (``failedOn``): the ``expect_*`` that decided it, and whether that was a precondition (the state the
check starts from) rather than the property it is named for.

A run that did not complete says why in ``run.error`` (its preflight failed, the mesh did not come up, the
environment was lost, or it was interrupted by a signal): the checks it lists are then those that finished,
or, when none could run, every selected check as *broken* with that reason. Both files are written whole
(a temporary file renamed into place), so a run killed while writing leaves no half report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conformance.errors import UsageError
from conformance.report.model import SCHEMA_VERSION, CheckResult, Measurement, Report, Status

if TYPE_CHECKING:
    from conformance.config import RunConfig

__all__ = ["SCHEMA_VERSION", "CheckResult", "Measurement", "Report", "Status", "markdown", "not_run", "read_report",
           "record_run_error", "run_metadata", "write_reports"]


def markdown(report: Report) -> str:
    """conformance-report.md: the run in a few lines, a table of every check, then why checks did not pass."""
    run = report.run
    summary = report.summary()
    lines = [
        f"# meshconf conformance report: {run.get('implementation') or 'mesh not known (it never came up)'}",
        "",
        f"Provider `{run.get('provider')}`, topology `{run.get('topology')}`, mesh "
        f"{run.get('meshVersion') or 'unknown'}, proxy {run.get('proxyVersion') or 'unknown'}; started "
        f"{run.get('started')}, {run.get('durationSeconds')} s.",
        "",
        "**" + ", ".join(f"{summary[s]} {s}" for s in Status) + f"** of {summary['total']} checks.",
        "",
    ]
    if run.get("error"):
        lines += [f"**The run did not complete:** {run['error']}", ""]
    lines += [
        "| check | area | status | duration | measurements |",
        "|---|---|---|---|---|",
    ]
    for check in sorted(report.checks, key=lambda c: (c.area, c.id)):
        measured = "; ".join(f"{m.name} {m.text()}" for m in check.measurements)
        lines.append(f"| `{check.id}` | {check.area} | {check.status.icon} {check.status} | "
                     f"{check.duration_s:.1f} s | {measured} |")
    problems = [c for c in report.checks if c.status in (Status.FAILED, Status.BROKEN) and c.message]
    if problems:
        lines += ["", "## Why checks did not pass", ""]
        for check in problems:
            first = check.message.strip().splitlines()[0] if check.message else ""
            lines.append(f"- `{check.id}` ({check.status_detail}): {first[:300]}")
    skipped = [c for c in report.checks if c.status is Status.SKIPPED and c.message]
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- `{c.id}`: {c.message}" for c in skipped]
    return "\n".join(lines) + "\n"


def write_reports(out: Path, run: Mapping[str, Any], checks: Sequence[CheckResult]) -> Report:
    """Write conformance-report.json and conformance-report.md into ``out`` (each whole, or not at all).

    Raises OSError when ``out`` cannot take them (e.g. the disk is full).
    """
    report = Report(dict(run), list(checks))
    out.mkdir(parents=True, exist_ok=True)
    _write_whole(out / "conformance-report.json", report.to_json())
    _write_whole(out / "conformance-report.md", markdown(report))
    return report


def _write_whole(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def run_metadata(config: RunConfig, description: Mapping[str, Any] | None, started: float,
                 error: str | None = None) -> dict[str, Any]:
    """The report's ``run``: what was tested (``description``: the provider's, when it got that far), when,
    for how long, the settings it was held to, and why it did not complete (``error``), if it did not."""
    import datetime as dt
    import time

    from conformance import __version__

    begun = dt.datetime.fromtimestamp(started, dt.UTC)
    settings = config.as_dict()
    run = {
        **(description or {"provider": config.provider, "topology": config.topology}),
        "meshconfVersion": __version__,
        "defects": list(getattr(config.settings, "defects", ())),  # the local mesh's (a run's key fact)
        "started": begun.isoformat(timespec="seconds"),
        "durationSeconds": round(time.time() - started, 1),
        "runId": begun.strftime("%Y%m%dT%H%M%SZ"),
        "budgets": settings["budgets"],
        "timeouts": settings["timeouts"],
        "load": settings["load"],
    }
    if error:
        run["error"] = error
    return run


def not_run(checks: Sequence[Mapping[str, Any]], reason: str) -> list[CheckResult]:
    """Every selected check (``CheckInfo.as_dict()`` plus ``nodeid``) as broken with ``reason``: the run
    stopped before any of them could start."""
    return [CheckResult(id=str(c["id"]), area=str(c["area"]), description=str(c.get("description", "")),
                        status=Status.BROKEN, duration_s=0.0, nodeid=str(c.get("nodeid", c["id"])),
                        severity=str(c.get("severity", "critical")), message=f"not run: {reason}")
            for c in checks]


def read_report(out: Path) -> Report | None:
    """The report a run wrote in ``out``, or None if there is none (or it cannot be read)."""
    try:
        return Report.load(out / "conformance-report.json")
    except UsageError:
        return None


def record_run_error(out: Path, run: Mapping[str, Any], error: str) -> Report:
    """Say in ``out``'s report why the run did not complete, keeping the checks it has; write one (with no
    checks, and ``run`` as its metadata) if the run wrote none."""
    report = read_report(out) or Report(dict(run), [])
    report.run["error"] = error
    return write_reports(out, report.run, report.checks)
