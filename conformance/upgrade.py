"""``meshconf upgrade``: the upgrade gate, the same on every provider that can upgrade a mesh.

1. Bring the provider up (kind installs ``--from``; existing attaches to the user's clusters) and run the
   catalogue on the old version (``OUT/before``).
2. ``prepare_upgrade`` (kind: V2's images preloaded; not measured), then deploy meshconf's own upgrade probes
   and start measuring: :data:`HELD_CONNECTIONS` keep-alive connections held from one cluster to another
   between workloads in :data:`UPGRADE_NAMESPACE` (never restarted: Cilium's upgrade tests make this a gate),
   and :data:`TRAFFIC_RATE_RPS` calls a second from that namespace to a target in :data:`RESTART_NAMESPACE`.
   Then the provider's own steps (``upgrade_mesh``: kind's canary by revision, or the user's command on
   existing clusters) and a rolling restart of the target (``restart_probes``), so the measured traffic goes
   to a workload that moves onto the new proxies.
3. Run the catalogue again on the new version (``OUT/after``).
4. Gate (``conformance.report.gate``): exit 1 on any regression, on traffic over its error or p99 budget, or
   on more lost held connections than ``upgrade_connection_resets`` (default 0); ``down()`` in every case.

Writes ``OUT/before/``, ``OUT/after/`` (full reports), ``OUT/upgrade.json`` (what was measured during the
upgrade, against its budgets) and ``OUT/gate.txt``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from conformance.config import RunConfig
from conformance.connections import ConnectionHold, HeldConnections, hold_request
from conformance.errors import EnvironmentBroken
from conformance.load.forward import result_of_forward
from conformance.load.profile import LoadProfile
from conformance.provider import ProbeSpec, Provider
from conformance.report.gate import compare_reports, render_gate
from conformance.report.model import Report, Status
from conformance.topology import Topology

__all__ = ["HELD_CONNECTIONS", "RESTART_NAMESPACE", "TRAFFIC_RATE_RPS", "UPGRADE_NAMESPACE", "Catalogue",
           "catalogue_argv", "held_connections_verdict", "run_upgrade", "traffic_verdict", "upgrade_plan"]

HELD_CONNECTIONS = 8
"""Keep-alive connections held across clusters through the upgrade (one call a second on each)."""
UPGRADE_NAMESPACE = "meshconf-upgrade"
"""meshconf's upgrade workloads that nothing restarts: the held connections' client and server, and the traffic
source."""
RESTART_NAMESPACE = "meshconf-upgrade-restart"
"""The traffic's target, restarted onto the new proxies (``restart_probes``) once the provider's steps are done."""
TRAFFIC_RATE_RPS = 20
TRAFFIC_CONNECTIONS = 4

Catalogue = Callable[[RunConfig, Path, Path, Callable[[str], None]], Path]
"""Runs the catalogue against the mesh recorded in a run directory, writing into a directory; returns the
report's path (by default ``meshconf run --attach RUN_DIR --out OUT`` in a subprocess)."""


def upgrade_plan(provider: type[Provider], config: RunConfig, topology: Topology, to_version: str,
                 from_version: str | None = None) -> str:
    """The provider's upgrade steps and what meshconf measures meanwhile; runs nothing. UsageError if the
    provider cannot make this upgrade."""
    steps = provider.upgrade_plan(config, topology, to_version)
    first, last = topology.cluster_names[0], topology.cluster_names[-1]
    return steps + "\n".join([
        "",
        *([f"Once the mesh is up, the mesh must run {from_version} (--from), or the gate stops (exit 3)."]
          if from_version else []),
        "Measured by meshconf through the provider's upgrade steps (conformance/upgrade.py):",
        f"  - {HELD_CONNECTIONS} keep-alive connections held from holder/{UPGRADE_NAMESPACE} on {first} to "
        f"held/{UPGRADE_NAMESPACE} on {last} (neither restarted); lost connections allowed: "
        f"{config.budgets.upgrade_connection_resets} (--budget upgrade_connection_resets); they are held for at most "
        f"{config.timeouts.upgrade_hold_s:g} s (--timeout upgrade_hold_s) and must outlast the upgrade",
        f"  - {TRAFFIC_RATE_RPS} calls a second from traffic/{UPGRADE_NAMESPACE} on {first} to "
        f"upgraded/{RESTART_NAMESPACE} on {last}: error rate <= {config.budgets.error_rate_pct:g}% "
        f"(--budget error_rate_pct), p99 <= {config.budgets.cross_cluster_p99_ms:g} ms "
        "(--budget cross_cluster_p99_ms)",
        f"  - after the provider's steps, meshconf restarts its own deployments in {RESTART_NAMESPACE} (rolling) "
        "under that traffic; it restarts nothing else",
        "  - then both namespaces are deleted, the catalogue runs again (out/after) and `meshconf gate` compares "
        "the two reports: exit 1 on any regression or budget overrun",
        "",
    ])


