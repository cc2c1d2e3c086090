"""Flakiness: run the catalogue N times on one topology; per check, how often it passed, failed, broke or was
skipped, and the spread (min / median / max) of its key measurement (the first one it lists with a budget; its
other measurements with a budget follow on lines of their own: for a latency check the first is the achieved
rate, the p99 comes after).

    python benchmarks/flake.py --runs 10 --topology multi-network [-k EXPR] [-n 0] [-- more meshconf run flags]

A check is flaky when its runs disagree; for each one the first line of every message of a run that did not
pass is printed, so the cause shows. Each run is a real ``meshconf run`` (its own local mesh, brought up and
torn down), one after another, at the shipped settings unless flags say otherwise. The load average is
printed before and after: on a shared 2-core machine it is the first suspect. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STATUSES = ("passed", "failed", "broken", "skipped")
RUN_TIMEOUT_S = 3600
"""One catalogue run takes about 5-10 minutes on 2 cores; an hour means it hung."""


def run_once(out: Path, topology: str, select: str | None, workers: str,
             extra: list[str]) -> tuple[int, dict[str, Any]]:
    """One ``meshconf run``: its exit code and its report (or a stand-in saying why there is none)."""
    argv = [sys.executable, "-m", "conformance.cli", "run", "--out", str(out), "--topology", topology, "-n", workers]
    if select:
        argv += ["-k", select]
    done = subprocess.run([*argv, *extra], cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          check=False)
    try:
        report: dict[str, Any] = json.loads((out / "conformance-report.json").read_text())
    except (OSError, ValueError):
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        report = {"run": {"error": f"no report (exit {done.returncode}): {tail}"}, "checks": []}
    return done.returncode, report


def budgeted(check: dict[str, Any]) -> list[dict[str, Any]]:
    """The check's measurements that have a budget, in its order: the first is its key measurement."""
    return [m for m in check.get("measurements") or [] if m.get("budget") is not None]


def spread(values: list[float]) -> str:
    if not values:
        return ""
    return f"{min(values):.3g} / {statistics.median(values):.3g} / {max(values):.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="how many catalogue runs (default 10)")
    parser.add_argument("--topology", default="multi-primary", help="multi-primary (default), multi-network, ...")
    parser.add_argument("-k", dest="select", default=None, help="only checks matching this pytest -k expression")
    parser.add_argument("-n", dest="workers", default="0", help="pytest-xdist workers per run (default 0)")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="-- then more `meshconf run` flags")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    values: dict[str, dict[str, list[float]]] = defaultdict(dict)
    """check id -> measurement (as shown, with unit and budget) -> its value in each run, in the check's order."""
    why: dict[str, list[str]] = defaultdict(list)
    run_errors: list[str] = []
    load_before = os.getloadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="meshconf-flake-") as tmp:
        for n in range(1, args.runs + 1):
            code, report = run_once(Path(tmp) / f"run-{n}", args.topology, args.select, args.workers, extra)
            counts = Counter(c["status"] for c in report["checks"])
            print(f"run {n}/{args.runs}: exit {code}, " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
                  + f"; load average {os.getloadavg()[0]:.1f}", flush=True)
            if report["run"].get("error"):
                run_errors.append(f"run {n}: {report['run']['error']}")
            for check in report["checks"]:
                statuses[check["id"]][check["status"]] += 1
                if check["status"] in ("failed", "broken") and check.get("message"):
                    why[check["id"]].append(f"run {n} {check['status']}: {check['message'].splitlines()[0][:200]}")
                for m in budgeted(check):
                    shown = f"{m['name']} ({m.get('unit', '')}, budget {m.get('comparison', '<=')} {m['budget']:g})"
                    values[check["id"]].setdefault(shown, []).append(float(m["value"]))
    minutes = (time.monotonic() - started) / 60
    print(f"\nflake: {args.runs} runs of {args.topology}" + (f" (-k {args.select})" if args.select else "")
          + f", {minutes:.0f} min; load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    width = max((len(c) for c in statuses), default=5)
    print(f"{'check':<{width}}  passed failed broken skipped  key measurement: min / median / max")
    for check_id in sorted(statuses):
        counts = statuses[check_id]
        cells = "".join(f"{counts[s]:>7}" for s in STATUSES)
        lines = [f"{name}: {spread(found)}" for name, found in values[check_id].items()]
        print(f"{check_id:<{width}}{cells}" + (f"  {lines[0]}" if lines else ""))
        for line in lines[1:]:
            print(f"{'':<{width + 30}}{line}")
    flaky = sorted(c for c, counts in statuses.items() if len(counts) > 1 or sum(counts.values()) < args.runs)
    steady_red = sorted(c for c, counts in statuses.items() if c not in flaky and set(counts) & {"failed", "broken"})
    print(f"\nflaky (runs disagree): {', '.join(flaky) if flaky else 'none'} ({len(flaky)} of {len(statuses)} checks)")
    if steady_red:
        print(f"never passed: {', '.join(steady_red)}")
    for check_id in flaky + steady_red:
        for line in why[check_id]:
            print(f"  {check_id}: {line}")
    for line in run_errors:
        print(f"  {line}")


if __name__ == "__main__":
    main()
