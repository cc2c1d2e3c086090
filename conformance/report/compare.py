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

from conformance.gate import load_report

__all__ = ["Matrix", "build_matrix", "load_reports", "render_markdown", "render_text"]

LABEL_FIELDS = ("provider", "topology", "meshVersion", "proxyVersion")
ABSENT = "-"


@dataclass(frozen=True)
class Run:
    path: Path
    run: Mapping[str, Any]
    checks: Mapping[str, Mapping[str, Any]]
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


def load_reports(paths: Sequence[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Read every report with the gate's loader: UsageError naming the first file that is missing or invalid
    (not JSON, not schemaVersion 1: reports of different schema versions are never mixed)."""
    return [(path, load_report(path)) for path in paths]


def build_matrix(reports: Sequence[tuple[Path, Mapping[str, Any]]]) -> Matrix:
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
            areas.setdefault(check_id, str(check.get("area", "")))
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
        lines.append(f"| `{check}` | " + " | ".join(_ICONS.get(c.split(" ")[0], "") + _md(c) for c in cells) + " |")
    lines.append("| **summary** | " + " | ".join(matrix.summaries) + " |")
    if matrix.measured:
        lines += ["", "Measurements shown: " + "; ".join(f"`{check}`: {name}" for check, name in matrix.measured) + "."]
    return "\n".join(lines) + "\n"


_NAMES = {"provider": "provider", "topology": "topology", "meshVersion": "mesh", "proxyVersion": "proxy"}
_ICONS = {"passed": "✅ ", "failed": "❌ ", "broken": "⚠️ ", "skipped": "⏭️ "}


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _label_part(field: str, value: str) -> str:
    return f"mesh {value}" if field == "meshVersion" else value


def _field(run: Mapping[str, Any], name: str) -> str:
    value = run.get(name)
    return ABSENT if value in (None, "") else str(value)


def _run(path: Path, report: Mapping[str, Any]) -> Run:
    run = report.get("run")
    checks = {str(c["id"]): c for c in report["checks"]}
    statuses = [str(c["status"]) for c in checks.values()]
    counts = [f"{statuses.count(s)} {s}" for s in ("passed", "failed", "broken", "skipped") if s in statuses]
    summary = f"{', '.join(counts)} of {len(statuses)}" if statuses else "no checks"
    return Run(path, run if isinstance(run, Mapping) else {}, checks, summary)


def _budgeted(check: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [m for m in check.get("measurements") or []
            if isinstance(m, Mapping) and m.get("budget") is not None and isinstance(m.get("value"), int | float)]


def _key_measurement(check_id: str, runs: Sequence[Run]) -> str | None:
    for r in runs:
        budgeted = _budgeted(r.checks.get(check_id, {}))
        if budgeted:
            return str(budgeted[0].get("name"))
    return None


def _cell(check: Mapping[str, Any] | None, key: str | None) -> str:
    if check is None:
        return "absent"
    text = str(check["status"])
    budgeted = _budgeted(check)
    shown = next((m for m in budgeted if m.get("name") == key), None)
    if shown is not None:
        text += f" {_measured(shown)}"
    others_over = sum(1 for m in budgeted if m is not shown and m.get("withinBudget") is False)
    if others_over:
        text += f" (+{others_over} over budget)"
    return text


def _measured(m: Mapping[str, Any]) -> str:
    """``1.82 s (<= 6)``, and ``OVER`` when outside the budget."""
    value, budget = float(m["value"]), float(m["budget"])
    unit = f" {m['unit']}" if m.get("unit") else ""
    over = " OVER" if m.get("withinBudget") is False else ""
    return f"{_number(value)}{unit} ({m.get('comparison', '<=')} {_number(budget)}){over}"


def _number(value: float) -> str:
    if abs(value) >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