def run_upgrade(config: RunConfig, topology: Topology, to_version: str, out: Path, say: Callable[[str], None],
                provider: Provider, *, from_version: str | None = None, catalogue: Catalogue | None = None) -> int:
    """The gate (the module's docstring) on ``provider`` (not yet up; the CLI takes it from the registry, with
    ``config`` already ``at_version(from_version)``); returns its exit code: 0, or 1 on a regression or budget
    overrun. Raises UsageError (exit 2) before anything starts, EnvironmentBroken (exit 3) when the environment
    fails, or when the mesh does not run ``from_version``. ``catalogue`` is a seam for tests: by default
    ``meshconf run --attach`` in a subprocess."""
    kind = type(provider)
    kind.upgrade_plan(config, topology, to_version)  # a UsageError stops it here, before up()
    after_config = kind.at_version(config, to_version)
    run_catalogue = catalogue or _catalogue
    out.mkdir(parents=True, exist_ok=True)
    provider.up(progress=say)
    try:
        assert provider.run_dir is not None
        running = provider.describe().mesh_version
        if from_version and running != from_version:
            raise EnvironmentBroken(f"--from {from_version}, but the mesh runs Istio {running}; fix --from, or leave "
                                    "it out")
        before = _verdicts(run_catalogue(config, provider.run_dir, out / "before", say), "before")  # then upgrade
        provider.prepare_upgrade(to_version, say)
        during, connections = _measure_upgrade(provider, config, to_version, say)
        (out / "upgrade.json").write_text(json.dumps({"from": running, "to": to_version, **during,
                                                      "heldConnections": connections}, indent=2) + "\n")
        after = run_catalogue(after_config, provider.run_dir, out / "after", say)
        reports = before, _verdicts(after, "after")
        rows = compare_reports(*reports)
        text = render_gate(*reports, rows)
        (out / "gate.txt").write_text(text)
        say(text.rstrip())
        say(f"during the upgrade: {during['errors']} errors of {during['calls']} calls, p99 {during['p99Ms']} ms "
            f"({'within' if during['withinBudget'] else 'OVER'} budget)")
        say(f"held connections: {connections['lost']} of {connections['held']} lost (budget "
            f"{connections['budget']}; {'within' if connections['withinBudget'] else 'OVER'} budget)"
            + ("" if connections["coveredUpgrade"] else
               "; they ended before the upgrade did: raise --timeout upgrade_hold_s"))
        return 1 if (any(r.regression for r in rows) or not during["withinBudget"]
                     or not connections["withinBudget"]) else 0
    finally:
        provider.down()


