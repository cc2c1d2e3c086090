"""Load runs and their exact latency histograms (Locust in its own process, or a probe's paced forward).

::

    profile = LoadProfile.from_config(config, rate_rps=500)
    result = run_locust(HttpTarget("127.11.128.3", 15001, host="server.ns.svc.cluster.local:8080"),
                        profile, out_dir)                         # north-south, or through a sidecar
    result = run_forward_load(mesh, ForwardTarget(client, server.url()), profile)  # east-west, in the mesh
    result.p99_us, result.achieved_rps, result.error_rate_pct, result.timeline

Both raise LoadShortfall (broken, no verdict) when the generator could not produce the rate asked.
Plots live in ``conformance.load.plots`` (imports matplotlib when called).
"""

from conformance.load.forward import run_forward_load
from conformance.load.locust_process import LocustRun, locustfile_source, run_locust, start_locust
from conformance.load.profile import ForwardTarget, HttpTarget, LoadProfile, direct_entry, sidecar_entry
from conformance.load.result import LoadEvent, LoadResult, LoadShortfall, Second

__all__ = [
    "ForwardTarget",
    "HttpTarget",
    "LoadEvent",
    "LoadProfile",
    "LoadResult",
    "LoadShortfall",
    "LocustRun",
    "Second",
    "direct_entry",
    "locustfile_source",
    "run_forward_load",
    "run_locust",
    "sidecar_entry",
    "start_locust",
]
