"""meshconf compare: the matrix of many runs, from crafted conformance reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from conformance.report.compare import build_matrix, load_reports, render_markdown, render_text


def _measurement(name: str, value: float, unit: str, budget: float | None, comparison: str = "<=") -> dict[str, Any]:
    within = None if budget is None else (value <= budget if comparison == "<=" else value >= budget)
    return {"name": name, "value": value, "unit": unit, "budget": budget, "comparison": comparison,
            "withinBudget": within}


def _check(check_id: str, status: str, *measurements: dict[str, Any]) -> dict[str, Any]:
    return {"id": check_id, "area": check_id.split("-")[0], "description": "", "status": status,
            "severity": "critical", "durationSeconds": 1.0, "nodeid": check_id, "measurements": list(measurements),
            "message": None}


def _report(path: Path, version: str, checks: list[dict[str, Any]], *, topology: str = "multi-network",
            started: str = "2026-01-02T03:04:05+00:00") -> Path:
    run = {"provider": "kind", "topology": topology, "implementation": "Istio", "meshVersion": version,
           "proxyVersion": f"istio-proxy {version}", "started": started}
    path.write_text(json.dumps({"schemaVersion": 1, "run": run, "summary": {}, "checks": checks}))
    return path


def _three_versions(tmp_path: Path) -> list[Path]:
    shift = "time to shift"
    return [
        _report(tmp_path / "a.json", "1.26.4", [
            _check("mtls-strict-rejects-plaintext", "passed"),
            _check("failover-on-endpoint-failure", "passed", _measurement("client-visible errors", 2, "calls", 5),
                   _measurement(shift, 0.07046, "s", 10)),
        ]),
        _report(tmp_path / "b.json", "1.27.3", [
            _check("mtls-strict-rejects-plaintext", "passed"),
            _check("failover-on-endpoint-failure", "failed", _measurement("client-visible errors", 9, "calls", 5),
                   _measurement(shift, 12.5, "s", 10)),
            _check("authz-allow-principal", "broken"),
        ]),
        _report(tmp_path / "c.json", "1.28.0", [
            _check("mtls-strict-rejects-plaintext", "skipped"),
            _check("failover-on-endpoint-failure", "failed", _measurement("client-visible errors", 4, "calls", 5),
                   _measurement(shift, 31, "s", 10)),
        ]),
    ]


def test_columns_are_labelled_by_what_differs_and_rows_by_check(tmp_path: Path) -> None:
    matrix = build_matrix(load_reports(_three_versions(tmp_path)))
    assert matrix.common == "provider kind · topology multi-network"
    assert matrix.labels == ["mesh 1.26.4 · istio-proxy 1.26.4", "mesh 1.27.3 · istio-proxy 1.27.3",
                             "mesh 1.28.0 · istio-proxy 1.28.0"]
    assert matrix.legend[0] == f"mesh 1.26.4 · istio-proxy 1.26.4: started 2026-01-02T03:04:05+00:00, {tmp_path}/a.json"
    assert [check for check, _ in matrix.rows] == [  # by area, then id
        "authz-allow-principal", "failover-on-endpoint-failure", "mtls-strict-rejects-plaintext"]
    cells = dict(matrix.rows)
    assert cells["authz-allow-principal"] == ["absent", "broken", "absent"]
    assert cells["mtls-strict-rejects-plaintext"] == ["passed", "passed", "skipped"]
    # the same measurement in every column (the first one with a budget); others over budget are flagged
    assert cells["failover-on-endpoint-failure"] == [
        "passed 2 calls (budget <= 5)",
        "failed 9 calls (budget <= 5) OVER (+1 over budget)",
        "failed 4 calls (budget <= 5) (+1 over budget)",
    ]
    assert matrix.measured == [("failover-on-endpoint-failure", "client-visible errors")]
    assert matrix.summaries == ["2 passed of 2", "1 passed, 1 failed, 1 broken of 3", "1 failed, 1 skipped of 2"]


def test_text_and_markdown_renderings(tmp_path: Path) -> None:
    matrix = build_matrix(load_reports(_three_versions(tmp_path)))
    text = render_text(matrix)
    assert text.splitlines()[0] == "compare: 3 runs; all provider kind · topology multi-network"
    header = next(line for line in text.splitlines() if line.startswith("check "))
    assert header.split("  ")[0] == "check" and "mesh 1.28.0 · istio-proxy 1.28.0" in header
    assert "failover-on-endpoint-failure: client-visible errors" in text
    markdown = render_markdown(matrix)
    assert "| check | mesh 1.26.4 · istio-proxy 1.26.4 | mesh 1.27.3 · istio-proxy 1.27.3 |" in markdown
    assert "|---|---|---|---|" in markdown
    assert ("| `failover-on-endpoint-failure` | ✅ passed 2 calls (budget <= 5) | ❌ failed 9 calls (budget <= 5) OVER"
            in markdown)
    assert "| `authz-allow-principal` | absent | ⚠️ broken | absent |" in markdown


def test_runs_that_differ_only_in_start_time_are_told_apart_by_it(tmp_path: Path) -> None:
    checks = [_check("mtls-strict-rejects-plaintext", "passed")]
    first = _report(tmp_path / "a.json", "1.28.0", checks, started="2026-01-01T00:00:00+00:00")
    second = _report(tmp_path / "b.json", "1.28.0", checks, started="2026-01-02T00:00:00+00:00")
    matrix = build_matrix(load_reports([first, second]))
    assert matrix.labels == ["2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"]
    assert matrix.legend[1] == f"2026-01-02T00:00:00+00:00: {second}"
    same = build_matrix(load_reports([first, first]))
    assert same.labels == ["2026-01-01T00:00:00+00:00 #1", "2026-01-01T00:00:00+00:00 #2"]


def test_topologies_and_versions_as_a_qualification_matrix(tmp_path: Path) -> None:
    checks = [_check("mtls-strict-rejects-plaintext", "passed")]
    paths = [_report(tmp_path / f"{v}-{t}.json", v, checks, topology=t)
             for v in ("1.27.3", "1.28.0") for t in ("multi-primary", "multi-network")]
    matrix = build_matrix(load_reports(paths))
    assert matrix.common == "provider kind"
    assert matrix.labels[1] == "multi-network · mesh 1.27.3 · istio-proxy 1.27.3"


def test_compare_exits_0_even_when_checks_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(p) for p in _three_versions(tmp_path)]
    assert main(["compare", *paths]) == 0
    assert "failover-on-endpoint-failure" in capsys.readouterr().out
    assert main(["compare", "--markdown", *paths]) == 0
    assert capsys.readouterr().out.startswith("**3 runs** (all provider kind · topology multi-network):")


@pytest.mark.parametrize(("content", "says"), [
    ("{not json", "is not JSON"),
    (json.dumps({"schemaVersion": 2, "run": {}, "checks": []}), "is not a conformance-report.json of schemaVersion 1"),
    (json.dumps({"schemaVersion": 1, "run": {}, "checks": [{"id": "x"}]}), "checks[0] has no id or status"),
])
def test_an_unreadable_or_foreign_report_exits_2_naming_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, says: str) -> None:
    good = _three_versions(tmp_path)[0]
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert str(bad) in err and says in err


def test_compare_needs_two_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(_three_versions(tmp_path)[0])]) == 2
    assert "two or more" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing.json"), str(tmp_path / "a.json")]) == 2
    assert "missing.json does not exist" in capsys.readouterr().err
