"""conformance-report.json (schemaVersion 1) and conformance-report.md.

The JSON is the machine-readable verdict of a run: what was tested (provider, topology, implementation and
versions), when and for how long, summary counts, and per check its id, area, status, duration, every
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

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conformance.config import RunConfig

__all__ = ["SCHEMA_VERSION", "CheckResult", "Measurement", "RunReport", "not_run", "read_report", "record_run_error",
           "run_metadata", "write_reports"]

SCHEMA_VERSION = 1
STATUSES = ("passed", "failed", "broken", "skipped")


@dataclass(frozen=True)
class Measurement:
    name: str
    value: float
    unit: str
    budget: float | None = None
    comparison: str = "<="
    """How value relates to budget when within it: ``<=`` (a ceiling) or ``>=`` (a floor)."""

    @property
    def within_budget(self) -> bool | None:
        if self.budget is None:
            return None
        return self.value <= self.budget if self.comparison == "<=" else self.value >= self.budget

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit, "budget": self.budget,
                "comparison": self.comparison, "withinBudget": self.within_budget}


@dataclass
class CheckResult:
    id: str
    area: str
    description: str
    status: str
    duration_s: float
    nodeid: str
    severity: str = "critical"
    message: str | None = None
    measurements: list[Measurement] = field(default_factory=list)
    expectation: str | None = None
    """For a failed check: the ``expect_*`` that decided it."""
    precondition: bool = False
    """For a failed check: it failed while establishing its starting state, not on its own property."""

    def as_dict(self) -> dict[str, Any]:
        data = {
            "id": self.id, "area": self.area, "description": self.description, "status": self.status,
            "severity": self.severity, "durationSeconds": round(self.duration_s, 3), "nodeid": self.nodeid,
            "measurements": [m.as_dict() for m in self.measurements], "message": self.message,
        }
        if self.status == "failed":
            data["failedOn"] = {"expectation": self.expectation, "precondition": self.precondition}
        return data


@dataclass
class RunReport:
    run: dict[str, Any]
    checks: list[CheckResult]

    def summary(self) -> dict[str, int]:
        counts = Counter(c.status for c in self.checks)
        return {"total": len(self.checks), **{status: counts.get(status, 0) for status in STATUSES}}

    def as_dict(self) -> dict[str, Any]:
        return {
            "schemaVersion": SCHEMA_VERSION,
            "run": self.run,
            "summary": self.summary(),
            "checks": [c.as_dict() for c in sorted(self.checks, key=lambda c: (c.area, c.id, c.nodeid))],
        }

    def markdown(self) -> str:
        run = self.run
        summary = self.summary()
        lines = [
            f"# meshconf conformance report: {run.get('implementation') or 'mesh not known (it never came up)'}",
            "",
            f"Provider `{run.get('provider')}`, topology `{run.get('topology')}`, mesh "
            f"{run.get('meshVersion') or 'unknown'}, proxy {run.get('proxyVersion') or 'unknown'}; started "
            f"{run.get('started')}, {run.get('durationSeconds')} s.",
            "",
            f"**{summary['passed']} passed, {summary['failed']} failed, {summary['broken']} broken, "
            f"{summary['skipped']} skipped** of {summary['total']} checks.",
            "",
        ]
        if run.get("error"):
            lines += [f"**The run did not complete:** {run['error']}", ""]
        lines += [
            "| check | area | status | duration | measurements |",
            "|---|---|---|---|---|",
        ]
        icon = {"passed": "✅ passed", "failed": "❌ failed", "broken": "⚠️ broken", "skipped": "⏭️ skipped"}
        for check in sorted(self.checks, key=lambda c: (c.area, c.id)):
            measured = "; ".join(_measurement_text(m) for m in check.measurements) or ""
            lines.append(f"| `{check.id}` | {check.area} | {icon.get(check.status, check.status)} | "
                         f"{check.duration_s:.1f} s | {measured} |")
        problems = [c for c in self.checks if c.status in ("failed", "broken") and c.message]
        if problems:
            lines += ["", "## Why checks did not pass", ""]
            for check in problems:
                first = check.message.strip().splitlines()[0] if check.message else ""
                lines.append(f"- `{check.id}` ({_status_detail(check)}): {first[:300]}")
        skipped = [c for c in self.checks if c.status == "skipped" and c.message]
        if skipped:
            lines += ["", "## Skipped", ""]
            lines += [f"- `{c.id}`: {c.message}" for c in skipped]
        return "\n".join(lines) + "\n"


def _status_detail(check: CheckResult) -> str:
    if check.status != "failed" or not check.expectation:
        return check.status
    return f"failed on {'precondition ' if check.precondition else ''}`{check.expectation}`"


def _measurement_text(m: Measurement) -> str:
    budget = f" (budget {m.comparison} {m.budget:g} {m.unit})" if m.budget is not None else ""
    flag = "" if m.within_budget in (None, True) else " ⚠️"
    return f"{m.name} {m.value:g} {m.unit}{budget}{flag}"


def write_reports(out: Path, run: Mapping[str, Any], checks: Sequence[CheckResult]) -> RunReport:
    """Write conformance-report.json and conformance-report.md into ``out`` (each whole, or not at all).

    Raises OSError when ``out`` cannot take them (e.g. the disk is full).
    """
    report = RunReport(dict(run), list(checks))
    out.mkdir(parents=True, exist_ok=True)
    _write_whole(out / "conformance-report.json", json.dumps(report.as_dict(), indent=2) + "\n")
    _write_whole(out / "conformance-report.md", report.markdown())
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
        "defects": list(config.defects),
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
                        status="broken", duration_s=0.0, nodeid=str(c.get("nodeid", c["id"])),
                        severity=str(c.get("severity", "critical")), message=f"not run: {reason}")
            for c in checks]


def read_report(out: Path) -> RunReport | None:
    """The report a run wrote in ``out``, or None if there is none (or it cannot be read)."""
    try:
        data = json.loads((out / "conformance-report.json").read_text())
    except (OSError, ValueError):
        return None
    checks = [CheckResult(
        id=c["id"], area=c["area"], description=c.get("description", ""), status=c["status"],
        duration_s=float(c.get("durationSeconds", 0.0)), nodeid=c.get("nodeid", c["id"]),
        severity=c.get("severity", "critical"), message=c.get("message"),
        measurements=[measurement_from_dict(m) for m in c.get("measurements", [])],
        expectation=(c.get("failedOn") or {}).get("expectation"),
        precondition=bool((c.get("failedOn") or {}).get("precondition")),
    ) for c in data.get("checks", [])]
    return RunReport(dict(data.get("run", {})), checks)


def record_run_error(out: Path, run: Mapping[str, Any], error: str) -> RunReport:
    """Say in ``out``'s report why the run did not complete, keeping the checks it has; write one (with no
    checks, and ``run`` as its metadata) if the run wrote none."""
    report = read_report(out) or RunReport(dict(run), [])
    report.run["error"] = error
    return write_reports(out, report.run, report.checks)


def measurement_from_dict(data: Mapping[str, Any]) -> Measurement:
    return Measurement(str(data["name"]), float(data["value"]), str(data["unit"]),
                       None if data.get("budget") is None else float(data["budget"]),
                       str(data.get("comparison", "<=")))

