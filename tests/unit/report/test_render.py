"""meshconf report, without Node.js: the Allure config it writes, stripping Google Tag Manager, the render flow
against a stand-in npx, the missing-Node message, and the 127.0.0.1 server. The real Allure CLI is exercised in
tests/report/test_allure_render.py."""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from conformance.errors import EnvironmentBroken, UsageError
from conformance.report.allure import CATEGORIES
from conformance.report.render import (
    allure_config,
    failure_summary,
    render_report,
    report_name,
    report_server,
    strip_analytics,
)
from tests.unit.report.crafted import RUN, snapshot, write_out

# The end of the page Allure 3.18's awesome plugin writes (plugin-awesome/dist/generators.js), abridged.
ALLURE_PAGE = """<!DOCTYPE html>
<html dir="ltr" lang="en">
<head>
    <meta charset="utf-8">
    <title> meshconf </title>
    <script>
      window.allureReportOptions = {"reportName":"meshconf"}
    </script>
</head>
<body>
    <div id="app"></div>
    <script>
      window.allure = window.allure || {};
    </script>
    <script   src="data:text/javascript;base64,KGZ1bmN0aW9uKCl7fSkoKQ=="></script>
    <script async src="https://www.googletagmanager.com/gtag/js?id=G-LNDJ3J7WT0"></script>
    <script>
        window.dataLayer = window.dataLayer || [];
        function gtag(){dataLayer.push(arguments);}
        gtag('js', new Date());
        gtag('config', 'G-LNDJ3J7WT0', {
          "report": "awesome",
          "allureVersion": "3.18.0",
          "reportUuid": "12b83dfd-9596-41ed-b8f2-873b7f809c73",
          "single_file": "true"
        });
    </script>

    <script async>
      window.allureReportDataReady = false;
    </script>
</body>
</html>
"""


def test_report_name_says_what_was_tested_where_and_which_run() -> None:
    assert report_name(RUN) == "meshconf: meshconf-local (reference, real Envoy) · multi-network · 20260102T030405Z"
    assert report_name({}) == "meshconf conformance report"


@pytest.mark.parametrize("single_file", [True, False])
def test_allure_config_names_the_run_and_declares_the_categories(single_file: bool, tmp_path: Path) -> None:
    config = allure_config(RUN, tmp_path / "report", single_file=single_file)
    assert config["name"] == report_name(RUN)
    assert config["output"] == str(tmp_path / "report")
    awesome = config["plugins"]["awesome"]["options"]
    assert awesome["singleFile"] is single_file
    assert awesome["reportName"] == report_name(RUN)
    assert awesome["groupBy"] == ["epic", "feature"]  # area, then check id
    # Allure 3 ignores categories.json: the same categories, in the config's own form
    assert config["categories"] == [
        {"name": CATEGORIES[0]["name"], "matchers": {"statuses": ["failed"]}},
        {"name": CATEGORIES[1]["name"], "matchers": {"statuses": ["broken"]}},
        {"name": CATEGORIES[2]["name"], "matchers": {"statuses": ["skipped"]}},
    ]
    assert config["categories"][0]["name"].startswith("Non-conformance")
    assert config["categories"][1]["name"].startswith("Environment broken")
    assert set(config) <= {"name", "output", "plugins", "categories"}  # fields Allure 3.18 accepts


def test_strip_analytics_removes_both_tag_manager_scripts_and_nothing_else() -> None:
    html, removed = strip_analytics(ALLURE_PAGE)
    assert removed == 2
    assert "googletagmanager" not in html and "gtag" not in html and "dataLayer" not in html
    for kept in ("window.allureReportOptions", "window.allure = window.allure", "data:text/javascript;base64,",
                 "window.allureReportDataReady", '<div id="app"></div>', "</html>"):
        assert kept in html
    assert html.count("<script") == html.count("</script>") == 4
    assert strip_analytics(html) == (html, 0)


# -- the render flow, against a stand-in for npx ------------------------------------------------------------

FAKE_NPX = """#!{python}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
output = Path(args[args.index("--output") + 1])
config = Path(args[args.index("--config") + 1])
Path({record!r}).write_text(json.dumps({{"argv": args, "cwd": os.getcwd(), "configPath": str(config),
                                         "config": json.loads(config.read_text())}}))
{behaviour}
"""
BEHAVIOURS = {
    "renders": "output.mkdir()\n(output / 'index.html').write_text({page!r})\n(output / 'data').mkdir()\n"
               "(output / 'data' / 'note.txt').write_text('an attachment may mention googletagmanager')",
    "fails": "print('Error: Cannot find package @allurereport/plugin-awesome', file=sys.stderr)\nsys.exit(1)",
    "phones home from its script": "output.mkdir()\n(output / 'index.html').write_text('<html></html>')\n"
                                   "(output / 'app.js').write_text('load(\"https://www.googletagmanager.com/x\")')",
}


