"""The upgrade gate: compare two conformance reports (schemaVersion 1) and name every regression.

A regression is a check that passed before and does not pass after (failed, broken, skipped or gone), or a
measurement that was within its budget before and is over it after. Anything else that changed is listed
but does not fail the gate. ``meshconf gate`` exits 1 when there is any regression.
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance.report.model import Report, Status

__all__ = ["ABSENT", "GateRow", "compare_reports", "render_gate"]

ABSENT = "absent"
"""A check's status in a run that does not list it."""


@dataclass(frozen=True)
class GateRow:
    check: str
    what: str
    """``status`` or a measurement's name."""
    before: str
    after: str
    regression: bool


def compare_reports(before: Report, after: Report) -> list[GateRow]:
    """Every check status and budgeted measurement that changed, regressions first."""
    rows: list[GateRow] = []
    old, new = before.by_id(), after.by_id()
    for check_id in sorted(set(old) | set(new)):
        was = str(old[check_id].status) if check_id in old else ABSENT
        now = str(new[check_id].status) if check_id in new else ABSENT
        if was != now:
            rows.append(GateRow(check_id, "status", was, now, regression=was == Status.PASSED))
        if check_id not in old or check_id not in new:
            continue
        old_m = {m.name: m for m in old[check_id].measurements}
        new_m = {m.name: m for m in new[check_id].measurements}
        for name in sorted(set(old_m) & set(new_m)):
            within_before, within_after = old_m[name].within_budget, new_m[name].within_budget
            if within_before is True and within_after is False:
                rows.append(GateRow(check_id, name, old_m[name].text(), new_m[name].text(), True))
            elif within_before is False and within_after is True:
                rows.append(GateRow(check_id, name, old_m[name].text(), new_m[name].text(), False))
    return sorted(rows, key=lambda r: (not r.regression, r.check, r.what))


def render_gate(before: Report, after: Report, rows: list[GateRow]) -> str:
    def label(report: Report) -> str:
        run = report.run
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
                 f"{len(after.checks)} checks after")
    return "\n".join(lines) + "\n"
