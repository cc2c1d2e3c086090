"""The canary upgrade by revision (Istio's "Canary Upgrades" guide), as steps after the V1 install.

0. Preload V2's images (pilot, proxyv2) into every cluster, as the install preloaded V1's (images.py).
1. Install V2's control plane beside V1 as revision ``<major>-<minor>-<patch>`` (V2's istioctl).
2. Upgrade each east-west gateway in place to that revision.
3. Point the ``default`` revision tag at V2: namespaces labelled ``istio-injection=enabled`` now get V2 proxies.
4. Restart the probe workloads onto V2 while continuous traffic flows between clusters (measured).
Through steps 1-4 a client in another cluster holds keep-alive connections to a server, neither of which is
restarted (Cilium's upgrade tests make this a gate): a canary upgrade must not reset them, and every lost
connection counts against ``Budgets.upgrade_connection_resets`` (default 0).
V1's control plane is left running until the kind clusters are deleted: removing it is not part of the gate.
Topologies with remote clusters are refused: their injection and discovery point at the V1 istiod service.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from conformance.certs import MeshCA
from conformance.config import RunConfig
from conformance.connections import HeldConnections, hold_request
from conformance.errors import UsageError
from conformance.providers.kind import images as i
from conformance.providers.kind import manifests as m
from conformance.providers.kind.plan import SMOKE_NAMESPACE, PlanContext, preload
from conformance.providers.kind.settings import KindSettings
from conformance.providers.kind.steps import Command, Manifest, Step
from conformance.topology import Role, Topology

__all__ = ["HELD_CONNECTIONS", "held_connections_verdict", "revision_name", "run_upgrade", "upgrade_steps"]

HELD_CONNECTIONS = 8
"""Keep-alive connections held across clusters through the upgrade (one call a second on each)."""
UPGRADE_NAMESPACE = "meshconf-upgrade"
"""Where the workloads that are not restarted live (the restart step restarts only SMOKE_NAMESPACE)."""


def revision_name(version: str) -> str:
    """``1.28.0`` -> ``1-28-0`` (a revision is a DNS label)."""
    return version.replace(".", "-").lower()


def upgrade_steps(ctx: PlanContext, to_version: str, istioctl_to: str, first_number: int) -> list[Step]:
    """The canary steps, numbered from ``first_number``; ``ctx`` is the V1 plan's context."""
    if any(c.role is Role.REMOTE for c in ctx.topology.clusters):
        raise UsageError(f"meshconf upgrade does not handle remote clusters yet (topology {ctx.topology.name}); "
                         "use multi-primary or multi-network")
    revision = revision_name(to_version)
    primaries = list(ctx.topology.primaries)

    def istioctl(cluster: str, *args: str) -> tuple[str, ...]:
        return (istioctl_to, *args, "--kubeconfig", ctx.kubeconfig, "--context", f"kind-{cluster}")

    install, overlays = [], []
    for cluster in primaries:
        overlay = Manifest(f"{cluster.name}/istio-{revision}.yaml",
                           (m.install_overlay(cluster, ctx.topology, ctx.addresses, revision, hub=ctx.hub,
                                              tag=to_version),))
        overlays.append(overlay)
        install += [
            Command(istioctl(cluster.name, "install", "-y", "-f", overlay.shown_path), cluster=cluster.name),
            Command(ctx.kubectl(cluster.name, "-n", "istio-system", "rollout", "status",
                                f"deployment/istiod-{revision}", "--timeout=300s"), cluster=cluster.name),
        ]
    gateways, gateway_manifests = [], []
    for cluster in primaries:
        if not m.needs_east_west_gateway(cluster, ctx.topology):
            continue
        gateway = Manifest(f"{cluster.name}/eastwest-gateway-{revision}.yaml",
                           (m.east_west_gateway(cluster, ctx.topology, ctx.addresses[cluster.name], revision,
                                                hub=ctx.hub, tag=to_version),))
        gateway_manifests.append(gateway)
        gateways += [
            Command(istioctl(cluster.name, "install", "-y", "-f", gateway.shown_path), cluster=cluster.name),
            Command(ctx.kubectl(cluster.name, "-n", "istio-system", "rollout", "status",
                                f"deployment/{m.EAST_WEST_GATEWAY}", "--timeout=300s"), cluster=cluster.name),
        ]
    tags = [Command(istioctl(c.name, "tag", "set", "default", f"--revision={revision}", "--overwrite", "-y"),
                    cluster=c.name) for c in primaries]
    restarts = []
    for cluster in ctx.topology.clusters:
        restarts += [
            Command(ctx.kubectl(cluster.name, "-n", SMOKE_NAMESPACE, "rollout", "restart", "deployment"),
                    cluster=cluster.name),
            Command(ctx.kubectl(cluster.name, "-n", SMOKE_NAMESPACE, "rollout", "status", "deployment",
                                "--timeout=300s"), cluster=cluster.name),
        ]
    steps = [
        Step(0, "preload", f"Pull Istio {to_version}'s images once and load them into every cluster",
             "as the install did for the first version: no node pulls from the registry",
             tuple(preload(i.istio_images(to_version, ctx.image_hub), ctx.topology.clusters))),
        Step(0, "canary", f"Install Istio {to_version} beside {ctx.istio_version} as revision {revision}",
             "two control planes side by side; proxies stay on the old one until restarted",
             tuple(install), tuple(overlays), parallel=True),
        Step(0, "gateways", f"Upgrade the east-west gateways in place to revision {revision}",
             "gateways are upgraded in place, as Istio's guide recommends", tuple(gateways), tuple(gateway_manifests)),
        Step(0, "tag", f"Point the default revision tag at {revision}",
             "istio-injection=enabled namespaces now get the new proxies", tuple(tags)),
        Step(0, "restart", f"Restart the probe workloads onto {to_version} under continuous traffic",
             f"meshconf counts errors and measures p99 of the traffic flowing meanwhile; the {HELD_CONNECTIONS} "
             f"connections held since the canary step (workloads in {UPGRADE_NAMESPACE}, not restarted) must "
             "survive", tuple(restarts)),
    ]
    return [Step(first_number + n, s.key, s.title, s.why, s.commands, s.manifests, s.parallel)
            for n, s in enumerate(steps)]


