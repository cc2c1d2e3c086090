"""Judging self-validation runs from their conformance reports, and the result as JSON, Markdown or text.

A claimed check *caught* its defect only when its report says ``failed`` with ``failedOn.precondition`` false
and ``failedOn.expectation`` the one the row names. A defect is caught when every check that claims it
caught it. The clean run passed when every clean run exited 0 with nothing failed or broken, and every
check a row claims passed on that row's topology (a catch by a check that also fails without the defect
proves nothing).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.errors import EXIT_ENVIRONMENT, EXIT_NON_CONFORMANT, EXIT_OK
from conformance.report.model import Status

__all__ = ["CheckVerdict", "CleanVerdict", "DefectVerdict", "SelftestResult", "read_report", "render_markdown",
           "render_text"]

MISSING = "missing"
"""Status of a claimed check its run did not report (the run crashed or selected nothing)."""


def read_report(out: Path) -> dict[str, dict[str, Any]] | None:
    """check id -> its entry in ``out/conformance-report.json``; None when the run wrote no report."""
    try:
        data = json.loads((out / "conformance-report.json").read_text())
    except (OSError, ValueError):
        return None
    return {str(c["id"]): c for c in data.get("checks", [])}


@dataclass(frozen=True)
class CheckVerdict:
    """What one claimed check did against its defect."""

    check: str
    topology: str
    expected: str | None
    """The ``expect_*`` that must decide it (None: any expectation but a precondition)."""
    status: str
    expectation: str | None = None
    precondition: bool = False
    message: str = ""

    @classmethod
    def from_report(cls, check: str, topology: str, expected: str | None,
                    report: Mapping[str, Mapping[str, Any]] | None) -> CheckVerdict:
        entry = (report or {}).get(check)
        if entry is None:
            return cls(check, topology, expected, MISSING)
        failed_on = entry.get("failedOn") or {}
        message = str(entry.get("message") or "").strip().splitlines()
        return cls(check, topology, expected, str(entry["status"]), failed_on.get("expectation"),
                   bool(failed_on.get("precondition")), message[0][:300] if message else "")

    @property
    def caught(self) -> bool:
        return (self.status == Status.FAILED and not self.precondition and self.expectation is not None
                and self.expected in (None, self.expectation))

    def why_not(self) -> str:
        """Why this is no catch, in one line ("" when it is one)."""
        if self.caught:
            return ""
        if self.status == Status.FAILED:
            where = "a precondition, " if self.precondition else ""
            return (f"{self.check} failed on {where}{self.expectation or 'no named expectation'}, not on "
                    f"{self.expected or 'an expectation of its own'}: {self.message}")
        if self.status == MISSING:
            return f"{self.check} did not run (no report entry; see the run's meshconf.log)"
        detail = f": {self.message}" if self.message else ""
        return f"{self.check} {self.status} instead of failing on {self.expected or 'an expectation'}{detail}"


@dataclass(frozen=True)
class DefectVerdict:
    """A defect, every claimed check's verdict (over all its rows), and whether it was caught."""

    name: str
    description: str
    verdicts: tuple[CheckVerdict, ...]

    @property
    def checks(self) -> list[str]:
        return list(dict.fromkeys(v.check for v in self.verdicts))

    @property
    def caught(self) -> bool:
        return bool(self.verdicts) and all(v.caught for v in self.verdicts)

    @property
    def caught_by(self) -> list[dict[str, str]]:
        pairs = dict.fromkeys((v.check, str(v.expectation)) for v in self.verdicts if v.caught)
        return [{"check": check, "expectation": expectation} for check, expectation in pairs]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "checks": self.checks,
                "caught": self.caught, "caughtBy": self.caught_by}


@dataclass(frozen=True)
class CleanVerdict:
    """The clean runs at the shipped settings."""

    passed: bool
    checks: tuple[str, ...]
    """Every check that ran (passed, failed or broken; not skipped) in some clean run."""
    problems: tuple[str, ...] = ()
    """One line per reason it did not pass."""
    broken_only: bool = False
    """Every problem is the environment's (a run broke or wrote no report), none a failed check."""

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": len(self.checks)}


