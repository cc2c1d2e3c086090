"""The conformance report's model: one set of classes writes ``conformance-report.json`` and reads it back.

``Report`` (run metadata + checks) -> ``CheckResult`` (id, area, :class:`Status`, duration, message, what a
failed check failed on) -> ``Measurement`` (a value beside its budget). ``Report.as_dict`` is the JSON the
run writes (schemaVersion 1); ``Report.from_dict`` / ``Report.load`` read it back, refusing with one line what
is not a report of that version. ``meshconf gate``, ``meshconf compare``, the Markdown report and the upgrade
gate all read reports through here, and :meth:`Measurement.text` is the one way a measurement is printed.

Statuses: ``passed``; ``failed`` (the mesh does not conform); ``broken`` (the environment failed, no
verdict); ``skipped`` (with the reason, e.g. a feature the provider lacks).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from conformance.errors import UsageError

__all__ = ["SCHEMA_VERSION", "CheckResult", "Measurement", "Report", "Status", "format_number"]

SCHEMA_VERSION = 1


class Status(StrEnum):
    """A check's outcome, as the report and Allure name it."""

    PASSED = "passed"
    FAILED = "failed"
    """The mesh does not conform: an ``expect_*`` decided it."""
    BROKEN = "broken"
    """The environment failed: no verdict."""
    SKIPPED = "skipped"
    """It could not run here, and says why (a feature the provider lacks)."""

    @property
    def rank(self) -> int:
        """Which outcome wins when a check reports several (setup, call, teardown): broken > failed > skipped >
        passed."""
        return _RANK[self]

    @property
    def icon(self) -> str:
        """The emoji the Markdown tables put before a status."""
        return _ICONS[self]


_RANK = {Status.PASSED: 0, Status.SKIPPED: 1, Status.FAILED: 2, Status.BROKEN: 3}
_ICONS = {Status.PASSED: "✅", Status.FAILED: "❌", Status.BROKEN: "⚠️", Status.SKIPPED: "⏭️"}


def format_number(value: float) -> str:
    """A measured number as reports print it: whole numbers (and anything from 1000 up) without decimals,
    otherwise four significant digits (``0.6132``, ``12.5``, ``199.5``)."""
    if abs(value) >= 1000 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.4g}"


@dataclass(frozen=True)
class Measurement:
    name: str
    value: float
    unit: str
    budget: float | None = None
    comparison: str = "<="
    """How value relates to budget when within it: ``<=`` (a ceiling) or ``>=`` (a floor)."""

    def __post_init__(self) -> None:
        if self.comparison not in ("<=", ">="):
            raise ValueError(f"measurement {self.name!r}: comparison must be <= or >=, not {self.comparison!r}")

    @property
    def within_budget(self) -> bool | None:
        if self.budget is None:
            return None
        return self.value <= self.budget if self.comparison == "<=" else self.value >= self.budget

    def text(self) -> str:
        """``12 ms (budget <= 10) OVER``: the value, its budget when it has one, and OVER when outside it."""
        shown = f"{format_number(self.value)} {self.unit}".rstrip()
        if self.budget is not None:
            shown += f" (budget {self.comparison} {format_number(self.budget)})"
        return shown + (" OVER" if self.within_budget is False else "")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit, "budget": self.budget,
                "comparison": self.comparison, "withinBudget": self.within_budget}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """Raises ValueError/TypeError/KeyError for a measurement that is not one (Report.from_dict says where)."""
        value, budget = data["value"], data.get("budget")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"value {value!r} is not a number")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int | float)):
            raise TypeError(f"budget {budget!r} is not a number")
        return cls(str(data["name"]), float(value), str(data.get("unit", "")),
                   None if budget is None else float(budget), str(data.get("comparison", "<=")))


