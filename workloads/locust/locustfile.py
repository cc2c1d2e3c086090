"""meshconf's locustfile: paced load on one HTTP target, with exact latencies in an HDR histogram.

Run by ``conformance.load`` as its own process (Locust's gevent monkey-patching must never reach the test
runner), or in a cluster as a master and N workers (``workloads/locust/kubernetes/``). Everything it needs is
in a JSON *plan* (``--meshconf-plan PATH`` or ``LOCUST_MESHCONF_PLAN``)::

    {"path": "/", "host_header": "server.ns.svc.cluster.local:8080" | null, "name": "mesh",
     "rate_rps": 500, "users": 10, "warmup_s": 2, "duration_s": 10, "timeout_s": 2,
     "result": "result.json", "window": "window.json"}

The target's address comes from Locust's own ``--host`` (``http://address:port``). Each user sends
``rate_rps / users`` requests per second (constant throughput, self-paced). Once every user is spawned the warm-up
runs for ``warmup_s``; then the measured window opens for ``duration_s``: every request that *starts* inside
it is recorded, from Locust's request event, in microseconds, into an HDR histogram (3 significant digits),
overall and per second of the window. Locust's own statistics are reset when the window opens, so its CSV and
HTML report cover the same requests. When the window closes no new request starts, the ones in flight finish,
``result`` is written (whole, then renamed) and Locust quits.

``window`` is written when the window opens (its wall-clock start), so the process that started the run can
place events (a fault, a failover) on the window's time axis while the load runs.

Distributed: each worker records its own requests and sends its histograms to the master with every
report (``report_to_master``); the master merges them and writes ``result``. The generator's CPU share is
the busiest generator process's CPU time over the window, as a percentage of one core. In a cluster
(``MESHCONF_RESULTS_CONFIGMAP`` set), the master then hands everything back the way the locustfile came
in: it patches that ConfigMap with ``result.json``, Locust's CSV statistics and its gzipped HTML report,
through the Kubernetes API with its service account (``MESHCONF_KUBE_API`` overrides the API address).
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import os
import random
import ssl
import time
import urllib.request
from collections import Counter
from typing import Any

import gevent
from hdrh.histogram import HdrHistogram
from locust import FastHttpUser, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

LOWEST_US = 1
HIGHEST_US = 60_000_000
DIGITS = 3
REPORT_DRAIN_S = 4.0
"""Distributed: how long the master waits after the window for the workers' last reports (they send every 3 s)."""


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def write_json(path: str, data: Any) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as out:
        json.dump(data, out)
    os.replace(temporary, path)