@dataclass(frozen=True)
class SelftestResult:
    """Everything ``meshconf selftest`` found; :meth:`as_dict` is its ``--json`` document."""

    clean: CleanVerdict
    defects: tuple[DefectVerdict, ...]
    catalogue: tuple[str, ...] = field(default=())
    """The checks that could be killed here: those that ran in a clean run (all, if none reported)."""

    @property
    def kill_rate(self) -> float:
        return round(sum(d.caught for d in self.defects) / len(self.defects), 4) if self.defects else 0.0

    @property
    def unkilled_checks(self) -> list[str]:
        killed = {pair["check"] for d in self.defects for pair in d.caught_by}
        return sorted(set(self.catalogue) - killed)

    @property
    def exit_code(self) -> int:
        """0: the clean run passed and every defect was caught; 3: what kept it from that was only the
        environment (a run broke or wrote no report); 1: otherwise (a check failed without a defect, or a
        defect went uncaught on its expectation)."""
        if self.clean.passed and all(d.caught for d in self.defects):
            return EXIT_OK
        verdicts = [v for d in self.defects for v in d.verdicts if not v.caught]
        environment = all(v.status in (Status.BROKEN, MISSING) for v in verdicts)
        environment &= self.clean.passed or self.clean.broken_only
        return EXIT_ENVIRONMENT if environment else EXIT_NON_CONFORMANT

    def as_dict(self) -> dict[str, Any]:
        return {"settings": "shipped", "clean": self.clean.as_dict(),
                "defects": [d.as_dict() for d in self.defects], "killRate": self.kill_rate,
                "unkilledChecks": self.unkilled_checks}


def judge_clean(reports: Sequence[tuple[str, int | None, Mapping[str, Mapping[str, Any]] | None]],
                claimed: Mapping[str, set[str]]) -> CleanVerdict:
    """``reports``: (topology, exit code, report) of each clean run; ``claimed``: topology -> the checks rows
    claim on it."""
    problems: list[str] = []
    broken_only = True
    ran: dict[str, None] = {}
    for topology, code, report in reports:
        if report is None:
            problems.append(f"the clean run on {topology} wrote no report (exit {code}; see its meshconf.log)")
            continue
        for check, entry in sorted(report.items()):
            status = str(entry["status"])
            if status != Status.SKIPPED:
                ran[check] = None
            if status in (Status.FAILED, Status.BROKEN):
                first = str(entry.get("message") or "").strip().splitlines()
                problems.append(f"{check} {status} on {topology} without a defect: {first[0][:300] if first else ''}")
                broken_only &= status == Status.BROKEN
        for check in sorted(claimed.get(topology, set())):
            status = str(report.get(check, {}).get("status", MISSING))
            if status in (Status.SKIPPED, MISSING):
                problems.append(f"{check} {status} on {topology} without a defect: a row claims it catches a "
                                f"defect there, so it must pass there")
                broken_only = False
        if code not in (0, None) and not problems:
            problems.append(f"the clean run on {topology} exited {code}")
    return CleanVerdict(not problems, tuple(ran), tuple(problems), broken_only and bool(problems))


def render_text(result: SelftestResult) -> str:
    """The result for a terminal: the clean run, each defect, the kill rate."""
    lines = [f"clean run at the shipped settings: {Status.PASSED if result.clean.passed else 'FAILED'} "
             f"({len(result.clean.checks)} checks)"]
    lines += [f"  {problem}" for problem in result.clean.problems]
    width = max((len(d.name) for d in result.defects), default=10)
    for defect in result.defects:
        by = ", ".join(f"{p['check']} ({p['expectation']})" for p in defect.caught_by) or "nothing"
        lines.append(f"{defect.name:<{width}}  {'caught' if defect.caught else 'NOT CAUGHT'}  by {by}")
        lines += [f"{'':<{width}}  {v.why_not()}" for v in defect.verdicts if not v.caught]
    caught = sum(d.caught for d in result.defects)
    lines.append(f"kill rate: {caught}/{len(result.defects)} defects caught ({100 * result.kill_rate:.0f}%); "
                 f"checks no defect kills: {', '.join(result.unkilled_checks) or 'none'}")
    return "\n".join(lines) + "\n"


def render_markdown(result: SelftestResult) -> str:
    """The defect x check table (one line per check a defect claims), for the README."""
    caught = sum(d.caught for d in result.defects)
    lines = [
        f"Clean run at the shipped settings: **{Status.PASSED if result.clean.passed else Status.FAILED}** "
        f"({len(result.clean.checks)} checks). Kill rate: **{caught}/{len(result.defects)} defects caught "
        f"({100 * result.kill_rate:.0f}%)**; checks no defect kills: "
        f"{', '.join(f'`{c}`' for c in result.unkilled_checks) or 'none'}.",
        "",
        "| defect | what it breaks | check that must fail | on | caught |",
        "|---|---|---|---|---|",
    ]
    for defect in result.defects:
        for position, verdict in enumerate(defect.verdicts):
            where = "" if verdict.topology == "multi-primary" else f" ({verdict.topology})"
            head = (f"`{defect.name}` | {defect.description}" if position == 0 else " | ")
            mark = "✅" if verdict.caught else f"❌ {verdict.status}"
            decided = f"`{verdict.expected}`" if verdict.expected else f"any (`{verdict.expectation}`)"
            lines.append(f"| {head} | `{verdict.check}`{where} | {decided} | {mark} |")
    return "\n".join(lines) + "\n"
