"""Self-validation: every check can fail, at the shipped settings.

The table of which check catches which defect, on which expectation, is ``conformance.selftest.CATCHES``
(it ships in the wheel: ``meshconf selftest`` runs it). The fast tests here hold the table to the catalogue
and the defects; ``test_selftest_at_shipped_settings`` runs the real ``meshconf selftest`` (a clean run of
the catalogue, then every row) and is the proof. It measures load, so tox runs it on its own, after the
other tests (``-m slow``).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.cli import list_checks
from conformance.config import Budgets, LoadSettings, Timeouts
from conformance.errors import UsageError
from conformance.providers import provider_defects
from conformance.selftest import CATCHES, Catch, SelftestPlan
from conformance.selftest.plan import selection
from conformance.selftest.runner import _with_skipped, workers_that_fit
from tests.conftest import REPO, run_meshconf

CATALOGUE = {info.id: str(info.area) for info in list_checks(REPO / "suites")}

NOT_YET_CAUGHT: frozenset[str] = frozenset()
"""Checks that no defect fails on their own expectation yet (one that fails only on a precondition, its starting
state, is not caught). Must stay empty."""


def test_every_defect_is_in_the_table() -> None:
    assert {c.defect for c in CATCHES} == set(provider_defects("local"))


def test_every_check_is_caught_by_a_defect() -> None:
    claimed = {check for catch in CATCHES for check in catch.checks}
    assert claimed | NOT_YET_CAUGHT == set(CATALOGUE)
    assert not claimed & NOT_YET_CAUGHT


def test_every_row_names_real_checks_and_expectations_at_shipped_settings() -> None:
    plan = SelftestPlan.build(CATALOGUE)  # raises UsageError for the first row that cannot stand
    assert plan.catches == CATCHES
    unnamed = [(c.defect, check) for c in CATCHES for check, expectation in c.checks.items() if expectation is None]
    assert not unnamed, "every shipped row names the expectation that decides each check"


@pytest.mark.parametrize(("catch", "complaint"), [
    (Catch("no-such-defect", {"mtls-strict-peer-identity": "expect_peer_identity"}), "no defect 'no-such-defect'"),
    (Catch("slow-sidecar", {"no-such-check": "expect_latency_within"}), "no check 'no-such-check'"),
    (Catch("slow-sidecar", {"latency-in-cluster-budget": "expect_fast"}), "not an expect_*"),
    (Catch("slow-sidecar", {"latency-in-cluster-budget": "expect_latency_within"},
           args=("--budget", "in_cluster_p99_ms=30")), "may not carry --budget"),
    (Catch("slow-sidecar", {"latency-in-cluster-budget": "expect_latency_within"},
           args=("--load=duration_s=2",)), "may not carry --load"),
    (Catch("slow-sidecar", {}), "names no check"),
])
def test_a_row_that_cannot_stand_is_refused(catch: Catch, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        SelftestPlan.build(CATALOGUE, catches=[catch])


def test_runs_measure_load_alone_and_the_rest_side_by_side() -> None:
    plan = SelftestPlan.build(CATALOGUE)
    runs = plan.runs()
    topologies = ["multi-primary", "multi-network", "three-cluster"]
    assert [r.name for r in runs[:3]] == [f"clean-{t}" for t in topologies]
    assert all(r.clean for r in runs[:3]) and not any(r.clean for r in runs[3:])
    claimed = {t: {c for catch in plan.catches if catch.topology == t for c in catch.checks} for t in topologies}
    # first the catalogue, less what rows claim only on another topology (e.g. the lifecycle checks, on three-cluster)
    elsewhere = claimed["multi-network"] | claimed["three-cluster"]
    assert set(runs[0].checks) == set(CATALOGUE) - (elsewhere - claimed["multi-primary"])
    assert "multicluster-control-plane-restart" not in runs[0].checks
    for run, topology in zip(runs[1:3], topologies[1:], strict=True):  # elsewhere only what rows there claim
        assert set(run.checks) == claimed[topology]
    alone = [r for r in runs if r.alone]
    assert alone and all(CATALOGUE[c] == "latency" for r in alone for c in r.checks)
    assert all(CATALOGUE[c] != "latency" for r in runs if not (r.alone or r.clean) for c in r.checks)
    # every claim is decided by exactly one run
    claims = [(index, check) for index, catch in enumerate(plan.catches) for check in catch.checks]
    decided = [(index, check) for r in runs for index in r.rows for check in r.checks]
    assert sorted(decided) == sorted(claims)
    assert len({r.name for r in runs}) == len(runs)


def test_a_later_clean_run_adds_what_the_first_skipped() -> None:
    plan = SelftestPlan.build(CATALOGUE)
    second = plan.runs()[1]
    first = plan.runs()[0]
    report = {check: {"status": "passed"} for check in first.checks}
    report["failover-east-west-gateway-loss"] = {"status": "skipped"}
    del report["mtls-mesh-wide-strict"]  # meant to run, not reported
    widened = _with_skipped(second, plan, report)
    # not the checks the first run was never meant to run (they have a clean run of their own)
    assert set(widened.checks) == {*second.checks, "failover-east-west-gateway-loss", "mtls-mesh-wide-strict"}
    assert set(_with_skipped(second, plan, None).checks) == {*second.checks, *first.checks}  # no report: all


def test_side_by_side_runs_fit_in_the_checks_left() -> None:
    runs = {r.name: r for r in SelftestPlan.build(CATALOGUE).runs()}
    six, one = runs["ignore-authz-allow"], runs["retries-disabled"]
    assert workers_that_fit(six, 8, []) == min(8, len(six.checks))
    assert workers_that_fit(six, 4, []) == 4  # never more than -n checks at once
    assert workers_that_fit(one, 8, [6]) == 1
    assert workers_that_fit(one, 8, [6, 2]) == 0  # 8 checks already run: wait
    assert workers_that_fit(six, 2, [2]) == 0


def test_a_run_of_serial_checks_takes_one_worker() -> None:
    """Serial checks never run beside another: a worker for each would only wait, and hold a slot of -n."""
    serial = {info.id for info in list_checks(REPO / "suites") if info.serial}
    plan = SelftestPlan.build(CATALOGUE, serial=serial)
    runs = {r.name: r for r in plan.runs()}
    lifecycle = runs["clean-three-cluster"]
    assert len(lifecycle.checks) > 1 and sum(c not in serial for c in lifecycle.checks) <= 1 and lifecycle.width == 1
    assert workers_that_fit(lifecycle, 8, [6]) == 1
    mixed = runs["ignore-peer-authentication"]
    assert mixed.width == sum(c not in serial for c in mixed.checks) < len(mixed.checks)
    assert runs["ignore-authz-allow"].width == len(runs["ignore-authz-allow"].checks)


def test_a_topology_picks_its_rows() -> None:
    plan = SelftestPlan.build(CATALOGUE, topology="multi-network")
    assert plan.topologies == ("multi-network",) and plan.catches
    assert all(c.topology == "multi-network" for c in plan.catches)
    with pytest.raises(UsageError, match="no self-validation rows on topology 'primary-remote'"):
        SelftestPlan.build(CATALOGUE, topology="primary-remote")


def test_selection_selects_exactly_the_checks_asked(tmp_path: Path) -> None:
    catalogue = ["mtls-strict", "mtls-strict-peer", "authz-allow"]
    assert selection(["mtls-strict"], catalogue) == "(test_mtls_strict and not test_mtls_strict_peer)"
    assert selection(["authz-allow", "mtls-strict-peer"], catalogue) == "test_authz_allow or test_mtls_strict_peer"
    wanted = ["mtls-strict-peer-identity", "authz-allow-principal", "latency-in-cluster-budget"]
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:locust", "-p", "no:cacheprovider",
         str(REPO / "suites"), "-k", selection(wanted, CATALOGUE), f"--rootdir={tmp_path}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    ids = sorted(line.split("::")[1].removeprefix("test_").replace("_", "-")
                 for line in collected.stdout.splitlines() if "::" in line)
    assert ids == sorted(wanted), collected.stdout[-2000:]


SHAPE = {"settings", "clean", "defects", "killRate", "unkilledChecks"}


@pytest.mark.slow
def test_selftest_at_shipped_settings(tmp_path: Path) -> None:
    out = tmp_path / "selftest"
    result = run_meshconf("selftest", "--json", "--out", str(out), timeout=3600)
    assert result.stdout.strip(), f"no JSON; meshconf said:\n{result.stderr[-4000:]}"
    document = json.loads(result.stdout)
    assert set(document) == SHAPE
    assert document["settings"] == "shipped"
    assert set(document["clean"]) == {"passed", "checks"}
    assert all(set(d) == {"name", "description", "checks", "caught", "caughtBy"} for d in document["defects"])
    progress = "\n".join(line for line in result.stderr.splitlines() if line.startswith("selftest:"))
    assert result.returncode in (0, 1), progress  # 2: a usage error, 3: the environment broke

    # every run really ran at the shipped settings: nothing relaxed
    shipped = {"budgets": dataclasses.asdict(Budgets()), "timeouts": dataclasses.asdict(Timeouts()),
               "load": dataclasses.asdict(LoadSettings())}
    reports = sorted(out.glob("*/conformance-report.json"))
    assert len(reports) == len(SelftestPlan.build(CATALOGUE).runs())
    for report in reports:
        run = json.loads(report.read_text())["run"]
        assert {k: run[k] for k in shipped} == shipped, report

    problems = []  # every way the proof fell short, all at once
    if not document["clean"]["passed"]:
        problems.append("the clean run did not pass at the shipped settings")
    if document["clean"]["checks"] != len(CATALOGUE):
        problems.append(f"the clean runs ran {document['clean']['checks']} of {len(CATALOGUE)} checks")
    escaped = [d["name"] for d in document["defects"] if not d["caught"]]
    if escaped:
        problems.append(f"not caught on their expectations: {', '.join(escaped)}")
    if {d["name"] for d in document["defects"]} != set(provider_defects("local")):
        problems.append("the result does not cover every defect of the local mesh")
    if document["unkilledChecks"] != sorted(NOT_YET_CAUGHT):
        problems.append(f"checks no defect kills: {document['unkilledChecks']}, expected {sorted(NOT_YET_CAUGHT)}")
    if not escaped and document["killRate"] != 1.0:
        problems.append(f"kill rate {document['killRate']} with every defect caught")
    assert not problems, "\n".join(problems) + "\n" + progress
    assert result.returncode == 0, progress
