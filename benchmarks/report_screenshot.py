"""Benchmark: render a run's Allure report and open it in headless Chromium, from file:// and with no network.

Renders OUT/allure-results (``meshconf report``, single file), loads index.html in headless Chromium with
every host name unresolvable, checks that the page's script drew every area into the DOM (the data is embedded
as base64, so a name in the DOM means the report rendered), and writes a screenshot. Prints how long each step
took. Needs Node.js (npx) and Chromium (Debian package ``chromium``).

    python benchmarks/report_screenshot.py OUT [--png report.png] [--chromium chromium]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conformance.report.render import render_report

# the flags measured in DESIGN.md: no sandbox (root in a container), no GPU, no background traffic, no DNS
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--virtual-time-budget=10000",
]


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a run's --out directory")
    parser.add_argument("--png", type=Path, default=Path("report.png"), help="where the screenshot goes")
    parser.add_argument("--chromium", default="chromium", help="the Chromium binary")
    args = parser.parse_args()
    if shutil.which(args.chromium) is None:
        print(f"{args.chromium} is not on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 3

    started = time.perf_counter()
    index = render_report(args.out, single_file=True)
    rendered = time.perf_counter()
    print(f"render      {rendered - started:6.1f} s  {index} ({index.stat().st_size / 1e6:.1f} MB)")

    labels = [label for p in (args.out / "allure-results").glob("*-result.json")
              for label in json.loads(p.read_text()).get("labels", [])]
    areas = sorted({label["value"] for label in labels if label.get("name") == "epic"})
    checks = sorted({label["value"] for label in labels if label.get("name") == "feature"})
    with tempfile.TemporaryDirectory(prefix="meshconf-chromium-") as profile:
        dom = _chromium(args.chromium, Path(profile) / "dom", "--dump-dom", index.resolve().as_uri()).stdout
        drawn = time.perf_counter()
        # areas are the tree's first level, always drawn; a check id shows once its area is expanded (Allure
        # expands the groups that hold failed or broken checks)
        missing = [area for area in areas if f">{area}<" not in dom]
        print(f"open (DOM)  {drawn - rendered:6.1f} s  areas drawn {len(areas) - len(missing)}/{len(areas)}, "
              f"check ids drawn {sum(c in dom for c in checks)}/{len(checks)}"
              + (f"; missing areas: {', '.join(missing)}" if missing else ""))
        _chromium(args.chromium, Path(profile) / "shot", "--window-size=1400,1000",
                  f"--screenshot={args.png.resolve()}", index.resolve().as_uri())
        print(f"screenshot  {time.perf_counter() - drawn:6.1f} s  {args.png}")
    return 1 if missing or not args.png.is_file() else 0


if __name__ == "__main__":
    sys.exit(main())
