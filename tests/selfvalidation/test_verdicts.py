"""Judging self-validation runs from their conformance reports (reports written by the real report writer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.errors import EXIT_ENVIRONMENT, EXIT_NON_CONFORMANT, EXIT_OK
from conformance.report.conformance import CheckResult, write_reports
from conformance.selftest import CheckVerdict, DefectVerdict, SelftestResult, render_markdown, render_text
from conformance.selftest.verdict import CleanVerdict, judge_clean, read_report


def _report(tmp_path: Path, *results: CheckResult) -> dict[str, dict[str, object]]:
    write_reports(tmp_path, {"provider": "local"}, list(results))
    report = read_report(tmp_path)
    assert report is not None
    return report


def _result(check: str, status: str, expectation: str | None = None, precondition: bool = False) -> CheckResult:
    return CheckResult(check, "mtls", "a check", status, 1.0, f"suites/{check}", message=f"{check} said why",
                       expectation=expectation, precondition=precondition)


@pytest.mark.parametrize(("status", "expectation", "precondition", "caught", "why"), [
    ("failed", "expect_all_refused", False, True, ""),
    ("failed", "expect_all_refused", True, False, "failed on a precondition, expect_all_refused"),
    ("failed", "expect_all_ok", False, False, "failed on expect_all_ok, not on expect_all_refused"),
    ("passed", None, False, False, "passed instead of failing on expect_all_refused"),
    ("broken", None, False, False, "broken instead of failing"),
    ("skipped", None, False, False, "skipped instead of failing"),
])
def test_a_catch_is_a_failure_on_the_named_expectation(tmp_path: Path, status: str, expectation: str | None,
                                                       precondition: bool, caught: bool, why: str) -> None:
    report = _report(tmp_path, _result("mtls-x", status, expectation, precondition))
    verdict = CheckVerdict.from_report("mtls-x", "multi-primary", "expect_all_refused", report)
    assert verdict.caught is caught
    assert why in verdict.why_not()


@pytest.mark.parametrize(("expectation", "precondition", "caught"), [
    ("expect_all_ok", False, True), ("expect_all_ok", True, False), (None, False, False)])
def test_a_row_without_an_expectation_accepts_any_but_a_precondition(tmp_path: Path, expectation: str | None,
                                                                    precondition: bool, caught: bool) -> None:
    report = _report(tmp_path, _result("mtls-x", "failed", expectation, precondition))
    verdict = CheckVerdict.from_report("mtls-x", "multi-primary", None, report)
    assert verdict.caught is caught
    if caught:
        assert DefectVerdict("d", "", (verdict,)).caught_by == [{"check": "mtls-x", "expectation": "expect_all_ok"}]
        assert "any (`expect_all_ok`)" in render_markdown(SelftestResult(CleanVerdict(True, ()),
                                                                         (DefectVerdict("d", "", (verdict,)),)))


def test_a_check_missing_from_the_report_or_a_run_without_report_is_no_catch(tmp_path: Path) -> None:
    assert read_report(tmp_path) is None
    for report in (None, _report(tmp_path, _result("other", "failed", "expect_all_ok"))):
        verdict = CheckVerdict.from_report("mtls-x", "multi-primary", "expect_all_ok", report)
        assert verdict.status == "missing" and not verdict.caught and "did not run" in verdict.why_not()


def _defect(name: str, *verdicts: CheckVerdict) -> DefectVerdict:
    return DefectVerdict(name, f"{name} breaks things", verdicts)


CAUGHT = CheckVerdict("mtls-a", "multi-primary", "expect_all_refused", "failed", "expect_all_refused")
PRECONDITION = CheckVerdict("mtls-b", "multi-network", "expect_all_ok", "failed", "expect_all_ok", True)
BROKEN = CheckVerdict("mtls-b", "multi-primary", "expect_all_ok", "broken")


def test_a_defect_is_caught_only_when_every_claim_holds() -> None:
    assert _defect("d", CAUGHT).caught
    partly = _defect("d", CAUGHT, PRECONDITION)
    assert not partly.caught
    assert partly.caught_by == [{"check": "mtls-a", "expectation": "expect_all_refused"}]
    assert partly.checks == ["mtls-a", "mtls-b"]
    assert not _defect("d").caught


def test_the_json_document_has_exactly_the_documented_shape() -> None:
    result = SelftestResult(CleanVerdict(True, ("mtls-a", "mtls-b", "mtls-c")),
                            (_defect("one", CAUGHT), _defect("two", PRECONDITION)), ("mtls-a", "mtls-b", "mtls-c"))
    assert json.loads(json.dumps(result.as_dict())) == {
        "settings": "shipped",
        "clean": {"passed": True, "checks": 3},
        "defects": [
            {"name": "one", "description": "one breaks things", "checks": ["mtls-a"], "caught": True,
             "caughtBy": [{"check": "mtls-a", "expectation": "expect_all_refused"}]},
            {"name": "two", "description": "two breaks things", "checks": ["mtls-b"], "caught": False,
             "caughtBy": []},
        ],
        "killRate": 0.5,
        "unkilledChecks": ["mtls-b", "mtls-c"],
    }
    assert result.exit_code == EXIT_NON_CONFORMANT


@pytest.mark.parametrize(("clean", "verdicts", "code"), [
    (CleanVerdict(True, ("mtls-a",)), (CAUGHT,), EXIT_OK),
    (CleanVerdict(False, ("mtls-a",), ("mtls-a failed",)), (CAUGHT,), EXIT_NON_CONFORMANT),
    (CleanVerdict(True, ("mtls-a",)), (CAUGHT, PRECONDITION), EXIT_NON_CONFORMANT),
    (CleanVerdict(True, ("mtls-a",)), (CAUGHT, BROKEN), EXIT_ENVIRONMENT),
    (CleanVerdict(False, (), ("no report",), broken_only=True), (BROKEN,), EXIT_ENVIRONMENT),
])
def test_exit_codes(clean: CleanVerdict, verdicts: tuple[CheckVerdict, ...], code: int) -> None:
    assert SelftestResult(clean, (_defect("d", *verdicts),), ("mtls-a",)).exit_code == code


def test_the_clean_run_must_pass_every_claimed_check_on_its_topology(tmp_path: Path) -> None:
    report = _report(tmp_path, _result("mtls-a", "passed"), _result("mtls-b", "skipped"),
                     _result("mtls-c", "passed"))
    assert judge_clean([("multi-primary", 0, report)], {"multi-primary": {"mtls-a"}}).passed
    skipped = judge_clean([("multi-primary", 0, report)], {"multi-primary": {"mtls-a", "mtls-b"}})
    assert not skipped.passed and "mtls-b skipped on multi-primary" in skipped.problems[0]
    assert skipped.checks == ("mtls-a", "mtls-c")
    failing = _report(tmp_path / "f", _result("mtls-a", "failed", "expect_all_ok"))
    verdict = judge_clean([("multi-primary", 1, failing)], {})
    assert not verdict.passed and not verdict.broken_only and "mtls-a failed on multi-primary" in verdict.problems[0]
    missing = judge_clean([("multi-network", 3, None)], {})
    assert not missing.passed and missing.broken_only and "wrote no report (exit 3" in missing.problems[0]


def test_markdown_has_a_line_per_claim_and_text_says_why_not() -> None:
    result = SelftestResult(CleanVerdict(True, ("mtls-a", "mtls-b")), (_defect("one", CAUGHT, PRECONDITION),),
                            ("mtls-a", "mtls-b"))
    table = render_markdown(result)
    assert "| `one` | one breaks things | `mtls-a` | `expect_all_refused` | ✅ |" in table
    assert "|  |  | `mtls-b` (multi-network) | `expect_all_ok` | ❌ failed |" in table
    assert "0/1 defects caught" in table
    text = render_text(result)
    assert "NOT CAUGHT" in text and "mtls-b failed on a precondition, expect_all_ok" in text