def _fake_node(tmp_path: Path, behaviour: str) -> tuple[dict[str, str], Path]:
    """A PATH holding only a stand-in ``npx`` (and ``node``); returns (env, the file npx records its call in)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "npx-call.json"
    npx = bin_dir / "npx"
    npx.write_text(FAKE_NPX.format(python=sys.executable, record=str(record),
                                   behaviour=BEHAVIOURS[behaviour].format(page=ALLURE_PAGE)))
    (bin_dir / "node").write_text("#!/bin/sh\nexit 0\n")
    for script in (npx, bin_dir / "node"):
        script.chmod(0o755)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path)}, record


def test_render_runs_pinned_allure_with_a_temporary_config_and_strips_tag_manager(tmp_path: Path) -> None:
    out = write_out(tmp_path / "out")
    (out / "allure-report").mkdir()
    (out / "allure-report" / "stale.html").write_text("from the previous render")
    before = snapshot(out)
    env, record = _fake_node(tmp_path, "renders")

    index = render_report(out, single_file=True, env=env)

    assert index == out / "allure-report" / "index.html"
    assert "googletagmanager" not in index.read_text() and "window.allureReportDataReady" in index.read_text()
    assert not (out / "allure-report" / "stale.html").exists()  # replaced, not merged
    assert snapshot(out) == before  # nothing in OUT but allure-report/ was written
    call: dict[str, Any] = json.loads(record.read_text())
    assert call["argv"][:4] == ["--yes", "allure@3.18.0", "generate", str((out / "allure-results").resolve())]
    assert Path(call["configPath"]).parent == Path(call["cwd"])  # the config sits in a temporary directory...
    assert not Path(call["cwd"]).exists()  # ...that is gone afterwards
    assert out.resolve() not in Path(call["cwd"]).resolve().parents
    assert call["config"]["name"] == report_name(json.loads((out / "conformance-report.json").read_text())["run"])
    assert call["config"]["plugins"]["awesome"]["options"]["singleFile"] is True


def test_a_failed_render_keeps_the_previous_report(tmp_path: Path) -> None:
    out = write_out(tmp_path / "out")
    (out / "allure-report").mkdir()
    (out / "allure-report" / "index.html").write_text("previous")
    env, _ = _fake_node(tmp_path, "fails")
    with pytest.raises(EnvironmentBroken, match=r"allure@3.18.0 generate` failed \(exit 1\): .*plugin-awesome"):
        render_report(out, env=env)
    assert (out / "allure-report" / "index.html").read_text() == "previous"


def test_a_report_that_still_phones_home_is_refused(tmp_path: Path) -> None:
    out = write_out(tmp_path / "out")
    env, _ = _fake_node(tmp_path, "phones home from its script")
    with pytest.raises(EnvironmentBroken, match=r"still loads Google Tag Manager .*app\.js"):
        render_report(out, env=env)
    assert not (out / "allure-report").exists()


def test_without_node_report_exits_3_and_says_how_to_get_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = write_out(tmp_path / "out")
    empty = tmp_path / "no-node"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert main(["report", str(out)]) == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "needs Node.js with npx" in err and "https://nodejs.org/" in err
    assert "conformance-report.md and .json are already there" in err
    assert not (out / "allure-report").exists()


def test_an_out_directory_without_results_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="holds no Allure results"):
        render_report(tmp_path)


def test_the_report_server_listens_on_loopback_only(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html>report</html>")
    server = report_server(tmp_path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP proxy
        with direct.open(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.read() == b"<html>report</html>"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_failure_summary_keeps_what_npm_says_and_drops_stack_and_log_path() -> None:
    npm_output = """npm error code ECONNREFUSED
npm error syscall connect
npm error FetchError: request to http://127.0.0.1:9/allure failed, reason: connect ECONNREFUSED 127.0.0.1:9
npm error     at ClientRequest.<anonymous> (/usr/lib/node_modules/npm/node_modules/minipass-fetch/lib/index.js:130:14)
npm error }
npm error A complete log of this run can be found in: /root/.npm/_logs/2026-debug-0.log
"""
    assert failure_summary(npm_output) == ("npm error code ECONNREFUSED | npm error syscall connect | npm error "
                                           "FetchError: request to http://127.0.0.1:9/allure failed, reason: "
                                           "connect ECONNREFUSED 127.0.0.1:9")
    assert failure_summary("") == "no output"
