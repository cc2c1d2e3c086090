"""The upgrade gate: compare two conformance-report.json (schemaVersion 1) and name every regression.

A regression is a check that passed before and does not pass after (failed, broken, skipped or gone), or a
measurement that was within its budget before and is over it after. Anything else that changed is listed
but does not fail the gate. ``meshconf gate`` exits 1 when there is any regression.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.errors import UsageError

__all__ = ["GateRow", "compare_reports", "load_report", "render_gate"]


@dataclass(frozen=True)
class GateRow:
    check: str
    what: str
    """``status`` or a measurement's name."""
    before: str
    after: str
    regression: bool


def load_report(path: Path) -> dict[str, Any]:
    """Read a conformance report; UsageError if it is missing, not JSON, or not schemaVersion 1."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist (it is written by `meshconf run` into its --out directory)") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schemaVersion") != 1 or not isinstance(data.get("checks"), list):
        raise UsageError(f"{path} is not a conformance-report.json of schemaVersion 1")
    for n, check in enumerate(data["checks"]):
        if not (isinstance(check, dict) and isinstance(check.get("id"), str) and isinstance(check.get("status"), str)):
            raise UsageError(f"{path}: checks[{n}] has no id or status (not a conformance report of schemaVersion 1)")
    return data


def _checks(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c["id"]): c for c in report["checks"]}


def _measurement(m: Mapping[str, Any]) -> str:
    budget = f" (budget {m.get('comparison', '<=')} {m['budget']:g})" if m.get("budget") is not None else ""
    return f"{m['value']:g} {m.get('unit', '')}{budget}".strip()


def compare_reports(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[GateRow]:
    """Every check status and budgeted measurement that changed, regressions first."""
    rows: list[GateRow] = []
    old, new = _checks(before), _checks(after)
    for check_id in sorted(set(old) | set(new)):
        was = str(old[check_id]["status"]) if check_id in old else "absent"
        now = str(new[check_id]["status"]) if check_id in new else "absent"
        if was != now:
            rows.append(GateRow(check_id, "status", was, now, regression=was == "passed"))
        if check_id not in old or check_id not in new:
            continue
        old_m = {m["name"]: m for m in old[check_id].get("measurements", [])}
        new_m = {m["name"]: m for m in new[check_id].get("measurements", [])}
        for name in sorted(set(old_m) & set(new_m)):
            within_before, within_after = old_m[name].get("withinBudget"), new_m[name].get("withinBudget")
            if within_before is True and within_after is False:
                rows.append(GateRow(check_id, name, _measurement(old_m[name]), _measurement(new_m[name]), True))
            elif within_before is False and within_after is True:
                rows.append(GateRow(check_id, name, _measurement(old_m[name]), _measurement(new_m[name]), False))
    return sorted(rows, key=lambda r: (not r.regression, r.check, r.what))


def render_gate(before: Mapping[str, Any], after: Mapping[str, Any], rows: list[GateRow]) -> str:
    def label(report: Mapping[str, Any]) -> str:
        run = report.get("run", {})
        return f"{run.get('provider', '?')} {run.get('topology', '?')} {run.get('meshVersion', '?')}"

    regressions = [r for r in rows if r.regression]
    lines = [f"gate: before = {label(before)}, after = {label(after)}"]
    if rows:
        widths = [max(len(h), *(len(getattr(r, f)) for r in rows))
                  for h, f in (("check", "check"), ("what", "what"), ("before", "before"), ("after", "after"))]
        header = ("check", "what", "before", "after", "verdict")
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, [*widths, 10], strict=True)).rstrip())
        for row in rows:
            cells = (row.check, row.what, row.before, row.after, "REGRESSION" if row.regression else "changed")
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, [*widths, 10], strict=True)).rstrip())
    lines.append(f"{len(regressions)} regression(s); {len(rows) - len(regressions)} other change(s); "
                 f"{len(after['checks'])} checks after")
    return "\n".join(lines) + "\n"