@dataclass
class CheckResult:
    id: str
    area: str
    description: str
    status: Status
    duration_s: float
    nodeid: str
    severity: str = "critical"
    message: str | None = None
    measurements: list[Measurement] = field(default_factory=list)
    expectation: str | None = None
    """For a failed check: the ``expect_*`` that decided it."""
    precondition: bool = False
    """For a failed check: it failed while establishing its starting state, not on its own property."""

    def __post_init__(self) -> None:
        self.status = Status(self.status)  # a plain string from a caller or a file: ValueError if it is none

    @property
    def status_detail(self) -> str:
        """``failed on precondition `expect_all_ok``` for a failed check that says what decided it; else the status."""
        if self.status is not Status.FAILED or not self.expectation:
            return str(self.status)
        return f"failed on {'precondition ' if self.precondition else ''}`{self.expectation}`"

    def as_dict(self) -> dict[str, Any]:
        data = {
            "id": self.id, "area": self.area, "description": self.description, "status": str(self.status),
            "severity": self.severity, "durationSeconds": round(self.duration_s, 3), "nodeid": self.nodeid,
            "measurements": [m.as_dict() for m in self.measurements], "message": self.message,
        }
        if self.status is Status.FAILED:
            data["failedOn"] = {"expectation": self.expectation, "precondition": self.precondition}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        failed_on = data.get("failedOn") or {}
        return cls(
            id=str(data["id"]), area=str(data.get("area", "")), description=str(data.get("description") or ""),
            status=Status(data["status"]), duration_s=float(data.get("durationSeconds", 0.0)),
            nodeid=str(data.get("nodeid", data["id"])), severity=str(data.get("severity", "critical")),
            message=data.get("message"),
            measurements=[Measurement.from_dict(m) for m in data.get("measurements") or []],
            expectation=failed_on.get("expectation"), precondition=bool(failed_on.get("precondition")),
        )


@dataclass
class Report:
    """One run's verdict: ``run`` (what was tested, when, the settings, ``error`` if it did not complete) and
    every check that finished."""

    run: dict[str, Any]
    checks: list[CheckResult]

    def summary(self) -> dict[str, int]:
        counts = Counter(c.status for c in self.checks)
        return {"total": len(self.checks), **{str(s): counts.get(s, 0) for s in Status}}

    def by_id(self) -> dict[str, CheckResult]:
        """Checks by id (a parametrized check's last result when several share one)."""
        return {c.id: c for c in self.checks}

    def as_dict(self) -> dict[str, Any]:
        return {
            "schemaVersion": SCHEMA_VERSION,
            "run": self.run,
            "summary": self.summary(),
            "checks": [c.as_dict() for c in sorted(self.checks, key=lambda c: (c.area, c.id, c.nodeid))],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "report") -> Report:
        """Raise UsageError naming ``source`` unless ``data`` is a conformance report of schemaVersion 1."""
        if not isinstance(data, dict) or data.get("schemaVersion") != SCHEMA_VERSION \
                or not isinstance(data.get("checks"), list):
            raise UsageError(f"{source} is not a conformance-report.json of schemaVersion {SCHEMA_VERSION}")
        checks = []
        for n, check in enumerate(data["checks"]):
            if not (isinstance(check, dict) and isinstance(check.get("id"), str)
                    and isinstance(check.get("status"), str)):
                raise UsageError(f"{source}: checks[{n}] has no id or status (not a conformance report of "
                                 f"schemaVersion {SCHEMA_VERSION})")
            if check["status"] not in tuple(Status):
                raise UsageError(f"{source}: checks[{n}] ({check['id']}) has status {check['status']!r}, not one "
                                 f"of {', '.join(Status)}")
            try:
                checks.append(CheckResult.from_dict(check))
            except (KeyError, TypeError, ValueError) as exc:
                raise UsageError(f"{source}: checks[{n}] ({check['id']}) is not a check result: {exc}") from None
        run = data.get("run")
        return cls(dict(run) if isinstance(run, dict) else {}, checks)

    @classmethod
    def load(cls, path: Path) -> Report:
        """Read a conformance report; UsageError if it is missing, not JSON, or not schemaVersion 1."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"{path} does not exist (it is written by `meshconf run` into its --out directory)") \
                from None
        except OSError as exc:
            raise UsageError(f"{path} cannot be read: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise UsageError(f"{path} is not JSON: {exc}") from None
        return cls.from_dict(data, str(path))

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2) + "\n"