# -- running it ---------------------------------------------------------------------------------------------

Catalogue = Callable[[RunConfig, Path, Path, Callable[[str], None]], Path]


def run_upgrade(config: RunConfig, topology: Topology, to_version: str, out: Path, say: Callable[[str], None],
                *, provider: Any = None, istioctl_to: Path | None = None, catalogue: Catalogue | None = None) -> int:
    """Install V1, run the catalogue, canary-upgrade to V2 under traffic, run the catalogue again, gate.

    Writes ``out/before/``, ``out/after/`` (full reports), ``out/upgrade.json`` (traffic and held connections
    during the upgrade against their budgets) and ``out/gate.txt``. Returns the exit code: 1 on any regression
    or budget overrun. ``provider`` (a KindProvider, not yet up), ``istioctl_to`` and ``catalogue`` are seams
    for tests; by default they are a new KindProvider, V2's verified istioctl and ``meshconf run --attach``.
    """
    from conformance.provider import ProbeSpec
    from conformance.providers.kind.istioctl import resolve_istioctl
    from conformance.providers.kind.provider import KindProvider, plan_context
    from conformance.providers.kind.runner import run_steps
    from conformance.report.gate import compare_reports, render_gate
    from conformance.report.model import Report
    from conformance.runstate import RunState

    provider = provider or KindProvider(replace(config, keep=False), topology)
    run_catalogue = catalogue or _catalogue
    provider.up(progress=say)
    try:
        assert provider.run_dir is not None
        before = run_catalogue(config, provider.run_dir, out / "before", say)
        state = RunState(provider.run_dir).read()
        ctx = plan_context(config, topology, MeshCA.load(provider.run_dir / "ca"), str(state["istioctl"]),
                           state.get("kind_subnet"))
        steps = upgrade_steps(ctx, to_version, str(istioctl_to or resolve_istioctl(to_version)), 1)
        variables = dict(state.get("variables", {}))
        run_steps(provider.runner, steps[:1], provider.run_dir, variables, say)  # preload: before the clock

        # held connections: a client and a server in different clusters, in a namespace nothing restarts
        first, last = topology.clusters[0].name, topology.clusters[-1].name
        held_server = provider.deploy_probe(ProbeSpec(service="held", namespace=UPGRADE_NAMESPACE, cluster=last))
        held_client = provider.deploy_probe(ProbeSpec(service="holder", namespace=UPGRADE_NAMESPACE, cluster=first))
        hold_ms = int(min(config.timeouts.upgrade_hold_s, 590.0) * 1000)
        held_request = hold_request(held_server.url(), HELD_CONNECTIONS, hold_ms / 1000, config.timeouts.call_timeout_s)
        held: list[Any] = []
        holding = threading.Thread(target=lambda: held.append(provider.forward(held_client, held_request)),
                                   daemon=True)
        held_until = time.monotonic() + hold_ms / 1000
        holding.start()
        run_steps(provider.runner, steps[1:-1], provider.run_dir, variables, say)

        source = provider.deploy_probe(ProbeSpec(service="traffic", namespace=UPGRADE_NAMESPACE, cluster=first))
        url = f"http://smoke.{SMOKE_NAMESPACE}.svc.cluster.local:8080/"
        answers: list[Any] = []
        request = {"url": url, "rate": 20, "duration_ms": 240_000, "max_duration_ms": 300_000, "summary": True,
                   "timeout_ms": int(config.timeouts.call_timeout_s * 1000)}
        traffic = threading.Thread(target=lambda: answers.append(provider.forward(source, request)), daemon=True)
        traffic.start()
        run_steps(provider.runner, steps[-1:], provider.run_dir, variables, say)
        covered = time.monotonic() <= held_until  # the held connections outlived every upgrade step
        traffic.join()
        holding.join()
        during = _traffic_verdict(answers[0] if answers else {}, config)
        connections = held_connections_verdict(held[0] if held else {}, HELD_CONNECTIONS,
                                               config.budgets.upgrade_connection_resets, covered)
        settings = config.settings_as(KindSettings)
        (out / "upgrade.json").write_text(json.dumps({"from": settings.istio_version, "to": to_version, **during,
                                                      "heldConnections": connections}, indent=2) + "\n")
        after = run_catalogue(replace(config, settings=replace(settings, istio_version=to_version)), provider.run_dir,
                              out / "after", say)
        reports = Report.load(before), Report.load(after)
        rows = compare_reports(*reports)
        text = render_gate(*reports, rows)
        (out / "gate.txt").write_text(text)
        say(text.rstrip())
        say(f"during the upgrade: {during['errors']} errors of {during['calls']} calls, p99 {during['p99Ms']} ms "
            f"({'within' if during['withinBudget'] else 'OVER'} budget)")
        say(f"held connections: {connections['lost']} of {connections['held']} lost (budget "
            f"{connections['budget']}; {'within' if connections['withinBudget'] else 'OVER'} budget)"
            + ("" if covered else "; they ended before the upgrade did: raise --timeout upgrade_hold_s"))
        return 1 if (any(r.regression for r in rows) or not during["withinBudget"]
                     or not connections["withinBudget"]) else 0
    finally:
        provider.down()


