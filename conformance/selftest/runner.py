"""Running a :class:`SelftestPlan`: each :class:`Run` is a real ``meshconf run`` in a process of its own.

Runs that measure load (the clean runs, the latency rows) run one at a time with nothing else of the
self-validation beside them. The other defect runs go side by side, as many at once as fit in ``plan.parallel``
checks (each run gets one pytest-xdist worker per check). Every process started here is stopped by its PID
if it outlives its time limit, and when the self-validation is interrupted.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.config import Timeouts
from conformance.report.model import Status
from conformance.selftest.plan import Run, SelftestPlan, selection
from conformance.selftest.verdict import (
    CheckVerdict,
    DefectVerdict,
    SelftestResult,
    judge_clean,
    read_report,
)

__all__ = ["run_selftest", "workers_that_fit"]

Progress = Callable[[str], None]

POLL_S = 0.5
CLEAN_WORKERS = 3
"""pytest-xdist workers of a clean run: its checks that do not measure load run side by side (the ones
that do hold a lock that keeps every other check out while they measure)."""


@dataclass
class _Started:
    run: Run
    process: subprocess.Popen[bytes]
    out: Path
    started: float
    workers: int


def run_selftest(plan: SelftestPlan, out: Path, progress: Progress) -> SelftestResult:
    """Run every run of ``plan`` (output under ``out/<run name>/``) and judge them."""
    runs = plan.runs()
    timeouts = Timeouts()
    finished: dict[str, tuple[int | None, dict[str, dict[str, Any]] | None]] = {}
    total = len(runs)
    done = 0

    def record(started: _Started, code: int | None) -> None:
        nonlocal done
        done += 1
        report = read_report(started.out)
        finished[started.run.name] = (code, report)
        progress(f"[{done}/{total}] {started.run.name} ({started.run.topology}, "
                 f"{time.monotonic() - started.started:.0f} s): {_summary(plan, started.run, report)}")

    running: list[_Started] = []
    try:
        first, *later = [r for r in runs if r.clean]
        _alone(first, out, plan, timeouts, running, record, progress)
        # later clean runs also run what the first could not; one that measures no load goes side by side
        later = [plan.sized(_with_skipped(r, plan, finished.get(first.name, (None, None))[1])) for r in later]
        measuring = [r for r in later if any(plan.measures_load(c) for c in r.checks)]
        for run in measuring + [r for r in runs if r.alone]:
            _alone(run, out, plan, timeouts, running, record, progress)
        side_by_side = [r for r in later if r not in measuring] + [r for r in runs if not (r.clean or r.alone)]
        _side_by_side(side_by_side, plan, out, timeouts, running, record, progress)
    finally:
        for started in running:
            _stop(started.process, timeouts.teardown_s)
    return _judge(plan, runs, finished)


def _alone(run: Run, out: Path, plan: SelftestPlan, timeouts: Timeouts, running: list[_Started],
           record: Callable[[_Started, int | None], None], progress: Progress) -> None:
    """Run ``run`` with nothing else of the self-validation beside it."""
    what = (f"{'the whole catalogue' if not run.checks else ', '.join(run.checks)}, no defect" if run.clean
            else f"{', '.join(run.checks)} against {run.defect}")
    progress(f"{run.name}: {what}, alone (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: "
             f"other work on the machine is measured too)")
    started = _start(run, out, plan, workers=CLEAN_WORKERS if run.clean else 1)
    running.append(started)
    record(started, _wait(started, _limit_s(run, timeouts, started.workers)))
    running.remove(started)


def _with_skipped(run: Run, plan: SelftestPlan, first: Mapping[str, Mapping[str, Any]] | None) -> Run:
    """A later clean run also runs what the first clean run could not: what it skipped, or was meant to run
    and did not report (all of it when it wrote no report)."""
    meant = plan.first_clean_checks() or tuple(plan.catalogue)
    skipped = [c for c in meant if (first or {}).get(c, {}).get("status", Status.SKIPPED) == Status.SKIPPED]
    return dataclasses.replace(run, checks=tuple(sorted({*run.checks, *skipped})))


def _side_by_side(runs: list[Run], plan: SelftestPlan, out: Path, timeouts: Timeouts, running: list[_Started],
                  record: Callable[[_Started, int | None], None], progress: Progress) -> None:
    pending = list(runs)
    if pending:
        progress(f"{len(pending)} runs side by side: at most {plan.parallel} checks at once")
    while pending or running:
        for run in list(pending):
            workers = workers_that_fit(run, plan.parallel, [s.workers for s in running])
            if workers:
                running.append(_start(run, out, plan, workers=workers))
                pending.remove(run)
        time.sleep(POLL_S)
        for started in list(running):
            code = started.process.poll()
            overdue = time.monotonic() - started.started > _limit_s(started.run, timeouts, started.workers)
            if code is None and overdue:
                progress(f"{started.run.name}: still running after its time limit; stopping it")
                code = _stop(started.process, timeouts.teardown_s)
            if code is not None:
                running.remove(started)
                record(started, code)


def workers_that_fit(run: Run, parallel: int, running: list[int]) -> int:
    """pytest-xdist workers to start ``run`` with now, beside runs with ``running`` workers; 0: wait. A run
    starts with all it can use (one worker per check that can run beside others, at most ``parallel``) once
    that fits in the checks left; when nothing else runs, at once."""
    wanted = min(run.width, parallel)
    return wanted if not running or sum(running) + wanted <= parallel else 0


def _start(run: Run, out: Path, plan: SelftestPlan, *, workers: int) -> _Started:
    directory = out / run.name
    directory.mkdir(parents=True, exist_ok=True)
    # one check: one pytest process (an xdist controller and a single worker would start Python twice)
    argv = [sys.executable, "-m", "conformance.cli", "run", "--out", str(directory), "--topology", run.topology,
            "-n", str(workers if workers > 1 else 0)]
    if run.defect:
        argv += ["--defect", run.defect]
    if run.checks:
        argv += ["-k", selection(run.checks, plan.catalogue)]
    argv += list(run.args)
    with open(directory / "meshconf.log", "wb") as log:
        log.write((" ".join(argv) + "\n").encode())
        log.flush()
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=directory, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return _Started(run, process, directory, time.monotonic(), workers)


def _wait(started: _Started, limit_s: float) -> int | None:
    try:
        return started.process.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        return _stop(started.process, Timeouts().teardown_s)


def _stop(process: subprocess.Popen[bytes], grace_s: float) -> int | None:
    """Interrupt a run (pytest then tears its mesh down), and kill it by PID if it does not end in time."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _limit_s(run: Run, timeouts: Timeouts, workers: int) -> float:
    """How long a run may take before it is stopped as hung: bringing the mesh up and down, and for each
    round of checks (``workers`` at a time; the catalogue counts as 40) four consistency budgets, a forward
    batch and a load run's grace, more than any check waits."""
    rounds = max(1, -(-(len(run.checks) or 40) // max(1, workers)))
    per_round = 4 * timeouts.consistency_s + timeouts.forward_s + timeouts.load_grace_s
    return timeouts.mesh_up_s + timeouts.teardown_s + rounds * per_round


def _summary(plan: SelftestPlan, run: Run, report: Mapping[str, Mapping[str, Any]] | None) -> str:
    if report is None:
        return "no report (see its meshconf.log)"
    if run.clean:
        statuses = [str(c["status"]) for c in report.values()]
        counts = ", ".join(f"{statuses.count(s)} {s}" for s in Status
                           if statuses.count(s))
        bad = [(check, entry) for check, entry in sorted(report.items())
               if entry["status"] in (Status.FAILED, Status.BROKEN)]
        return counts + "".join(f"\n    {check} {entry['status']}: {_first_line(entry.get('message'))}"
                                for check, entry in bad)
    catch = plan.catches[run.rows[0]]
    verdicts = [CheckVerdict.from_report(c, run.topology, catch.checks[c], report) for c in run.checks]
    missed = [v.why_not() for v in verdicts if not v.caught]
    caught = sum(v.caught for v in verdicts)
    return f"caught by {caught}/{len(verdicts)}" + "".join(f"\n    {m}" for m in missed)


def _first_line(message: object) -> str:
    lines = str(message or "").strip().splitlines()
    return lines[0][:300] if lines else ""


def _judge(plan: SelftestPlan, runs: list[Run],
           finished: Mapping[str, tuple[int | None, dict[str, dict[str, Any]] | None]]) -> SelftestResult:
    claimed = plan.claimed
    clean_reports = [(r.topology, *finished.get(r.name, (None, None))) for r in runs if r.clean]
    clean = judge_clean(clean_reports, claimed)
    report_of: dict[tuple[int, str], dict[str, dict[str, Any]] | None] = {}
    for run in runs:
        for index in run.rows:
            report_of.update({(index, check): finished.get(run.name, (None, None))[1] for check in run.checks})
    verdicts: dict[str, list[CheckVerdict]] = {}
    for index, catch in enumerate(plan.catches):
        verdicts.setdefault(catch.defect, []).extend(
            CheckVerdict.from_report(check, catch.topology, expected, report_of.get((index, check)))
            for check, expected in catch.checks.items())
    defects = tuple(DefectVerdict(name, plan.defects.get(name, ""), tuple(found)) for name, found in verdicts.items())
    ran = clean.checks if any(report is not None for _, _, report in clean_reports) else tuple(plan.catalogue)
    return SelftestResult(clean, defects, tuple(ran))
