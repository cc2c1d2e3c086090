"""Allure: labels on each check's result, and the run-level files next to the results.

Labels: epic = area, feature = check id, story = description, severity and the title (the check id) are
set by ``@check`` as markers; tags for provider / topology / mesh version on the worker that runs the
check. Run-level files (written once, by the pytest controller): ``environment.properties``,
``categories.json`` (non-conformance vs environment broken; Allure 2 reads it) and ``executor.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import allure

from conformance.check import CheckInfo
from conformance.report.model import Status

if TYPE_CHECKING:
    from conformance.load.result import LoadResult

__all__ = ["CATEGORIES", "attach_load", "label_check", "write_run_files"]

CATEGORIES = [
    {"name": "Non-conformance: the mesh did not behave as Istio specifies", "matchedStatuses": [Status.FAILED.value]},
    {"name": "Environment broken: no verdict (see diagnostics)", "matchedStatuses": [Status.BROKEN.value]},
    {"name": "Skipped: the environment lacks a feature", "matchedStatuses": [Status.SKIPPED.value]},
]


def label_check(info: CheckInfo, run: Mapping[str, Any]) -> None:
    """Tag the running check's Allure result with the run (area, id, story and severity come from @check)."""
    for key in ("provider", "topology", "meshVersion"):
        if run.get(key):
            allure.dynamic.tag(f"{key}:{run[key]}")


_LOAD_FILES = {
    "locust-html": ("Locust report (HTML)", "HTML"),
    "locust-stats-csv": ("Locust statistics (CSV)", "CSV"),
    "locust-failures-csv": ("Locust failures (CSV)", "CSV"),
    "locust-log": ("Locust log", "TEXT"),
}


def attach_load(result: LoadResult, plots: Sequence[Path] = ()) -> None:
    """Attach a load run to the running test's Allure result: its LoadResult JSON, PNG plots, and the
    generator's own files (Locust's HTML report, CSV statistics and log) when there are any."""
    prefix = f"load {result.label}"
    allure.attach(result.to_json(), name=f"{prefix}: result (exact percentiles, timeline)",
                  attachment_type=allure.attachment_type.JSON)
    for plot in plots:
        allure.attach.file(str(plot), name=f"{prefix}: {plot.stem.replace('-', ' ')}",
                           attachment_type=allure.attachment_type.PNG)
    for key, (title, kind) in _LOAD_FILES.items():
        path = result.artifacts.get(key)
        if path and Path(path).is_file():
            allure.attach.file(path, name=f"{prefix}: {title}", attachment_type=getattr(allure.attachment_type, kind))


def write_run_files(results_dir: Path, run: Mapping[str, Any]) -> None:
    """environment.properties, categories.json and executor.json (only on the xdist controller)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    properties = {
        "provider": run.get("provider"), "topology": run.get("topology"),
        "implementation": run.get("implementation"), "mesh.version": run.get("meshVersion"),
        "proxy.version": run.get("proxyVersion"), "kubernetes.version": run.get("kubernetesVersion"),
        "meshconf.version": run.get("meshconfVersion"), "defects": run.get("defects") or None,
    }
    lines = [f"{key}={_escape(str(value))}" for key, value in properties.items() if value not in (None, "")]
    (results_dir / "environment.properties").write_text("\n".join(lines) + "\n")
    (results_dir / "categories.json").write_text(json.dumps(CATEGORIES, indent=1))
    executor = {"name": "meshconf", "type": "meshconf", "buildName": run.get("runId")}
    if os.environ.get("CI"):
        executor["buildUrl"] = os.environ.get("BUILD_URL") or os.environ.get("CI_JOB_URL")
    (results_dir / "executor.json").write_text(json.dumps(executor, indent=1))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")
