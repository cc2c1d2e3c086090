"""The provider-neutral upgrade gate (``conformance/upgrade.py``) with a recording Provider at the one seam: the
order of its steps, and its verdicts (a lost held connection, traffic over budget, a catalogue regression: exit
1). The catalogue runs are faked (they write reports); nothing else is."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conformance.config import RunConfig
from conformance.errors import EnvironmentBroken, UsageError
from conformance.provider import Faults, Feature, MeshDescription, ProbeHandle, ProbeInstance, ProbeSpec, Provider
from conformance.providers import build_config
from conformance.providers.kind.settings import KindSettings
from conformance.topology import Topology, load_topology
from conformance.upgrade import HELD_CONNECTIONS, catalogue_argv, run_upgrade, upgrade_plan


class Recording(Provider):
    """Records every call the gate makes, in one timeline; the probes' forwards answer what a test scripts and,
    like the probe, run until their duration is up or ``POST /forward/stop`` ends them."""

    name = "recording"

    def __init__(self, config: RunConfig, topology: Topology, run_dir: Path | None = None) -> None:
        super().__init__(config, topology, run_dir)
        self.timeline: list[str] = []
        self.stopped: dict[str, threading.Event] = {}
        self.started: dict[str, threading.Event] = {"upgrade-held": threading.Event(),
                                                    "upgrade-traffic": threading.Event()}
        self.held_answer: Mapping[str, Any] = _held([1 + n % HELD_CONNECTIONS for n in range(40)])
        self.traffic_answer: Mapping[str, Any] = _traffic([200] * 400, 20_000)
        self.fail_upgrade: BaseException | None = None
        self.upgrade_takes_s = 0.0
        self.scratch: Path | None = None

    @classmethod
    def at_version(cls, config: RunConfig, version: str | None) -> RunConfig:
        # as kind does: the version is a setting of the provider's config
        return replace(config, settings=replace(config.settings_as(KindSettings), istio_version=version))

    @classmethod
    def upgrade_plan(cls, config: RunConfig, topology: Topology, to_version: str) -> str:
        return f"recording: upgrade to {to_version}\n"

    def up(self, owner_pid: int | None = None, progress: Callable[[str], None] | None = None) -> None:
        assert self.scratch is not None
        self.run_dir = self.scratch
        self.timeline.append("up")

    def down(self) -> None:
        self.timeline.append("down")

    def prepare_upgrade(self, to_version: str, say: Callable[[str], None]) -> None:
        self.timeline.append(f"prepare {to_version}")

    def upgrade_mesh(self, to_version: str, say: Callable[[str], None]) -> None:
        # the gate must be measuring before the provider's steps begin
        assert all(e.wait(5) for e in self.started.values()), "hold and traffic must run before upgrade_mesh"
        self.timeline.append(f"upgrade_mesh {to_version}")
        time.sleep(self.upgrade_takes_s)
        if self.fail_upgrade is not None:
            raise self.fail_upgrade

    def restart_probes(self, namespace: str, say: Callable[[str], None]) -> None:
        self.timeline.append(f"restart_probes {namespace}")

    def deploy_probe(self, spec: ProbeSpec) -> ProbeHandle:
        self.timeline.append(f"deploy {spec.service}/{spec.namespace} on {spec.cluster}")
        return ProbeHandle(spec, (ProbeInstance(f"{spec.service}-0", "10.0.0.1", "zone1"),))

    def forward(self, probe: ProbeHandle, request: Mapping[str, Any], instance: int = 0) -> Any:
        name = str(request["name"])
        stopped = self.stopped.setdefault(name, threading.Event())
        self.timeline.append(f"{name} started from {probe.service} to {request['url']}")
        self.started[name].set()
        stopped.wait(float(request["duration_ms"]) / 1000)
        return self.held_answer if name == "upgrade-held" else self.traffic_answer

    def probe_control(self, probe: ProbeHandle, method: str, path: str, body: Mapping[str, Any] | None = None,
                      instance: int = 0, timeout_s: float = 60.0) -> Any:
        assert (method, path) == ("POST", "/forward/stop") and body is not None
        self.timeline.append(f"stop {body['name']}")
        self.stopped.setdefault(str(body["name"]), threading.Event()).set()
        return {"stopped": True}

    def delete_namespace(self, namespace: str) -> None:
        self.timeline.append(f"delete {namespace}")

    def describe(self) -> MeshDescription:
        return MeshDescription(self.name, self.topology.name, "istio", "1.27.3", "istio-proxy 1.27.3")

    # -- not used by the upgrade gate ------------------------------------------------------------------------

    @classmethod
    def cleanup(cls, run_dir: Path) -> list[int]:
        raise AssertionError("not used by the gate")

    def features(self) -> frozenset[Feature]:
        raise AssertionError("not used by the gate")

    def apply(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        raise AssertionError("not used by the gate")

    def delete(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        raise AssertionError("not used by the gate")

    def proxy_admin(self, probe: ProbeHandle, path: str, instance: int = 0) -> str:
        raise AssertionError("not used by the gate")

    @property
    def faults(self) -> Faults:
        raise AssertionError("not used by the gate")

    def ingress_address(self, cluster: str) -> str:
        raise AssertionError("not used by the gate")

    def rotate_certificates(self, namespace: str) -> Mapping[str, str]:
        raise AssertionError("not used by the gate")

    def mesh_config(self, patch: Mapping[str, Any], clusters: Sequence[str]) -> Mapping[str, Mapping[str, Any]]:
        raise AssertionError("not used by the gate")

    def diagnostics(self, dest: Path, namespaces: Sequence[str]) -> list[Path]:
        raise AssertionError("not used by the gate")

    def environment_problems(self, namespaces: Sequence[str], since: float | None = None) -> list[str]:
        raise AssertionError("not used by the gate")


def _held(connections: Sequence[int], errors: Mapping[int, str] | None = None) -> dict[str, Any]:
    errors = errors or {}
    return {"calls": [{"index": n, "status": 0 if n in errors else 200, "connection": c, "error": errors.get(n)}
                      for n, c in enumerate(connections)]}


def _traffic(statuses: Sequence[int], latency_us: int) -> dict[str, Any]:
    return {"latenciesUs": [latency_us] * len(statuses), "startedUs": [n * 50_000 for n in range(len(statuses))],
            "callStatuses": list(statuses), "durationUs": len(statuses) * 50_000, "errors": {}}


def _report(out: Path, status: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "conformance-report.json"
    path.write_text(json.dumps({"schemaVersion": 1, "run": {"provider": "recording", "topology": "multi-primary"},
                                "summary": {}, "checks": [{"id": "mtls-strict", "status": "passed",
                                                           "measurements": []},
                                                          {"id": "failover", "status": status,
                                                           "measurements": []}]}))
    return path


def _gate(tmp_path: Path, provider: Recording | None = None, after_status: str = "passed",
          **timeouts: str) -> tuple[int, Recording, dict[str, Any]]:
    config = build_config(provider="kind", topology="multi-primary", istio_version="1.27.3",
                             timeout_overrides=[f"{k}={v}" for k, v in timeouts.items()])
    topology = load_topology("multi-primary")
    provider = provider or Recording(config, topology)
    provider.scratch = tmp_path / "run"

    def catalogue(cfg: RunConfig, run_dir: Path, out: Path, say: Callable[[str], None]) -> Path:
        provider.timeline.append(f"catalogue {out.name} on {cfg.settings_as(KindSettings).istio_version} in "
                                 f"{run_dir.name}")
        return _report(out, "passed" if out.name == "before" else after_status)

    out = tmp_path / "out"
    code = run_upgrade(config, topology, "1.28.0", out, lambda _line: None, provider, catalogue=catalogue)
    return code, provider, json.loads((out / "upgrade.json").read_text())


def test_the_gate_runs_its_steps_in_order_and_passes_a_clean_upgrade(tmp_path: Path) -> None:
    code, provider, report = _gate(tmp_path)
    timeline = provider.timeline

    def at(text: str) -> int:
        return next(n for n, line in enumerate(timeline) if line.startswith(text))

    assert code == 0
    assert timeline[0] == "up" and timeline[-1] == "down"
    assert at("catalogue before on 1.27.3 in run") < at("prepare 1.28.0") < at("deploy held/meshconf-upgrade") \
        < at("upgrade-held started from holder to http://held.meshconf-upgrade.svc.cluster.local:8080/") \
        < at("upgrade_mesh 1.28.0") < at("restart_probes meshconf-upgrade-restart") < at("stop upgrade-held") \
        < at("delete meshconf-upgrade") < at("catalogue after on 1.28.0") < at("down")
    assert at("upgrade-traffic started from traffic to "
              "http://upgraded.meshconf-upgrade-restart.svc.cluster.local:8080/") < at("upgrade_mesh")
    assert at("deploy held/meshconf-upgrade on cluster2") < at("deploy holder/meshconf-upgrade on cluster1")
    assert report["from"] == "1.27.3" and report["to"] == "1.28.0"
    assert (report["calls"], report["errors"], report["withinBudget"]) == (400, 0, True)
    assert report["p99Ms"] == pytest.approx(20.0, rel=0.01)  # an HDR histogram's precision
    assert report["heldConnections"]["lost"] == 0 and report["heldConnections"]["withinBudget"] is True
    assert (tmp_path / "out" / "gate.txt").is_file()


def test_a_lost_held_connection_fails_the_gate(tmp_path: Path) -> None:
    config = build_config(provider="kind", topology="multi-primary", istio_version="1.27.3")
    provider = Recording(config, load_topology("multi-primary"))
    # a call failed on connection 3; the probe opened connection 9 in its place
    provider.held_answer = _held([1 + n % HELD_CONNECTIONS for n in range(16)] + [9], {10: "connection reset"})
    code, _, report = _gate(tmp_path, provider)
    assert code == 1
    assert report["heldConnections"]["lost"] == 1 and report["heldConnections"]["withinBudget"] is False
    assert report["withinBudget"] is True  # the traffic alone would have passed


@pytest.mark.parametrize(("statuses", "latency_us", "what"), [
    ([200] * 399 + [503], 20_000, "errors"),
    ([200] * 400, 80_000, "p99"),  # over cross_cluster_p99_ms (50 ms by default)
])
def test_traffic_over_its_budget_fails_the_gate(tmp_path: Path, statuses: list[int], latency_us: int,
                                                what: str) -> None:
    config = build_config(provider="kind", topology="multi-primary", istio_version="1.27.3")
    provider = Recording(config, load_topology("multi-primary"))
    provider.traffic_answer = _traffic(statuses, latency_us)
    code, _, report = _gate(tmp_path, provider)
    assert code == 1 and report["withinBudget"] is False
    assert report["errors"] == (1 if what == "errors" else 0)
    assert report["p99Ms"] == pytest.approx(latency_us / 1000, rel=0.01)


def test_a_catalogue_regression_fails_the_gate(tmp_path: Path) -> None:
    code, _, report = _gate(tmp_path, after_status="failed")
    assert code == 1 and report["withinBudget"] and report["heldConnections"]["withinBudget"]
    assert "failover" in (tmp_path / "out" / "gate.txt").read_text()


def test_held_connections_that_end_before_the_upgrade_does_fail_the_gate(tmp_path: Path) -> None:
    config = build_config(provider="kind", topology="multi-primary", istio_version="1.27.3")
    provider = Recording(config, load_topology("multi-primary"))
    provider.upgrade_takes_s = 0.5  # the forwards last 1 ms
    code, _, report = _gate(tmp_path, provider, upgrade_hold_s="0.001")
    assert code == 1
    assert report["heldConnections"]["coveredUpgrade"] is False and report["coveredUpgrade"] is False


def test_a_failed_upgrade_step_still_tears_down(tmp_path: Path) -> None:
    config = build_config(provider="kind", topology="multi-primary", istio_version="1.27.3")
    provider = Recording(config, load_topology("multi-primary"))
    provider.fail_upgrade = EnvironmentBroken("the upgrade command exited 1")
    with pytest.raises(EnvironmentBroken, match="exited 1"):
        _gate(tmp_path, provider)
    assert provider.timeline[-1] == "down"
    assert "stop upgrade-held" in provider.timeline and "stop upgrade-traffic" in provider.timeline
    assert not any(line.startswith("catalogue after") for line in provider.timeline)


def test_a_provider_that_cannot_upgrade_is_refused_before_anything_runs(tmp_path: Path) -> None:
    class CannotUpgrade(Recording):
        name = "local"
        upgrade_plan = vars(Provider)["upgrade_plan"]  # the base class default

    config = build_config(topology="multi-primary")
    provider = CannotUpgrade(config, load_topology("multi-primary"))
    with pytest.raises(UsageError, match="provider local cannot upgrade a mesh"):
        _gate(tmp_path, provider)
    assert provider.timeline == []


def test_the_plan_names_what_meshconf_measures() -> None:
    config = build_config(topology="multi-primary", budget_overrides=["upgrade_connection_resets=1"])
    text = upgrade_plan(Recording, config, load_topology("multi-primary"), "1.28.0")
    assert text.startswith("recording: upgrade to 1.28.0\n")
    assert f"{HELD_CONNECTIONS} keep-alive connections held from holder/meshconf-upgrade on cluster1" in text
    assert "lost connections allowed: 1" in text
    assert "meshconf restarts its own deployments in meshconf-upgrade-restart" in text


def test_the_catalogue_runs_with_the_providers_settings(tmp_path: Path) -> None:
    config = build_config(provider="existing", topology="multi-primary", contexts=("east", "west"),
                          revision="1-27-3", budget_overrides=["error_rate_pct=0.5"],
                          timeout_overrides=["upgrade_hold_s=300"], upgrade_command="helm upgrade")
    argv = catalogue_argv(config, tmp_path / "run", tmp_path / "before")
    profile = tmp_path / "before.yaml"
    assert argv == ["run", "--profile", str(profile), "--attach", str(tmp_path / "run"), "--out",
                    str(tmp_path / "before")]
    # the resolved config, handed over whole: the catalogue's run reads back exactly this config
    assert replace(build_config(profile=profile), profile=None) == config


def test_a_catalogue_that_judged_nothing_is_an_environment_error_not_a_pass(tmp_path: Path) -> None:
    # `meshconf run` against a mesh it cannot reach writes a report of broken checks: no regression to see
    config = build_config(provider="kind", topology="multi-primary", istio_version="1.27.3")
    provider = Recording(config, load_topology("multi-primary"))
    provider.scratch = tmp_path / "run"

    def catalogue(cfg: RunConfig, run_dir: Path, out: Path, say: Callable[[str], None]) -> Path:
        path = _report(out, "broken")
        data = json.loads(path.read_text())
        data["checks"][0]["status"] = "broken"
        path.write_text(json.dumps(data))
        return path

    with pytest.raises(EnvironmentBroken, match="the catalogue before the upgrade judged no check"):
        run_upgrade(config, load_topology("multi-primary"), "1.28.0", tmp_path / "out", lambda _line: None,
                    provider, catalogue=catalogue)
    assert provider.timeline[-1] == "down"
    assert not any(line.startswith(("prepare", "upgrade_mesh")) for line in provider.timeline)  # no upgrade begun


def test_a_catalogue_run_that_wrote_no_report_is_an_environment_error(tmp_path: Path) -> None:
    from conformance.upgrade import _catalogue

    config = build_config(provider="kind", topology="multi-primary", istio_version="1.27.3")
    said: list[str] = []
    # the real `meshconf run`, with an --out it cannot use (a file is in the way): it writes no report
    blocked = tmp_path / "before"
    blocked.write_text("")
    with pytest.raises(EnvironmentBroken, match="without a report"):
        _catalogue(config, tmp_path / "run", blocked, said.append)
    assert said == [f"$ meshconf run --profile {tmp_path / 'before.yaml'} --attach {tmp_path / 'run'} --out {blocked}"]


def test_a_mesh_that_does_not_run_from_stops_the_gate_before_the_catalogue(tmp_path: Path) -> None:
    """--from is checked against what the mesh reports it runs (existing: the clusters' istiod), on every provider."""
    config = build_config(provider="kind", topology="multi-primary", istio_version="1.27.3")
    provider = Recording(config, load_topology("multi-primary"))  # it runs 1.27.3 (describe)
    provider.scratch = tmp_path / "run"
    with pytest.raises(EnvironmentBroken, match=r"--from 1.26.1, but the mesh runs Istio 1.27.3; fix --from"):
        run_upgrade(config, load_topology("multi-primary"), "1.28.0", tmp_path / "out", lambda _line: None,
                    provider, from_version="1.26.1", catalogue=lambda *_: pytest.fail("no catalogue"))
    assert provider.timeline == ["up", "down"]
