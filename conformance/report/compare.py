"""``meshconf compare``: a matrix of many runs' conformance reports, for version qualification.

Rows are check ids (by area), columns are runs. A column is labelled with the run metadata that tells it
apart from the others (provider, topology, mesh version, proxy version; the start time only when those are
the same); what every run shares is printed once above the table. A cell is the check's status and, when the
check measured something against a budget, its key measurement: the one the check lists first among those
with a budget, the same for every run of that row, so a column can be read against the next. Another
measurement over its budget in that run is flagged beside it.

It is a report, not a gate: ``meshconf gate`` decides regressions between two runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.report.gate import ABSENT as ABSENT_CHECK
from conformance.report.model import CheckResult, Measurement, Report, Status

__all__ = ["Matrix", "build_matrix", "load_reports", "render_markdown", "render_text"]

LABEL_FIELDS = ("provider", "topology", "meshVersion", "proxyVersion")
ABSENT = "-"


@dataclass(frozen=True)
class Run:
    path: Path
    run: Mapping[str, Any]
    checks: Mapping[str, CheckResult]
    summary: str


@dataclass(frozen=True)
class Matrix:
    common: str
    """The metadata every run shares, e.g. ``provider kind · topology multi-network``."""
    labels: list[str]
    """One per run (column), in the order given."""
    legend: list[str]
    """One line per run: its label, start time and file."""
    rows: list[tuple[str, list[str]]]
    """(check id, one cell per run)."""
    measured: list[tuple[str, str]]
    """(check id, the name of the measurement its cells show)."""
    summaries: list[str]


def load_reports(paths: Sequence[Path]) -> list[tuple[Path, Report]]:
    """Read every report: UsageError naming the first file that is missing or invalid (not JSON, not
    schemaVersion 1: reports of different schema versions are never mixed)."""
    return [(path, Report.load(path)) for path in paths]


def build_matrix(reports: Sequence[tuple[Path, Report]]) -> Matrix:
    runs = [_run(path, report) for path, report in reports]
    varying = [f for f in LABEL_FIELDS if len({_field(r.run, f) for r in runs}) > 1]
    common = " · ".join(f"{_NAMES[f]} {_field(runs[0].run, f)}" for f in LABEL_FIELDS if f not in varying)
    labels = [" · ".join(_label_part(f, _field(r.run, f)) for f in varying) for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{label} · {_field(r.run, 'started')}".lstrip(" ·") for label, r in zip(labels, runs, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{n}".lstrip() for n, label in enumerate(labels, start=1)]
    legend = [f"{label}: " + ("" if _field(r.run, "started") in label else f"started {_field(r.run, 'started')}, ")
              + str(r.path) for label, r in zip(labels, runs, strict=True)]

    areas: dict[str, str] = {}
    for r in runs:
        for check_id, check in r.checks.items():
            areas.setdefault(check_id, check.area)
    rows, measured = [], []
    for check_id in sorted(areas, key=lambda c: (areas[c], c)):
        key = _key_measurement(check_id, runs)
        rows.append((check_id, [_cell(r.checks.get(check_id), key) for r in runs]))
        if key is not None:
            measured.append((check_id, key))
    return Matrix(common, labels, legend, rows, measured, [r.summary for r in runs])


def render_text(matrix: Matrix) -> str:
    header = ["check", *matrix.labels]
    body = [[check, *cells] for check, cells in matrix.rows] + [["summary", *matrix.summaries]]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [f"compare: {len(matrix.labels)} runs" + (f"; all {matrix.common}" if matrix.common else "")]
    lines += [f"  {line}" for line in matrix.legend] + [""]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
              for row in [header, *body]]
    if matrix.measured:
        lines += ["", "measurements shown:"] + [f"  {check}: {name}" for check, name in matrix.measured]
    return "\n".join(lines) + "\n"


def render_markdown(matrix: Matrix) -> str:
    lines = [f"**{len(matrix.labels)} runs**" + (f" (all {matrix.common})" if matrix.common else "") + ":", ""]
    lines += [f"- {line}" for line in matrix.legend] + [""]
    lines.append("| check | " + " | ".join(_md(label) for label in matrix.labels) + " |")
    lines.append("|---|" + "---|" * len(matrix.labels))
    for check, cells in matrix.rows:
        lines.append(f"| `{check}` | " + " | ".join(_icon(c) + _md(c) for c in cells) + " |")
    lines.append("| **summary** | " + " | ".join(matrix.summaries) + " |")
    if matrix.measured:
        lines += ["", "Measurements shown: " + "; ".join(f"`{check}`: {name}" for check, name in matrix.measured) + "."]
    return "\n".join(lines) + "\n"


_NAMES = {"provider": "provider", "topology": "topology", "meshVersion": "mesh", "proxyVersion": "proxy"}


def _icon(cell: str) -> str:
    status = cell.split(" ")[0]
    return f"{Status(status).icon} " if status in tuple(Status) else ""


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _label_part(field: str, value: str) -> str:
    return f"mesh {value}" if field == "meshVersion" else value


def _field(run: Mapping[str, Any], name: str) -> str:
    value = run.get(name)
    return ABSENT if value in (None, "") else str(value)


def _run(path: Path, report: Report) -> Run:
    checks = report.by_id()
    statuses = [c.status for c in checks.values()]
    counts = [f"{statuses.count(s)} {s}" for s in Status if s in statuses]
    summary = f"{', '.join(counts)} of {len(statuses)}" if statuses else "no checks"
    return Run(path, report.run, checks, summary)


def _budgeted(check: CheckResult | None) -> list[Measurement]:
    return [m for m in check.measurements if m.budget is not None] if check is not None else []


def _key_measurement(check_id: str, runs: Sequence[Run]) -> str | None:
    for r in runs:
        budgeted = _budgeted(r.checks.get(check_id))
        if budgeted:
            return budgeted[0].name
    return None


def _cell(check: CheckResult | None, key: str | None) -> str:
    if check is None:
        return ABSENT_CHECK
    text = str(check.status)
    budgeted = _budgeted(check)
    shown = next((m for m in budgeted if m.name == key), None)
    if shown is not None:
        text += f" {shown.text()}"
    others_over = sum(1 for m in budgeted if m is not shown and m.within_budget is False)
    if others_over:
        text += f" (+{others_over} over budget)"
    return text
