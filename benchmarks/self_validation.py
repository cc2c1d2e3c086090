"""Self-validation report: run the whole catalogue against the local mesh with each deliberate defect.

Prints, per defect, the checks that failed (and whether the ones ``CATCHES`` says must catch it did), then
the kill rate: defects caught by at least one check / defects. Takes a few minutes per defect on 2 cores.

    python benchmarks/self_validation.py [--defect NAME ...] [-n 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from conformance.providers.local.defects import Defect  # noqa: E402
from tests.selfvalidation.test_defects import CATCHES, NOT_YET_CAUGHT, Catch  # noqa: E402


def run(defect: Defect, topology: str, workers: str, out: Path, extra: tuple[str, ...]) -> dict[str, str]:
    subprocess.run([sys.executable, "-m", "conformance.cli", "run", "--out", str(out), "--topology", topology,
                    "--mesh-defect", defect.value, "--timeout", "consistency_s=4", "-n", workers, *extra],
                   cwd=REPO, capture_output=True, text=True, timeout=1800)
    report = out / "conformance-report.json"
    if not report.exists():
        return {}
    return {c["id"]: c["status"] for c in json.loads(report.read_text())["checks"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--defect", action="append", default=None)
    parser.add_argument("-n", dest="workers", default="2")
    args = parser.parse_args()
    defects = [Defect(d) for d in args.defect] if args.defect else list(Defect)
    caught = 0
    with tempfile.TemporaryDirectory(prefix="meshconf-selfval-") as tmp:
        for defect in defects:
            any_failed = False
            for catch in CATCHES.get(defect, (Catch(frozenset()),)):
                out = Path(tmp) / f"{defect.value}-{catch.topology}"
                statuses = run(defect, catch.topology, args.workers, out, catch.args)
                failed = sorted(c for c, s in statuses.items() if s == "failed")
                broken = sorted(c for c, s in statuses.items() if s == "broken")
                verdict = "caught" if failed else "NOT CAUGHT"
                any_failed |= bool(failed)
                missing = sorted(catch.checks - set(failed))
                print(f"{defect.value:<28} {verdict:<10} on {catch.topology}: {len(failed)} checks failed: "
                      + ", ".join(failed))
                if missing:
                    print(f"{'':<28} expected but did not fail: {', '.join(missing)}")
                if broken:
                    print(f"{'':<28} broken (environment, not a verdict): {', '.join(broken)}")
            caught += any_failed
            if defect in NOT_YET_CAUGHT:
                print(f"{'':<28} (listed as not yet caught by a check)")
    print(f"kill rate: {caught}/{len(defects)} defects caught ({100 * caught / max(1, len(defects)):.0f}%)")


if __name__ == "__main__":
    main()
