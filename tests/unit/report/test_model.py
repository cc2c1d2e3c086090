"""The report model: what a run writes is what gate, compare and the Markdown read back, through one set of
classes; a measurement prints one way everywhere; statuses are the enum, never bare strings."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from conformance.errors import UsageError
from conformance.report.conformance import markdown, write_reports
from conformance.report.gate import compare_reports, render_gate
from conformance.report.model import CheckResult, Measurement, Report, Status

REPO = Path(__file__).resolve().parents[3]
RUN = {"provider": "local", "topology": "multi-network", "meshVersion": "1.28.0"}


def _checks() -> list[CheckResult]:
    return [
        CheckResult("latency-in-cluster", "latency", "d", Status.PASSED, 3.25, "n1",
                    measurements=[Measurement("p99", 0.61, "ms", 12.0), Measurement("throughput", 199.5, "rps", 190.0,
                                                                                  ">="),
                                  Measurement("calls", 2000, "calls")]),
        CheckResult("a-b", "mtls", "d", "failed", 1.0, "n", message="m\nsecond line", expectation="expect_all_ok",
                    precondition=True),
        CheckResult("c-d", "mtls", "d", Status.SKIPPED, 0.0, "n2", message="requires link-rtt; provider x lacks it"),
    ]


def test_what_is_written_reads_back_as_the_same_classes(tmp_path: Path) -> None:
    written = write_reports(tmp_path, RUN, _checks())
    read = Report.load(tmp_path / "conformance-report.json")
    assert read.run == RUN
    assert sorted(read.checks, key=lambda c: c.id) == sorted(written.checks, key=lambda c: c.id)
    assert all(isinstance(c.status, Status) for c in read.checks)
    assert read.summary() == {"total": 3, "passed": 1, "failed": 1, "broken": 0, "skipped": 1}
    data = json.loads((tmp_path / "conformance-report.json").read_text())
    assert [c["status"] for c in data["checks"]] == ["passed", "failed", "skipped"]  # plain strings in the JSON


def test_the_report_says_what_a_failed_check_failed_on() -> None:
    report = Report({}, _checks())
    checks = {c["id"]: c for c in report.as_dict()["checks"]}
    assert checks["a-b"]["failedOn"] == {"expectation": "expect_all_ok", "precondition": True}
    assert "failedOn" not in checks["c-d"]
    assert "- `a-b` (failed on precondition `expect_all_ok`): m" in markdown(report)


def test_a_measurement_prints_one_way_in_markdown_gate_and_compare(tmp_path: Path) -> None:
    p99 = Measurement("p99", 0.61, "ms", 12.0)
    over = Measurement("p99", 12.5, "ms", 12.0)
    floor = Measurement("throughput", 150.0, "rps", 190.0, ">=")
    assert p99.text() == "0.61 ms (budget <= 12)"
    assert over.text() == "12.5 ms (budget <= 12) OVER"
    assert floor.text() == "150 rps (budget >= 190) OVER"
    assert Measurement("calls", 2000, "calls").text() == "2000 calls"
    assert Measurement("ratio", 0.5, "").text() == "0.5"
    text = markdown(Report(RUN, _checks()))
    assert "| `latency-in-cluster` | latency | ✅ passed | 3.2 s | p99 0.61 ms (budget <= 12); throughput 199.5 rps " \
           "(budget >= 190); calls 2000 calls |" in text
    assert Measurement("t", 0.070461, "s", 10).text() == "0.07046 s (budget <= 10)"
    assert Measurement("t", 1234.56, "ms", 1000.5).text() == "1235 ms (budget <= 1000) OVER"
    before = Report(RUN, [CheckResult("l", "latency", "", Status.PASSED, 1, "l", measurements=[p99])])
    after = Report(RUN, [CheckResult("l", "latency", "", Status.PASSED, 1, "l", measurements=[over])])
    rows = compare_reports(before, after)
    assert [(r.before, r.after, r.regression) for r in rows] == [(p99.text(), over.text(), True)]
    assert over.text() in render_gate(before, after, rows)


@pytest.mark.parametrize(("check", "says"), [
    ({"id": "x", "status": "errored"},
     "checks[0] (x) has status 'errored', not one of passed, failed, broken, skipped"),
    ({"id": "x", "status": "passed", "measurements": [{"name": "p99", "value": "fast", "unit": "ms"}]},
     "checks[0] (x) is not a check result: value 'fast' is not a number"),
    ({"id": "x", "status": "passed", "measurements": [{"name": "p99", "value": 1, "unit": "ms", "budget": 2,
                                                       "comparison": "<"}]},
     "comparison must be <= or >="),
    ({"id": "x"}, "checks[0] has no id or status"),
])
def test_a_report_that_is_not_one_is_refused_naming_the_file_and_the_check(
        tmp_path: Path, check: dict[str, object], says: str) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schemaVersion": 1, "run": {}, "checks": [check]}))
    with pytest.raises(UsageError) as refused:
        Report.load(path)
    assert str(refused.value).startswith(f"{path}: ") and says in str(refused.value)


def test_a_check_result_refuses_a_status_that_is_not_one() -> None:
    with pytest.raises(ValueError, match="'errored' is not a valid Status"):
        CheckResult("x", "mtls", "", "errored", 0.0, "x")


def test_the_rank_decides_which_phase_a_check_reports() -> None:
    assert sorted(Status, key=lambda s: s.rank) == [Status.PASSED, Status.SKIPPED, Status.FAILED, Status.BROKEN]


# Outside the report model, a status is Status.X; ads.py's "skipped" is xDS vocabulary (a proxy the
# control plane did not push to), and selftest's "passed" a key of the JSON issue 10 specifies
# ({"clean": {"passed": bool, ...}}), not a check's status.
_STATUS_WORDS = {str(s) for s in Status}
_NOT_A_STATUS = {("conformance/providers/local/ads.py", "skipped"), ("conformance/selftest/verdict.py", "passed")}


def test_no_bare_status_string_outside_the_model() -> None:
    found = []
    for path in sorted((REPO / "conformance").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative == "conformance/report/model.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and node.value in _STATUS_WORDS and id(node) not in docstrings
                    and (relative, node.value) not in _NOT_A_STATUS):
                found.append(f"{relative}:{node.lineno} {node.value!r}")
    assert not found, "use conformance.report.model.Status: " + ", ".join(found)
