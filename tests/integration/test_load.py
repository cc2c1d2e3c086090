"""Real load runs, short and bounded: Locust in its own process and a probe's paced forward, against a real
probe on 127.0.0.1. Every process a test starts is stopped by PID when it ends. Timings are never asserted
(the machine is shared); only that the figures are coherent and that a shortfall is reported as one.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance.errors import EnvironmentBroken
from conformance.load import (
    ForwardTarget,
    HttpTarget,
    LoadProfile,
    LoadShortfall,
    run_forward_load,
    run_locust,
    start_locust,
)
from conformance.load.distributed import result_from_configmap
from conformance.probe import probe_source
from conformance.provider import ProbeHandle, ProbeInstance, ProbeSpec
from conformance.providers import build_config

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Probe:
    """A probe process on 127.0.0.1 (no mesh): its data port is the target, its control port forwards."""

    def __init__(self, folder: Path, name: str) -> None:
        self.name = name
        self.data_port, self.control_port = _free_port(), _free_port()
        ready = folder / f"{name}.ready"
        self.process = subprocess.Popen(
            [sys.executable, str(probe_source()), "--cluster", "c1", "--network", "n1", "--region", "r1",
             "--zone", "z1", "--namespace", "ns", "--service", name, "--version", "v1", "--instance", name,
             "--service-account", name, "--address", "127.0.0.1", "--ports", str(self.data_port),
             "--control-address", "127.0.0.1", "--control-port", str(self.control_port), "--ready-file", str(ready)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert self.process.poll() is None and time.monotonic() < deadline, f"probe {name} did not start"
            time.sleep(0.02)

    def handle(self) -> ProbeHandle:
        return ProbeHandle(ProbeSpec(self.name, "ns", "c1", in_mesh=False),
                           (ProbeInstance("p", "127.0.0.1", "z1", {"control": f"127.0.0.1:{self.control_port}"}),))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def probes(tmp_path: Path) -> Iterator[dict[str, Probe]]:
    started = {name: Probe(tmp_path, name) for name in ("server", "client")}
    yield started
    for probe in started.values():
        probe.stop()


class ForwardOnly:
    """Just enough of a provider for a forward load: POST the request to the probe's control port."""

    def forward(self, probe: ProbeHandle, request: Mapping[str, Any], instance: int = 0) -> Any:
        control = probe.instances[instance].extra["control"]
        return httpx.post(f"http://{control}/forward", json=dict(request), timeout=60).json()


def _profile(**overrides: Any) -> LoadProfile:
    values: dict[str, Any] = {"rate_rps": 100, "users": 4, "warmup_s": 0.5, "duration_s": 2, "spawn_rate_per_s": 100}
    return LoadProfile.from_config(build_config(), **{**values, **overrides})


class FakeKubernetesApi(http.server.ThreadingHTTPServer):
    """Records the PATCHes a distributed master sends to hand its results back (one ConfigMap)."""

    def __init__(self) -> None:
        self.patches: dict[str, Any] = {}
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                api.patches[self.path] = json.loads(body)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def kube_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubernetesApi]:
    api = FakeKubernetesApi()
    thread = threading.Thread(target=api.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MESHCONF_RESULTS_CONFIGMAP", "meshconf-locust-results")
    monkeypatch.setenv("MESHCONF_KUBE_API", f"http://127.0.0.1:{api.server_address[1]}")
    monkeypatch.setenv("MESHCONF_NAMESPACE", "ns")
    yield api
    api.shutdown()
    api.server_close()
    thread.join(5)


def test_locust_run_gives_a_coherent_result(probes: dict[str, Probe], kube_api: FakeKubernetesApi,
                                            tmp_path: Path) -> None:
    server = probes["server"]
    target = HttpTarget("127.0.0.1", server.data_port, host="server.ns.svc.cluster.local:8080", label="direct")
    profile = _profile()
    result = run_locust(target, profile, tmp_path / "run")
    assert result.generator == "locust" and result.label == "direct"
    assert result.errors == 0 and result.error_rate_pct == 0
    assert result.requests == pytest.approx(200, abs=8)  # 100 rps for 2 s; each user may lose a call to an edge
    assert 0 < result.min_us <= result.p50_us <= result.p90_us <= result.p99_us <= result.p999_us <= result.max_us
    assert len(result.timeline) == 2 and sum(s.requests for s in result.timeline) == result.requests
    assert 0 < result.generator_cpu_pct < 100
    assert set(result.artifacts) == {"locust-html", "locust-stats-csv", "locust-failures-csv", "locust-log"}
    stats = Path(result.artifacts["locust-stats-csv"]).read_text()
    assert "direct" in stats  # Locust's own report covers the same named requests
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["host_header"] == "server.ns.svc.cluster.local:8080"

    # in a cluster the master hands the same result back through a ConfigMap
    configmap = kube_api.patches["/api/v1/namespaces/ns/configmaps/meshconf-locust-results"]
    handed_back = result_from_configmap(configmap, target, profile, tmp_path / "collected")
    assert (handed_back.requests, handed_back.p99_us, handed_back.histogram) == \
        (result.requests, result.p99_us, result.histogram)
    assert Path(handed_back.artifacts["locust-html"]).read_text().startswith("<!DOCTYPE html>")
    assert "direct" in Path(handed_back.artifacts["locust-stats-csv"]).read_text()


def test_a_rate_far_above_the_generator_is_a_shortfall(probes: dict[str, Probe], tmp_path: Path) -> None:
    target = HttpTarget("127.0.0.1", probes["server"].data_port, label="too fast")
    profile = _profile(rate_rps=50_000, users=10, warmup_s=0.2, duration_s=1.5)
    with pytest.raises(LoadShortfall, match=r"reached .* rps of the 50000 rps asked") as caught:
        run_locust(target, profile, tmp_path / "run")
    assert caught.value.result is not None and caught.value.result.requests > 0


def test_stopping_a_run_stops_its_process(probes: dict[str, Probe], tmp_path: Path) -> None:
    target = HttpTarget("127.0.0.1", probes["server"].data_port)
    with start_locust(target, _profile(duration_s=60), tmp_path / "run") as run:
        run.window_opened_at()
        event = run.mark("fault injected")
        assert 0 <= event.at_s < 5
        assert run.process is not None
    assert run.process.poll() is not None  # the with block stopped it by PID
    with pytest.raises(EnvironmentBroken, match=r"Locust exited|ended before its measured window closed"):
        run.wait()


def test_forward_load_gives_a_coherent_result(probes: dict[str, Probe]) -> None:
    url = f"http://127.0.0.1:{probes['server'].data_port}/"
    target = ForwardTarget(probes["client"].handle(), url, label="client -> server")
    result = run_forward_load(ForwardOnly(), target, _profile())  # type: ignore[arg-type]
    assert result.generator == "probe-forward"
    assert result.errors == 0 and result.requests == pytest.approx(200, abs=3)
    assert result.p50_us <= result.p99_us <= result.max_us
    assert len(result.timeline) == 2
    nowhere = ForwardTarget(probes["client"].handle(), f"http://127.0.0.1:{_free_port()}/", label="nowhere")
    refused = run_forward_load(ForwardOnly(), nowhere, _profile(duration_s=1, warmup_s=0))  # type: ignore[arg-type]
    assert refused.errors == refused.requests > 0  # errors, at the rate asked: a failure to judge, not a shortfall
    assert dict(refused.error_kinds) == {"connection refused": refused.requests}