def _measure_upgrade(provider: Provider, config: RunConfig, to_version: str,
                     say: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Hold connections and send traffic between clusters while the provider upgrades and meshconf restarts its
    own target; returns the traffic's and the held connections' verdicts."""
    first, last = provider.topology.cluster_names[0], provider.topology.cluster_names[-1]
    held = provider.deploy_probe(ProbeSpec(service="held", namespace=UPGRADE_NAMESPACE, cluster=last))
    holder = provider.deploy_probe(ProbeSpec(service="holder", namespace=UPGRADE_NAMESPACE, cluster=first))
    source = provider.deploy_probe(ProbeSpec(service="traffic", namespace=UPGRADE_NAMESPACE, cluster=first))
    target = provider.deploy_probe(ProbeSpec(service="upgraded", namespace=RESTART_NAMESPACE, cluster=last))
    hold_s = min(config.timeouts.upgrade_hold_s, 590.0)  # the probe bounds a forward at 600 s
    call_timeout = config.timeouts.call_timeout_s
    hold = ConnectionHold(lambda body: provider.forward(holder, body),
                          lambda name: provider.probe_control(holder, "POST", "/forward/stop", {"name": name}),
                          hold_request(held.url(), HELD_CONNECTIONS, hold_s, call_timeout, name="upgrade-held"))
    traffic_request = {"url": target.url(), "rate": TRAFFIC_RATE_RPS, "concurrency": TRAFFIC_CONNECTIONS,
                       "duration_ms": int(hold_s * 1000), "max_duration_ms": min(int(hold_s * 1000) + 10_000, 600_000),
                       "summary": True, "body_limit": 0, "timeout_ms": int(call_timeout * 1000),
                       "name": "upgrade-traffic"}
    traffic = ConnectionHold(lambda body: provider.forward(source, body),
                             lambda name: provider.probe_control(source, "POST", "/forward/stop", {"name": name}),
                             traffic_request)
    with hold, traffic:
        say(f"holding {HELD_CONNECTIONS} connections {first} -> {last} and sending {TRAFFIC_RATE_RPS} calls/s to "
            f"{target}; upgrading to {to_version}")
        started = time.monotonic()
        provider.upgrade_mesh(to_version, say)
        provider.restart_probes(RESTART_NAMESPACE, say)
        covered = hold.running and traffic.running  # both outlived every upgrade step
        say(f"upgrade steps took {time.monotonic() - started:.0f} s")
        connections = held_connections_verdict(hold.result(), config.budgets.upgrade_connection_resets, covered)
        during = traffic_verdict(traffic.answer(), config, covered)
    for namespace in (UPGRADE_NAMESPACE, RESTART_NAMESPACE):
        provider.delete_namespace(namespace)
    return during, connections


def held_connections_verdict(connections: HeldConnections, budget: int, covered: bool) -> dict[str, Any]:
    """What became of the held connections, against ``budget`` lost: every connection beyond the ones held, and
    every connection a call failed on, is one the upgrade took down (``HeldConnections``)."""
    return {"held": connections.held, "calls": len(connections.calls), "connectionsOpened": connections.opened,
            "lost": connections.lost, "failedCalls": connections.failed_calls, "errors": connections.errors(),
            "budget": budget, "coveredUpgrade": covered,
            "withinBudget": bool(connections.calls) and covered and connections.lost <= budget}


def traffic_verdict(answer: Mapping[str, Any], config: RunConfig, covered: bool) -> dict[str, Any]:
    """The traffic during the upgrade (a probe's rate-mode summary, as a LoadResult) against the error-rate and
    cross-cluster p99 budgets; calls that ended before the upgrade did are no pass."""
    window_s = max(int(answer.get("durationUs") or 0) / 1e6, 0.001)
    profile = LoadProfile.from_config(config, rate_rps=TRAFFIC_RATE_RPS, users=TRAFFIC_CONNECTIONS, warmup_s=0,
                                      duration_s=window_s)
    result = result_of_forward(answer, profile, label="traffic during the upgrade", target=str(answer.get("url", "")))
    budgets = config.budgets
    p99_ms = result.percentile_ms("p99")
    return {"calls": result.requests, "errors": result.errors, "errorRatePct": round(result.error_rate_pct, 3),
            "p99Ms": round(p99_ms, 3), "errorKinds": dict(result.error_kinds), "coveredUpgrade": covered,
            "budgets": {"errorRatePct": budgets.error_rate_pct, "p99Ms": budgets.cross_cluster_p99_ms},
            "withinBudget": bool(result.requests) and covered and result.error_rate_pct <= budgets.error_rate_pct
            and p99_ms <= budgets.cross_cluster_p99_ms}


def _verdicts(path: Path, which: str) -> Report:
    """The catalogue's report, if it judged anything: a run in which every check broke (the environment failed)
    compared with another would show no regression, and the gate would pass on nothing."""
    report = Report.load(path)
    if not any(c.status in (Status.PASSED, Status.FAILED) for c in report.checks):
        raise EnvironmentBroken(f"the catalogue {which} the upgrade judged no check ({report.summary()}); see "
                                f"{path.with_suffix('.md')}")
    return report


def catalogue_argv(config: RunConfig, run_dir: Path, out: Path) -> list[str]:
    """``meshconf run`` arguments for the catalogue against the mesh in ``run_dir``, with every setting of
    ``config`` (the provider's, budgets, timeouts, load) in one profile, ``OUT.yaml`` beside ``OUT``: the config
    is resolved once, here, never re-spelled as flags."""
    profile = out.with_name(f"{out.name}.yaml")
    profile.write_text(yaml.safe_dump(config.as_profile(), sort_keys=False))
    return ["run", "--profile", str(profile), "--attach", str(run_dir), "--out", str(out)]


def _catalogue(config: RunConfig, run_dir: Path, out: Path, say: Callable[[str], None]) -> Path:
    argv = catalogue_argv(config, run_dir, out)
    say("$ meshconf " + " ".join(argv))
    done = subprocess.run([sys.executable, "-m", "conformance.cli", *argv], check=False)
    report = out / "conformance-report.json"
    if not report.is_file():  # exit 1 (non-conformant) still writes one: the gate compares it
        raise EnvironmentBroken(f"the catalogue run exited {done.returncode} without a report in {out} (its output "
                                "is above)")
    return report
