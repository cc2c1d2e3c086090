"""``meshconf report OUT``: render OUT/allure-results into OUT/allure-report with the Allure 3 CLI.

The CLI is the npm package ``allure``, pinned to :data:`ALLURE_PACKAGE` and run through ``npx --yes``, so
Node.js is the only thing a user installs. Allure 3 reads its settings from a config file and ignores
``categories.json``, so meshconf writes an ``allurerc.json`` into a temporary directory (never the user's
working directory) with the report's name, the awesome plugin (``singleFile``: one HTML file that opens from
file://) and the categories of :data:`conformance.report.allure.CATEGORIES`.

The report is generated into a temporary directory and only then moved to OUT/allure-report: nothing else in
OUT is written, and a failed render leaves the previous report as it was. Allure's page embeds a Google Tag
Manager script; it is removed from every page, and a report that still mentions it is refused, because a
conformance report must not phone home when it is opened.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from conformance.errors import EnvironmentBroken, UsageError
from conformance.report.allure import CATEGORIES
from conformance.report.model import Report

__all__ = ["ALLURE_PACKAGE", "allure_config", "failure_summary", "render_report", "report_name", "report_server",
           "strip_analytics"]

ALLURE_PACKAGE = "allure@3.18.0"
ANALYTICS_HOST = "googletagmanager"
RENDER_TIMEOUT_S = 600.0
"""The first render downloads the Allure CLI (about 160 npm packages); later ones take a few seconds."""

_SCRIPT = re.compile(r"[ \t]*<script\b[^>]*>.*?</script>[ \t]*\n?", re.DOTALL | re.IGNORECASE)


def report_name(run: Mapping[str, Any]) -> str:
    """The title of the report: what was tested, on which topology, and which run."""
    parts = [str(run[key]) for key in ("implementation", "topology", "runId") if run.get(key)]
    return "meshconf: " + " · ".join(parts) if parts else "meshconf conformance report"


def allure_config(run: Mapping[str, Any], output: Path, *, single_file: bool) -> dict[str, Any]:
    """The allurerc.json for a run: name, output, the awesome plugin and meshconf's categories."""
    name = report_name(run)
    return {
        "name": name,
        "output": str(output),
        "plugins": {
            "awesome": {
                "options": {"reportName": name, "singleFile": single_file, "groupBy": ["epic", "feature"]},
            },
        },
        # Allure 3's own form of a category; the same names and statuses as categories.json (Allure 2)
        "categories": [{"name": c["name"], "matchers": {"statuses": list(c["matchedStatuses"])}}
                       for c in CATEGORIES],
    }


def strip_analytics(html: str) -> tuple[str, int]:
    """Remove every <script> element that loads or calls Google Tag Manager; returns (html, scripts removed)."""
    removed = 0

    def keep_or_drop(match: re.Match[str]) -> str:
        nonlocal removed
        if ANALYTICS_HOST in match.group(0) or "gtag(" in match.group(0):
            removed += 1
            return ""
        return match.group(0)

    return _SCRIPT.sub(keep_or_drop, html), removed


def render_report(out: Path, *, single_file: bool = True, env: Mapping[str, str] | None = None) -> Path:
    """Render ``out/allure-results`` into ``out/allure-report``; returns the report's index.html.

    Raises UsageError when ``out`` holds no Allure results, and EnvironmentBroken when Node.js (npx) is missing
    or the Allure CLI fails.
    """
    results = out / "allure-results"
    if not results.is_dir() or not any(results.glob("*-result.json")):
        raise UsageError(f"{results} holds no Allure results (they are written by `meshconf run --out {out}`)")
    environment = dict(os.environ if env is None else env)
    npx = _npx(environment, out)
    run = _run_metadata(out)
    with tempfile.TemporaryDirectory(prefix="meshconf-allure-") as scratch:
        generated = Path(scratch) / "allure-report"
        config = Path(scratch) / "allurerc.json"
        config.write_text(json.dumps(allure_config(run, generated, single_file=single_file), indent=1))
        command = [npx, "--yes", ALLURE_PACKAGE, "generate", str(results.resolve()), "--config", str(config),
                   "--output", str(generated)]
        environment.update(npm_config_update_notifier="false", npm_config_fund="false", npm_config_audit="false",
                           NO_COLOR="1")
        try:
            done = subprocess.run(command, cwd=scratch, env=environment, capture_output=True, text=True,
                                  timeout=RENDER_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise EnvironmentBroken(f"`npx {ALLURE_PACKAGE} generate` did not finish in {RENDER_TIMEOUT_S:g} s "
                                    "(the first run downloads the Allure CLI from the npm registry)") from None
        index = generated / "index.html"
        if done.returncode != 0 or not index.is_file():
            raise EnvironmentBroken(f"`npx {ALLURE_PACKAGE} generate` failed (exit {done.returncode}): "
                                    + failure_summary(done.stderr or done.stdout))
        _remove_analytics(generated)
        target = out / "allure-report"
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        shutil.move(str(generated), str(target))
    return target / "index.html"


def failure_summary(output: str, lines: int = 3) -> str:
    """The first lines of npm's or Allure's error output that say something (no stack frames, no log path)."""
    said = [line.strip() for line in output.splitlines()
            if line.strip() not in ("", "npm error", "npm error }") and "A complete log of this run" not in line
            and not line.strip().removeprefix("npm error").strip().startswith("at ")]
    return " | ".join(said[:lines]) or "no output"


def report_server(report_dir: Path, port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for a rendered report, bound to 127.0.0.1 only (not started: call serve_forever)."""

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    if not (report_dir / "index.html").is_file():
        raise UsageError(f"{report_dir} holds no rendered report (run `meshconf report` first)")
    return ThreadingHTTPServer(("127.0.0.1", port), partial(QuietHandler, directory=str(report_dir)))


def _npx(env: Mapping[str, str], out: Path) -> str:
    path = env.get("PATH", "")
    npx = shutil.which("npx", path=path)
    if npx is None or shutil.which("node", path=path) is None:
        raise EnvironmentBroken(
            f"the HTML report needs Node.js with npx, to run the Allure 3 CLI ({ALLURE_PACKAGE}): install Node.js "
            "20 or later (https://nodejs.org/, or your package manager, e.g. `apt-get install nodejs npm`) and run "
            f"`meshconf report {out}` again; {out / 'conformance-report.md'} and .json are already there")
    return npx


def _run_metadata(out: Path) -> dict[str, Any]:
    path = out / "conformance-report.json"
    if not path.is_file():
        return {}  # a run that broke before writing its report still has Allure results worth reading
    return Report.load(path).run


def _remove_analytics(report_dir: Path) -> None:
    """Strip Google Tag Manager from every page Allure wrote, and refuse a report that still has it."""
    for page in report_dir.glob("*.html"):
        html, removed = strip_analytics(page.read_text(encoding="utf-8"))
        if removed:
            page.write_text(html, encoding="utf-8")
    # Allure's own files sit at the top level (data/ holds the run's attachments, which may say anything)
    left = [p.name for p in report_dir.iterdir()
            if p.suffix in (".html", ".js") and ANALYTICS_HOST in p.read_text(encoding="utf-8", errors="replace")]
    if left:
        raise EnvironmentBroken(f"the Allure report still loads Google Tag Manager after stripping ({', '.join(left)});"
                                f" {ALLURE_PACKAGE} changed its page: nothing was written to allure-report/")