def held_connections_verdict(answer: Mapping[str, Any], held: int, budget: int, covered: bool) -> dict[str, Any]:
    """How many of the ``held`` keep-alive connections of a probe ``/forward`` answer (per-call records) were
    lost (``conformance.connections.HeldConnections``): every connection beyond ``held``, and every connection a
    call failed on, is a connection the upgrade took down."""
    connections = HeldConnections.from_answer(answer, held)
    return {"held": held, "calls": len(connections.calls), "connectionsOpened": connections.opened,
            "lost": connections.lost, "failedCalls": connections.failed_calls, "errors": connections.errors(),
            "budget": budget, "coveredUpgrade": covered,
            "withinBudget": bool(connections.calls) and covered and connections.lost <= budget}


def _catalogue(config: RunConfig, run_dir: Path, out: Path, say: Callable[[str], None]) -> Path:
    argv = [sys.executable, "-m", "conformance.cli", "run", "--provider", "kind", "--topology", config.topology,
            "--istio-version", str(config.settings_as(KindSettings).istio_version), "--attach", str(run_dir),
            "--out", str(out)]
    say("$ " + " ".join(argv[1:]))
    subprocess.run(argv, check=False)
    return out / "conformance-report.json"


def _traffic_verdict(answer: Mapping[str, Any], config: RunConfig) -> dict[str, Any]:
    # the probe counts a call without a response as status 0 in "statuses" (and by error in "errors")
    statuses = {int(k): int(v) for k, v in (answer.get("statuses") or {}).items()}
    calls = sum(statuses.values())
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    latencies = sorted(int(v) for v in answer.get("latenciesUs") or [])
    p99_ms = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000 if latencies else 0.0
    error_pct = 100.0 * (calls - ok) / calls if calls else 100.0
    budgets = config.budgets
    return {"calls": calls, "errors": calls - ok, "errorRatePct": round(error_pct, 3), "p99Ms": round(p99_ms, 3),
            "budgets": {"errorRatePct": budgets.error_rate_pct, "p99Ms": budgets.cross_cluster_p99_ms},
            "withinBudget": bool(calls) and error_pct <= budgets.error_rate_pct
            and p99_ms <= budgets.cross_cluster_p99_ms}
