"""Distributed Locust in a cluster (kind / existing providers): the manifests, and the result they hand back.

``workloads/locust/kubernetes/locust-distributed.yaml`` is a master Job and a worker Deployment; the
locustfile and the run's plan go in through a ConfigMap, and the master hands the result back through
another (``meshconf-locust-results``): ``result.json`` (the encoded HDR histograms, merged from every
worker), Locust's CSV statistics and its gzipped HTML report. A provider applies :func:`distributed_manifests`,
waits for the master Job to complete, reads the results ConfigMap and calls :func:`result_from_configmap`,
which gives the same LoadResult as a local run.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import string
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from conformance.errors import EnvironmentBroken, ProviderError
from conformance.load.locust_process import locustfile_source, result_of_locust
from conformance.load.profile import HttpTarget, LoadProfile
from conformance.load.result import LoadResult

__all__ = ["HDRHISTOGRAM", "LOCUST_IMAGE", "LOCUST_VERSION", "distributed_manifests", "manifest_source",
           "result_from_configmap"]

LOCUST_VERSION = "2.47.0"
"""The Locust version meshconf is tested with (the official image ``locustio/locust:<version>``)."""
HDRHISTOGRAM = "hdrhistogram==0.10.8"
"""The locustfile's one dependency the official image lacks."""
LOCUST_IMAGE = f"meshconf/locust:{LOCUST_VERSION}-hdrhistogram-0.10.8"
"""The official image plus ``HDRHISTOGRAM``, built from ``workloads/locust/kubernetes/Dockerfile`` (the kind
provider builds it on the host and loads it into every cluster; elsewhere, build and push it yourself)."""
REPORT_DRAIN_S = 4.0
"""The master's wait for the workers' last reports (as in the locustfile)."""


def manifest_source() -> Path:
    """``workloads/locust/kubernetes/locust-distributed.yaml``, from the repository or the wheel."""
    repo = Path(__file__).resolve().parents[2] / "workloads" / "locust" / "kubernetes" / "locust-distributed.yaml"
    if repo.is_file():
        return repo
    bundled = Path(str(resources.files("conformance") / "_bundled" / "locust-distributed.yaml"))
    if bundled.is_file():
        return bundled
    raise ProviderError("locust-distributed.yaml is missing: reinstall meshconf")


def distributed_manifests(namespace: str, target: HttpTarget, profile: LoadProfile, workers: int, *,
                          image: str = LOCUST_IMAGE) -> list[dict[str, Any]]:
    """The documents of one distributed run: ``workers`` Locust workers load ``target`` at ``profile``.

    ``target`` is addressed from inside the cluster (e.g. ``HttpTarget("server.ns.svc.cluster.local",
    8080)``, or an ingress gateway's service). Apply them all; the master Job runs once.
    """
    if workers < 1 or profile.users < workers:
        raise ProviderError(f"a distributed run needs 1 <= workers <= users; got {workers} workers for "
                            f"{profile.users} users")
    run_time_s = math.ceil(profile.planned_s + REPORT_DRAIN_S + 10)
    variables = {
        "namespace": namespace, "image": image, "workers": str(workers),
        "users": str(profile.users), "spawn_rate": f"{profile.spawn_rate_per_s:g}", "run_time": f"{run_time_s}s",
        "host": target.base_url, "deadline_s": str(run_time_s + 300),  # + image pull and worker start-up
    }
    docs = [d for d in yaml.safe_load_all(string.Template(manifest_source().read_text()).substitute(variables))
            if d is not None]
    plan = {
        "path": target.path, "host_header": target.host, "name": target.label or None,
        "rate_rps": profile.rate_rps, "users": profile.users, "warmup_s": profile.warmup_s,
        "duration_s": profile.duration_s, "timeout_s": profile.timeout_s,
        "result": "/results/result.json", "window": "/results/window.json",
    }
    for doc in docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "meshconf-locust":
            doc["data"] = {"locustfile.py": locustfile_source().read_text(), "plan.json": json.dumps(plan, indent=1)}
    return docs


def result_from_configmap(configmap: Mapping[str, Any], target: HttpTarget, profile: LoadProfile, out_dir: Path,
                          *, label: str = "") -> LoadResult:
    """The LoadResult a distributed run handed back in ``meshconf-locust-results`` (the object as the API
    returns it). Locust's CSV and HTML report are written to ``out_dir`` and listed as artifacts.

    Raises EnvironmentBroken when the master wrote no complete result.
    """
    data = configmap.get("data") or {}
    if "result.json" not in data:
        raise EnvironmentBroken("the distributed Locust run handed back no result (see the master Job's log)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in data.items():
        (out_dir / Path(name).name).write_text(text)
    for name, encoded in (configmap.get("binaryData") or {}).items():
        if name.endswith(".gz"):
            (out_dir / Path(name).name.removesuffix(".gz")).write_bytes(gzip.decompress(base64.b64decode(encoded)))
    result = json.loads(data["result.json"])
    if not result.get("complete"):
        raise EnvironmentBroken("the distributed Locust run ended before its measured window closed")
    return result_of_locust(result, target, profile, out_dir, label=label or target.label or str(target))
