"""conformance-report.json (schemaVersion 1) and conformance-report.md.

The JSON is the machine-readable verdict of a run: what was tested (provider, topology, implementation and
versions), when and for how long, summary counts, and per check its id, area, status, duration, every
measurement beside its budget, and a one-paragraph message when it did not pass. ``meshconf compare`` and
the upgrade gate read it; its shape only changes with a new schemaVersion.

Statuses: ``passed``; ``failed`` (the mesh does not conform); ``broken`` (the environment failed, no
verdict); ``skipped`` (with the reason, e.g. a feature the provider lacks). A failed check also says what it
failed on (``failedOn``): the ``expect_*`` that decided it, and whether that was a precondition (the state the
check starts from) rather than the property it is named for.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_VERSION", "CheckResult", "Measurement", "RunReport", "write_reports"]

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
            f"# meshconf conformance report: {run.get('implementation', '?')}",
            "",
            f"Provider `{run.get('provider')}`, topology `{run.get('topology')}`, mesh {run.get('meshVersion')}, "
            f"proxy {run.get('proxyVersion')}; started {run.get('started')}, {run.get('durationSeconds')} s.",
            "",
            f"**{summary['passed']} passed, {summary['failed']} failed, {summary['broken']} broken, "
            f"{summary['skipped']} skipped** of {summary['total']} checks.",
            "",
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
    """Write conformance-report.json and conformance-report.md into ``out``."""
    report = RunReport(dict(run), list(checks))
    out.mkdir(parents=True, exist_ok=True)
    (out / "conformance-report.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    (out / "conformance-report.md").write_text(report.markdown())
    return report


def measurement_from_dict(data: Mapping[str, Any]) -> Measurement:
    return Measurement(str(data["name"]), float(data["value"]), str(data["unit"]),
                       None if data.get("budget") is None else float(data["budget"]),
                       str(data.get("comparison", "<=")))

