"""Benchmark: how long the local mesh takes to come up, and how much memory it uses.

Prints, for each topology: mesh process up (control planes, CA, gateways), then the time to deploy enough
in-mesh workloads for about 20 Envoys, and the memory of every process of the mesh (RSS, and PSS, which
counts shared pages once: Envoy processes share most of their binary).

    python benchmarks/bringup.py [--topology multi-primary --topology multi-network] [--workloads 8]
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from pathlib import Path

from conformance.config import RunConfig
from conformance.provider import ProbeSpec
from conformance.providers.local import LocalProvider
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


def bench(topology_name: str, workloads: int) -> None:
    topology = load_topology(topology_name)
    provider = LocalProvider(RunConfig.build(topology=topology_name), topology)
    started = time.perf_counter()
    provider.up()
    up_s = time.perf_counter() - started
    try:
        namespace = f"bench-{secrets.token_hex(3)}"
        started = time.perf_counter()
        for cluster in topology.cluster_names:
            for index in range(workloads):
                provider.deploy_probe(ProbeSpec(f"svc{index}", namespace, cluster))
        deploy_s = time.perf_counter() - started
        assert provider.run_dir is not None
        processes = _mesh_processes(provider.run_dir)
        gateways = len(processes["envoy"]) - workloads * len(topology.clusters)
        print(f"{topology_name}: mesh up (control planes, CA, {gateways} gateways) in {up_s:.2f} s")
        print(f"{topology_name}: {workloads * len(topology.clusters)} in-mesh workloads deployed in {deploy_s:.2f} s "
              f"({deploy_s / (workloads * len(topology.clusters)) * 1000:.0f} ms each, every proxy re-verified)")
        total_rss = total_pss = 0
        for kind, pids in processes.items():
            rss = sum(_memory_kb(p)[0] for p in pids)
            pss = sum(_memory_kb(p)[1] for p in pids)
            total_rss, total_pss = total_rss + rss, total_pss + pss
            print(f"{topology_name}:   {len(pids):3d} {kind:<12} RSS {rss / 1024:7.1f} MB   PSS {pss / 1024:7.1f} MB")
        envoys = len(processes["envoy"])
        print(f"{topology_name}: whole mesh ({envoys} Envoys): RSS {total_rss / 1024:.0f} MB, "
              f"PSS {total_pss / 1024:.0f} MB")
    finally:
        provider.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", action="append", default=None)
    parser.add_argument("--workloads", type=int, default=8, help="in-mesh workloads per cluster (default 8)")
    args = parser.parse_args()
    os.environ.setdefault("MESHCONF_STATE_DIR", tempfile.mkdtemp(prefix="meshconf-bench-"))
    for topology in args.topology or ["multi-primary", "multi-network"]:
        bench(topology, args.workloads)


if __name__ == "__main__":
    main()
