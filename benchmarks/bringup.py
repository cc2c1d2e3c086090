"""Benchmark: how long the local mesh takes to come up at scale, its memory, and its control planes' pushes.

Prints, for each topology: mesh process up (control planes, CA, gateways); the time to deploy the in-mesh
workloads (by default 10 services x 5 pods per cluster: 100 sidecars in two clusters, plus gateways); one
config change that reaches every sidecar (an AuthorizationPolicy for the namespace) and how long ``apply``
took; the memory of every process of the mesh (RSS, and PSS, which counts shared pages once: Envoy
processes share most of their binary); and the control planes' push-to-ACK times (from their timelines:
per reason, over every proxy a push changed).

    python benchmarks/bringup.py [--topology multi-primary --topology multi-network] [--services 10] [--pods 5]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from conformance.provider import ProbeSpec
from conformance.providers import build_config
from conformance.providers.local.provider import LocalProvider
from conformance.topology import load_topology


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in kB."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def _mesh_processes(run_dir: Path) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {"mesh process": [], "envoy": [], "probe": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(run_dir) not in cmdline:
            continue
        kind = "envoy" if "envoy" in cmdline.split()[0] else "probe" if "probe.py" in cmdline else "mesh process"
        found[kind].append(int(entry.name))
    return found


def _percentiles(values: list[float]) -> str:
    if not values:
        return "no pushes"
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return (f"n={len(ordered):5d}  p50 {cuts[49]:7.1f} ms  p90 {cuts[89]:7.1f} ms  p99 {cuts[98]:7.1f} ms  "
            f"max {ordered[-1]:7.1f} ms")


def bench(topology_name: str, services: int, pods: int) -> None:
    topology = load_topology(topology_name)
    provider = LocalProvider(build_config(topology=topology_name), topology)
    started = time.perf_counter()
    provider.up()
    up_s = time.perf_counter() - started
    try:
        namespace = f"bench-{secrets.token_hex(3)}"
        started = time.perf_counter()
        for cluster in topology.cluster_names:
            for index in range(services):
                provider.deploy_probe(ProbeSpec(f"svc{index}", namespace, cluster, replicas=pods))
        deploy_s = time.perf_counter() - started
        sidecars = services * pods * len(topology.clusters)
        policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                  "metadata": {"name": "bench", "namespace": namespace},
                  "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/never"]}}]}]}}
        started = time.perf_counter()
        provider.apply([policy], [c.name for c in topology.clusters if c.config_cluster == c.name])
        apply_s = time.perf_counter() - started
        assert provider.run_dir is not None
        processes = _mesh_processes(provider.run_dir)
        envoys = len(processes["envoy"])
        print(f"{topology_name}: mesh up (control planes, CA, {envoys - sidecars} gateways) in {up_s:.2f} s")
        print(f"{topology_name}: {sidecars} in-mesh pods ({services} services x {pods} pods per cluster) deployed "
              f"in {deploy_s:.1f} s ({deploy_s / sidecars * 1000:.0f} ms each, every change ACKed by every proxy)")
        print(f"{topology_name}: an AuthorizationPolicy for every sidecar applied (pushed and ACKed) in "
              f"{apply_s:.2f} s")
        total_rss = total_pss = 0
        for kind, pids in processes.items():
            rss = sum(_memory_kb(p)[0] for p in pids)
            pss = sum(_memory_kb(p)[1] for p in pids)
            total_rss, total_pss = total_rss + rss, total_pss + pss
            print(f"{topology_name}:   {len(pids):4d} {kind:<12} RSS {rss / 1024:8.1f} MB   PSS {pss / 1024:8.1f} MB")
        print(f"{topology_name}: whole mesh ({envoys} Envoys): RSS {total_rss / 1024:.0f} MB, "
              f"PSS {total_pss / 1024:.0f} MB")
        with tempfile.TemporaryDirectory() as folder:
            files = provider.diagnostics(Path(folder), [])
            timelines = json.loads(next(f for f in files if f.name == "xds-pushes.json").read_text())
        by_reason: dict[str, list[float]] = {}
        for pushes in timelines.values():
            for push in pushes:
                for outcome in push["proxies"].values():
                    if "ackMs" in outcome:
                        by_reason.setdefault(push["reason"], []).append(outcome["ackMs"])
        print(f"{topology_name}: push -> ACK per proxy (a starting Envoy's includes its own start-up):")
        for reason, values in sorted(by_reason.items()):
            print(f"{topology_name}:   {reason:<14} {_percentiles(values)}")
    finally:
        provider.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", action="append", default=None)
    parser.add_argument("--services", type=int, default=10, help="services per cluster (default 10)")
    parser.add_argument("--pods", type=int, default=5, help="pods per service (default 5)")
    args = parser.parse_args()
    os.environ.setdefault("MESHCONF_STATE_DIR", tempfile.mkdtemp(prefix="meshconf-bench-"))
    for topology in args.topology or ["multi-primary", "multi-network"]:
        bench(topology, args.services, args.pods)


if __name__ == "__main__":
    main()
