"""`meshconf upgrade` on kind as far as it goes without Docker: the provider-neutral gate
(``conformance/upgrade.py``) driving kind's ``prepare_upgrade`` and ``upgrade_mesh``, kind and istioctl through a
recording runner, the probes' answers recorded (the Kubernetes API is the one seam replaced), the catalogue runs
faked.

It proves the order (V2's images preloaded before its install, the held connections opened before the canary
install and still held through the restart), and the verdict: lost held connections against
``upgrade_connection_resets`` (default 0), and held connections that ended before the upgrade did.
Not proven here: that a real canary upgrade resets nothing (see the README)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from conformance.config import RunConfig
from conformance.connections import HeldConnections
from conformance.provider import ProbeHandle, ProbeInstance, ProbeSpec
from conformance.providers import build_config
from conformance.providers.kind.provider import KindProvider
from conformance.providers.kind.runner import Recorder, Result
from conformance.providers.kind.settings import KindSettings
from conformance.topology import load_topology
from conformance.upgrade import HELD_CONNECTIONS, held_connections_verdict, run_upgrade

from .test_recorded_up import SYNCED


class Timeline(Recorder):
    """The recorder, plus every probe call in the same timeline; notices the restart step."""

    def __init__(self, timeline: list[str], restarted: threading.Event) -> None:
        super().__init__(answers={
            r"^kind get nodes --name cluster1": "cluster1-control-plane\n",
            r"^kind get nodes --name cluster2": "cluster2-control-plane\n",
            r"^docker inspect .* cluster1-control-plane": "172.19.0.2\n",
            r"^docker inspect .* cluster2-control-plane": "172.19.0.3\n",
            r"^docker network inspect kind": "172.19.0.0/16\n",
            r"^docker image inspect .*:1\.28\.0": Result(1, "", "No such image"),
            r"remote-clusters": SYNCED,
        })
        self.timeline, self.restarted = timeline, restarted

    def run(self, argv: Sequence[str], stdin: str | None = None, timeout_s: float = 600.0) -> Result:
        result = super().run(argv, stdin, timeout_s)
        self.timeline.append(" ".join(argv))
        if "rollout" in argv and "deployment" in argv and "kind-cluster2" in argv and "status" in argv:
            self.restarted.set()  # the last command of the restart step (all of the namespace's deployments)
        return result


class RecordedProbes(KindProvider):
    """A KindProvider whose probe workloads and their /forward answers are recorded, not real."""

    held_answer: Mapping[str, Any] = {}

    def __init__(self, *args: Any, timeline: list[str], restarted: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeline, self.restarted = timeline, restarted
        self.stopped: dict[str, threading.Event] = {}

    def deploy_probe(self, spec: ProbeSpec) -> ProbeHandle:
        self.timeline.append(f"deploy {spec.service} in {spec.namespace} on {spec.cluster}")
        return ProbeHandle(spec, (ProbeInstance(f"{spec.service}-abc", "10.0.0.9", "zone1"),))

    def forward(self, probe: ProbeHandle, request: Mapping[str, Any], instance: int = 0) -> Any:
        # like the probe: a named forward runs until its duration is up or POST /forward/stop ends it
        stopped = self.stopped.setdefault(str(request["name"]), threading.Event())
        if probe.service == "holder":
            self.timeline.append(f"held connections opened: {request['concurrency']} to {request['url']}")
            stopped.wait(float(request["duration_ms"]) / 1000)
            self.timeline.append("held connections answered")
            return self.held_answer
        self.timeline.append(f"traffic started to {request['url']}")
        stopped.wait(float(request["duration_ms"]) / 1000)
        return {"latenciesUs": [20_000] * 4800, "startedUs": [n * 50_000 for n in range(4800)],
                "callStatuses": [200] * 4800, "durationUs": 240_000_000, "errors": {}}

    def probe_control(self, probe: ProbeHandle, method: str, path: str, body: Mapping[str, Any] | None = None,
                      instance: int = 0, timeout_s: float = 60.0) -> Any:
        assert (method, path) == ("POST", "/forward/stop") and body is not None
        self.timeline.append(f"stop {body['name']}")
        self.stopped.setdefault(str(body["name"]), threading.Event()).set()
        return {"stopped": True}

    def restart_probes(self, namespace: str, say: Callable[[str], None]) -> None:
        self.timeline.append(f"restart probes in {namespace}")

    def delete_namespace(self, namespace: str) -> None:
        self.timeline.append(f"delete namespace {namespace}")


def _calls(connections: Sequence[int], errors: Mapping[int, str] | None = None) -> dict[str, Any]:
    errors = errors or {}
    return {"calls": [{"index": n, "status": 0 if n in errors else 200, "connection": c, "error": errors.get(n)}
                      for n, c in enumerate(connections)]}


def _report(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    report = path / "conformance-report.json"
    report.write_text(json.dumps({"schemaVersion": 1, "run": {"provider": "kind", "topology": "multi-network"},
                                  "summary": {}, "checks": [{"id": "mtls-strict", "status": "passed",
                                                             "measurements": []}]}))
    return report


def _upgrade(tmp_path: Path, fake_istioctl: Path, held: Mapping[str, Any],
             **overrides: str) -> tuple[int, list[str], dict[str, Any]]:
    timeline: list[str] = []
    restarted = threading.Event()
    config = build_config(provider="kind", topology="multi-network", istio_version="1.27.3",
                          istioctl=str(fake_istioctl), timeout_overrides=[f"{k}={v}" for k, v in overrides.items()])
    provider = RecordedProbes(config, load_topology("multi-network"), runner=Timeline(timeline, restarted),
                              timeline=timeline, restarted=restarted)
    provider.held_answer = held
    provider.istioctl_to = fake_istioctl

    def catalogue(cfg: RunConfig, run_dir: Path, out: Path, say: Callable[[str], None]) -> Path:
        timeline.append(f"catalogue on {cfg.settings_as(KindSettings).istio_version}")
        return _report(out)

    out = tmp_path / "out"
    code = run_upgrade(config, load_topology("multi-network"), "1.28.0", out, lambda _line: None, provider,
                       catalogue=catalogue)
    return code, timeline, json.loads((out / "upgrade.json").read_text())


def test_held_connections_span_the_canary_upgrade_and_none_is_lost(tmp_path: Path, fake_istioctl: Path) -> None:
    held = _calls([1 + n % HELD_CONNECTIONS for n in range(80)])  # 8 connections, 10 calls each, no error
    code, timeline, report = _upgrade(tmp_path, fake_istioctl, held)
    assert code == 0
    assert report["heldConnections"] == {"held": 8, "calls": 80, "connectionsOpened": 8, "lost": 0,
                                         "failedCalls": 0, "errors": {}, "budget": 0, "coveredUpgrade": True,
                                         "withinBudget": True}

    def at(text: str) -> int:
        return next(n for n, line in enumerate(timeline) if text in line)

    canary = at("istio-1-28-0.yaml")
    assert at("catalogue on 1.27.3") < at("docker pull docker.io/istio/pilot:1.28.0") < canary
    assert at("kind load docker-image docker.io/istio/pilot:1.28.0 docker.io/istio/proxyv2:1.28.0 --name cluster2") \
        < canary
    assert at("deploy held in meshconf-upgrade on cluster2") < at("deploy holder in meshconf-upgrade on cluster1") \
        < canary
    assert at("held connections opened: 8 to http://held.meshconf-upgrade.svc.cluster.local:8080/") < canary
    assert at("traffic started to http://upgraded.meshconf-upgrade-restart.svc.cluster.local:8080/") < canary
    assert canary < at("tag set default --revision=1-28-0") < at("-n meshconf-smoke rollout restart deployment") \
        < at("restart probes in meshconf-upgrade-restart") < at("stop upgrade-held") \
        < at("held connections answered") < at("catalogue on 1.28.0")
    assert report["calls"] == 4800 and report["p99Ms"] == pytest.approx(20.0, rel=0.01) and report["withinBudget"]


def test_a_lost_held_connection_fails_the_upgrade_gate(tmp_path: Path, fake_istioctl: Path) -> None:
    # two calls fail on connections 3 and 5 ("connection reset"); the probe opens connections 9 and 10 instead
    connections = [1 + n % HELD_CONNECTIONS for n in range(40)] + [9, 10] + [1, 2, 4, 6, 7, 8] * 3
    held = _calls(connections, {34: "connection reset", 36: "connection reset"})
    code, _, report = _upgrade(tmp_path, fake_istioctl, held)
    assert code == 1
    verdict = report["heldConnections"]
    assert (verdict["lost"], verdict["connectionsOpened"], verdict["errors"]) == (2, 10, {"connection reset": 2})
    assert verdict["withinBudget"] is False


def test_held_connections_that_end_before_the_upgrade_does_are_no_pass(tmp_path: Path, fake_istioctl: Path) -> None:
    held = _calls([1 + n % HELD_CONNECTIONS for n in range(16)])
    code, _, report = _upgrade(tmp_path, fake_istioctl, held, upgrade_hold_s="0.001")
    assert code == 1 and report["heldConnections"]["coveredUpgrade"] is False


@pytest.mark.parametrize(("connections", "errors", "lost"), [
    ([1, 2, 1, 2], {}, 0),
    ([1, 2, 3, 2], {}, 1),                     # connection 1 was closed by the other side: a new one replaced it
    ([1, 2, 1, 2], {2: "timeout"}, 1),          # the call on connection 1 timed out: the probe drops it
    ([], {}, 0),
])
def test_held_connection_counting(connections: list[int], errors: dict[int, str], lost: int) -> None:
    verdict = held_connections_verdict(HeldConnections.from_answer(_calls(connections, errors), 2), 0, True)
    assert verdict["lost"] == lost
    assert verdict["withinBudget"] is (bool(connections) and lost == 0)
