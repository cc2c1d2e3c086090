"""What every benchmark stands on: a local mesh of its own with a client and a STRICT server, torn down after.

Benchmarks print figures; they are not tests and assert nothing. Each load loop is bounded in count and
in time, and every run is kept short: the machine is shared.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout: python benchmarks/x.py

from conformance.load import HttpTarget, LoadProfile, LoadResult, LoadShortfall, direct_entry, run_locust, sidecar_entry
from conformance.provider import ProbeSpec
from conformance.providers import build_config
from conformance.providers.local.provider import LocalProvider
from conformance.topology import load_topology

NAMESPACE = "bench"
STRICT = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
          "metadata": {"name": "default", "namespace": NAMESPACE}, "spec": {"mtls": {"mode": "STRICT"}}}


@dataclass(frozen=True)
class Paths:
    direct: HttpTarget
    """Straight to the server's app: no sidecar."""
    mesh: HttpTarget
    """Into the client's sidecar: client sidecar -> mTLS (STRICT) -> server sidecar -> app."""
    work: Path
    """A scratch directory for Locust's files."""


@contextmanager
def local_mesh() -> Iterator[Paths]:
    """Bring up a two-cluster local mesh with a client and a server in cluster1; always tear it down."""
    with tempfile.TemporaryDirectory(prefix="meshconf-bench-") as scratch:
        os.environ.setdefault("MESHCONF_STATE_DIR", str(Path(scratch) / "runs"))
        provider = LocalProvider(build_config(), load_topology("multi-primary"))
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              f"on {os.cpu_count()} cores (other work on this machine shows in every figure)", flush=True)
        try:
            provider.up(progress=lambda line: print(line, flush=True))
            server = provider.deploy_probe(ProbeSpec("server", NAMESPACE, "cluster1"))
            client = provider.deploy_probe(ProbeSpec("client", NAMESPACE, "cluster1"))
            provider.apply([STRICT], ["cluster1", "cluster2"])
            yield Paths(direct_entry(server), sidecar_entry(client, server), Path(scratch))
        finally:
            provider.down()
            print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


def profile(rate_rps: float, *, users: int | None = None, duration_s: float = 8.0,
            warmup_s: float = 2.0) -> LoadProfile:
    """``users`` defaults to one per 10 rps: a user's 100 ms between calls absorbs this machine's hiccups."""
    users = users or max(10, math.ceil(rate_rps / 10))
    return LoadProfile(rate_rps=rate_rps, users=users, spawn_rate_per_s=max(100.0, users), warmup_s=warmup_s,
                       duration_s=duration_s, timeout_s=2.0)


def line(result: LoadResult) -> str:
    return (f"{result.label:<28} {result.achieved_rps:8.1f} rps ({result.rate_pct:5.1f}%)  "
            f"p50 {result.p50_us / 1000:7.3f} ms  p99 {result.p99_us / 1000:7.3f} ms  "
            f"p99.9 {result.p999_us / 1000:7.3f} ms  errors {result.errors}  "
            f"generator CPU {result.generator_cpu_pct:4.0f}%")


def measure(target: HttpTarget, load: LoadProfile, out_dir: Path) -> LoadResult | None:
    """One Locust run, printed; None (and a line saying so) when the generator fell short of the rate."""
    try:
        result = run_locust(target, load, out_dir)
    except LoadShortfall as shortfall:
        assert shortfall.result is not None
        print(f"{line(shortfall.result)}  <- short of the rate: not counted", flush=True)
        return None
    print(line(result), flush=True)
    return result


def median_ms(results: Sequence[LoadResult], name: str) -> float:
    return statistics.median(r.percentile_ms(name) for r in results)


class Deadline:
    """A benchmark's time bound: loops stop starting runs once it has passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() > self.at