class Recorder:
    """The requests of the measured window, on one generator process (or merged on the master)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.end = 0.0
        self.opened_at = 0.0
        """Wall-clock time the window opened."""
        self.scheduled = False
        self.open = False
        self.closed = False
        self.inflight = 0
        self.cpu_start = 0.0
        self.cpu_pct = 0.0
        self.reset()

    def reset(self) -> None:
        self.histogram = new_histogram()
        self.seconds: dict[int, list[Any]] = {}
        self.requests = 0
        self.errors = 0
        self.error_kinds: Counter[str] = Counter()

    def open_window(self, duration_s: float) -> None:
        self.start = time.perf_counter()
        self.end = self.start + duration_s
        self.opened_at = time.time()
        self.cpu_start = time.process_time()
        self.open = True

    def close_window(self) -> None:
        self.closed = True
        elapsed = time.perf_counter() - self.start
        own = 100.0 * (time.process_time() - self.cpu_start) / max(elapsed, 1e-9)
        self.cpu_pct = max(self.cpu_pct, own)

    def record(self, started: float, latency_us: int, error: str | None) -> None:
        if not self.open or not self.start <= started < self.end:
            return
        value = min(max(latency_us, LOWEST_US), HIGHEST_US)
        self.histogram.record_value(value)
        second = self.seconds.get(int(started - self.start))
        if second is None:
            second = self.seconds[int(started - self.start)] = [0, 0, new_histogram()]
        second[0] += 1
        second[2].record_value(value)
        self.requests += 1
        if error is not None:
            self.errors += 1
            second[1] += 1
            self.error_kinds[error] += 1

    def export(self) -> dict[str, Any]:
        return {
            "histogram": self.histogram.encode().decode(), "requests": self.requests, "errors": self.errors,
            "errorKinds": dict(self.error_kinds),
            "seconds": {str(k): [v[0], v[1], v[2].encode().decode()] for k, v in sorted(self.seconds.items())},
            "cpuPct": self.cpu_pct, "closed": self.closed,
        }

    def absorb(self, data: dict[str, Any]) -> None:
        """Merge another generator's export (a worker's report) into this one."""
        self.histogram.decode_and_add(data["histogram"])
        for key, (requests, errors, encoded) in data["seconds"].items():
            second = self.seconds.setdefault(int(key), [0, 0, new_histogram()])
            second[0] += requests
            second[1] += errors
            second[2].decode_and_add(encoded)
        self.requests += data["requests"]
        self.errors += data["errors"]
        self.error_kinds.update(data["errorKinds"])
        self.cpu_pct = max(self.cpu_pct, data["cpuPct"])


PLAN: dict[str, Any] = {}
HEADERS: dict[str, str] = {}
RECORDER = Recorder()
ENVIRONMENT: list[Environment] = []


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument("--meshconf-plan", type=str, env_var="LOCUST_MESHCONF_PLAN", default="",
                        help="meshconf: the JSON plan of this load run")


@events.init.add_listener
def _load_plan(environment: Environment, **_: Any) -> None:
    path = environment.parsed_options.meshconf_plan if environment.parsed_options else ""
    if not path:
        raise SystemExit("meshconf locustfile: --meshconf-plan PATH (or LOCUST_MESHCONF_PLAN) is required")
    with open(path) as plan:
        PLAN.update(json.load(plan))
    ENVIRONMENT.append(environment)
    if PLAN.get("host_header"):
        HEADERS["Host"] = PLAN["host_header"]
    MeshconfUser.period_s = int(PLAN["users"]) / float(PLAN["rate_rps"])
    MeshconfUser.network_timeout = MeshconfUser.connection_timeout = float(PLAN["timeout_s"])
    if isinstance(environment.runner, WorkerRunner):
        environment.events.report_to_master.add_listener(_report_to_master)
    if isinstance(environment.runner, MasterRunner):
        environment.events.worker_report.add_listener(_worker_report)


def _report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    data["meshconf"] = RECORDER.export()
    RECORDER.reset()


def _worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    if "meshconf" in data:
        RECORDER.absorb(data["meshconf"])


@events.request.add_listener
def _on_request(response_time: float, exception: BaseException | None = None, **_: Any) -> None:
    started = time.perf_counter() - response_time / 1000
    error = None if exception is None else f"{type(exception).__name__}: {str(exception)[:80]}"
    RECORDER.record(started, round(response_time * 1000), error)


@events.spawning_complete.add_listener
def _on_spawned(user_count: int, **_: Any) -> None:
    if ENVIRONMENT and not RECORDER.scheduled:
        RECORDER.scheduled = True
        gevent.spawn(_measure, ENVIRONMENT[0])


def _measure(environment: Environment) -> None:
    """Warm-up, then the window; then stop, wait for calls in flight, write the result and quit."""
    gevent.sleep(float(PLAN["warmup_s"]))
    if environment.runner is not None and not isinstance(environment.runner, WorkerRunner):
        environment.runner.stats.reset_all()  # Locust's own report covers the window, like ours
    RECORDER.open_window(float(PLAN["duration_s"]))
    if PLAN.get("window") and not isinstance(environment.runner, WorkerRunner):
        write_json(PLAN["window"], {"openedAt": RECORDER.opened_at, "durationS": PLAN["duration_s"]})
    gevent.sleep(max(0.0, RECORDER.end - time.perf_counter()))
    RECORDER.close_window()
    deadline = time.perf_counter() + float(PLAN["timeout_s"]) + 1
    while RECORDER.inflight and time.perf_counter() < deadline:
        gevent.sleep(0.005)
    if isinstance(environment.runner, WorkerRunner):
        return  # the master quits the run
    if isinstance(environment.runner, MasterRunner):
        gevent.sleep(REPORT_DRAIN_S)
    _write_result(complete=True)
    if environment.runner is not None:
        environment.runner.quit()


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    if PLAN.get("result") and not os.path.exists(PLAN["result"]):
        _write_result(complete=False)  # stopped before the window closed (run-time limit, SIGTERM)
    if os.environ.get("MESHCONF_RESULTS_CONFIGMAP"):
        _publish(environment, os.environ["MESHCONF_RESULTS_CONFIGMAP"])


SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def _publish(environment: Environment, configmap: str) -> None:
    """Patch ``configmap`` with the result, Locust's CSV statistics and its gzipped HTML report."""
    stats = StatsCSV(environment, PERCENTILES_TO_REPORT)
    data = {}
    for name, write in (("locust_stats.csv", stats.requests_csv), ("locust_failures.csv", stats.failures_csv)):
        text = io.StringIO()
        write(csv.writer(text))
        data[name] = text.getvalue()
    with open(PLAN["result"]) as result:
        data["result.json"] = result.read()
    binary = {}
    html = environment.parsed_options.html_file if environment.parsed_options else None
    if html and os.path.exists(html):
        with open(html, "rb") as report:
            binary["locust.html.gz"] = base64.b64encode(gzip.compress(report.read())).decode()
    api = os.environ.get("MESHCONF_KUBE_API", "https://kubernetes.default.svc")
    namespace = os.environ.get("MESHCONF_NAMESPACE") or _read(f"{SERVICE_ACCOUNT}/namespace")
    headers = {"Content-Type": "application/merge-patch+json"}
    token = _read(f"{SERVICE_ACCOUNT}/token")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{api}/api/v1/namespaces/{namespace}/configmaps/{configmap}", method="PATCH",
                                     data=json.dumps({"data": data, "binaryData": binary}).encode(), headers=headers)
    context = ssl.create_default_context(cafile=f"{SERVICE_ACCOUNT}/ca.crt") \
        if api.startswith("https:") and os.path.exists(f"{SERVICE_ACCOUNT}/ca.crt") else None
    with urllib.request.urlopen(request, timeout=30, context=context) as answer:
        answer.read()


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _write_result(complete: bool) -> None:
    if not PLAN.get("result"):
        return
    if not RECORDER.closed and RECORDER.open:
        RECORDER.close_window()
    data = RECORDER.export()
    data.update({"complete": complete, "windowOpenedAt": RECORDER.opened_at,
                 "windowS": (RECORDER.end - RECORDER.start) if RECORDER.open else 0.0,
                 "windowOpened": RECORDER.open})
    write_json(PLAN["result"], data)


