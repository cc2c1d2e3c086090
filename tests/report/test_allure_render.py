"""meshconf report with the real Allure 3 CLI (allure@3.18.0 through npx).

Needs Node.js with npx on PATH and the npm registry: the CLI is installed once per test session into an npm
cache under the session's temporary directory, never the user's. Skipped, with the reason, when either is
missing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conformance.report.allure import CATEGORIES
from conformance.report.render import ALLURE_PACKAGE, failure_summary, render_report, report_name, report_server
from tests.unit.report.crafted import RESULTS, RUN, snapshot, write_out

# a single-file report carries every data file inline as d("path", "<base64>")
_EMBEDDED = re.compile(r'd\("([^"]+)","([A-Za-z0-9+/=]*)"\)')


@pytest.fixture(scope="session")
def npm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if shutil.which("npx") is None or shutil.which("node") is None:
        pytest.skip("Node.js with npx is not on PATH, so the Allure 3 CLI cannot run here")
    env = {**os.environ, "npm_config_cache": str(tmp_path_factory.mktemp("npm-cache")),
           "npm_config_update_notifier": "false", "npm_config_fetch_retries": "0",  # offline: skip in seconds
           "npm_config_fetch_timeout": "60000"}
    try:
        done = subprocess.run(["npx", "--yes", ALLURE_PACKAGE, "--version"], env=env, capture_output=True,
                              text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip(f"installing {ALLURE_PACKAGE} from the npm registry took over 300 s")
    if done.returncode != 0 or "3.18.0" not in done.stdout:
        pytest.skip(f"{ALLURE_PACKAGE} could not be installed from the npm registry (offline?): "
                    + failure_summary(done.stderr or done.stdout, lines=1))
    return env


def _embedded(html: str) -> dict[str, Any]:
    return {name: json.loads(base64.b64decode(data)) for name, data in _EMBEDDED.findall(html)
            if name.endswith(".json")}


def _categories(categories: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {node["name"]: node["statistic"] for node in categories["nodes"].values() if node["type"] == "category"}


def test_single_file_report_of_crafted_results(tmp_path: Path, npm_env: dict[str, str]) -> None:
    out = write_out(tmp_path / "out")
    before = snapshot(out)

    index = render_report(out, single_file=True, env=npm_env)

    html = index.read_text()
    assert "googletagmanager" not in html and "gtag(" not in html
    assert f"<title> {report_name(RUN)} </title>" in html
    data = _embedded(html)
    tree = json.dumps(data["widgets/tree.json"])
    for _, check_id, area, _, _ in RESULTS:
        assert f'"name": "{area}"' in tree  # epic = area: the first level of the tree
        assert f'"name": "{check_id}"' in tree  # feature = check id: the second
    assert _categories(data["widgets/categories.json"]) == {
        CATEGORIES[0]["name"]: {"total": 1, "failed": 1},
        CATEGORIES[1]["name"]: {"total": 1, "broken": 1},
    }
    environment = {e["name"]: e["values"] for e in data["widgets/allure_environment.json"]}
    assert environment["topology"] == ["multi-network"]
    assert snapshot(out) == before  # the results and reports of the run are untouched


def test_multi_file_report_served_on_loopback(tmp_path: Path, npm_env: dict[str, str]) -> None:
    out = write_out(tmp_path / "out")

    index = render_report(out, single_file=False, env=npm_env)

    assert (index.parent / "widgets" / "tree.json").is_file()  # data files beside the page: it needs HTTP
    assert not any("googletagmanager" in p.read_text(errors="replace") for p in index.parent.glob("*.[hj][ts]*"))
    server = report_server(index.parent)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with direct.open(f"{base}/", timeout=5) as page:
            assert b'<div id="app">' in page.read()
        with direct.open(f"{base}/widgets/tree.json", timeout=5) as tree:
            assert b"failover-on-endpoint-failure" in tree.read()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
