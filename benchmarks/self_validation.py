"""Self-validation benchmark: what ``meshconf selftest`` proves, and what it costs on this machine.

Runs the self-validation plan (``conformance.selftest.CATCHES``: all rows, or only ``--defect NAME ...`` /
``--topology T``) at the shipped settings, then prints the verdict per defect, the kill rate, and its cost:
wall time per run and per phase (clean runs, load-measuring defect runs alone, the other defect runs side by
side), and the load average before and after. Takes 6-10
minutes on 2 cores for the whole table.

    python benchmarks/self_validation.py [--defect NAME ...] [--topology T] [-n CHECKS_AT_ONCE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from conformance.cli import list_checks  # noqa: E402
from conformance.selftest import CATCHES, SelftestPlan, render_text, run_selftest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--defect", action="append", default=None, help="only this defect's rows (repeatable)")
    parser.add_argument("--topology", default=None, help="only the rows on this topology")
    parser.add_argument("-n", dest="parallel", type=int, default=None, help="checks at once side by side")
    parser.add_argument("--out", default=None, help="keep every run's reports here (default: a temporary directory)")
    args = parser.parse_args()
    catalogue = {info.id: str(info.area) for info in list_checks(REPO / "suites")}
    catches = [c for c in CATCHES if args.defect is None or c.defect in args.defect]
    plan = SelftestPlan.build(catalogue, topology=args.topology, parallel=args.parallel, catches=catches)

    started = time.monotonic()
    marks: list[tuple[float, str]] = []

    def progress(line: str) -> None:
        marks.append((time.monotonic() - started, line))
        print(f"{time.monotonic() - started:6.0f}s  {line}", flush=True)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="meshconf-selftest-") as tmp:
        result = run_selftest(plan, Path(args.out or tmp), progress)
    total = time.monotonic() - started
    print()
    print(render_text(result), end="")
    runs = plan.runs()
    side = next((t for t, line in marks if "side by side" in line), total)
    clean_end = next((t for t, line in marks if line.startswith(f"[{sum(r.clean for r in runs)}/")), 0.0)
    print(f"runs: {len(runs)} ({sum(r.clean for r in runs)} clean, {sum(r.alone for r in runs)} load-measuring "
          f"alone, {sum(not (r.clean or r.alone) for r in runs)} side by side at {plan.parallel} checks at once)")
    print(f"wall: {total:.0f} s in all; clean runs {clean_end:.0f} s, load-measuring defect runs "
          f"{side - clean_end:.0f} s, side by side {total - side:.0f} s")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    print(f"exit code meshconf selftest would give: {result.exit_code}")


if __name__ == "__main__":
    main()