class MeshconfUser(FastHttpUser):
    """One paced caller: a call every ``period_s`` (``users / rate_rps``), set with the timeouts at init."""

    started = 0
    phase = random.random()
    period_s = 1.0
    last_start = 0.0

    def wait_time(self) -> float:
        # constant throughput, as Locust's constant_throughput does it, but paced from a start this class
        # owns: wait out what is left of the period since the last call started (0 after a slow call)
        now = time.perf_counter()
        wait = max(0.0, self.period_s - (now - self.last_start))
        self.last_start = now + wait
        return wait

    def on_start(self) -> None:
        # Locust spawns users in batches (spawn_rate of them at once): left alone they would call in
        # lock-step bursts of that size. Spread their first calls evenly over one period instead.
        index = MeshconfUser.started
        MeshconfUser.started += 1
        gevent.sleep(((index / int(PLAN["users"]) + self.phase) % 1.0) * self.period_s)
        # pace from the end of the offset, or the first wait would absorb it and the users would fall
        # back into lock-step
        self.last_start = time.perf_counter()

    @task
    def call(self) -> None:
        if RECORDER.closed:
            gevent.sleep(0.05)
            return
        RECORDER.inflight += 1
        try:
            self.client.get(PLAN.get("path", "/"), headers=HEADERS, name=PLAN.get("name") or None)
        finally:
            RECORDER.inflight -= 1
