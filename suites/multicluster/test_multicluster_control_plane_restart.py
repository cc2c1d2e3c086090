"""A primary's control plane restarted under cross-cluster load (``kubectl rollout restart deploy/istiod``). A new
istiod serves its proxies only once its caches, remote clusters included, have synced
(pilot/pkg/bootstrap/server.go ``cachesSynced``; until then pilot/pkg/xds/ads.go refuses ADS streams, "server is
not ready to serve discovery information"), so its first state-of-the-world push never lacks the other clusters'
endpoints: the client's sidecar must hold every one of them at every moment of the restart."""

from conformance import Area, Feature, Scenario, check
from conformance.connections import endpoint_count, outbound_cluster
from conformance.expect import (
    expect_all_status,
    expect_endpoints_kept,
    expect_no_failed_calls,
    expect_reached_clusters,
)
from conformance.provider import DATA_PORT


@check("multicluster-control-plane-restart", area=Area.MULTICLUSTER, serial=True,
       features=[Feature.MULTI_CLUSTER, Feature.CONTROL_PLANE_FAULTS],
       description="A primary's control plane restarts under cross-cluster load with zero failed calls, its proxies "
                   "never lose the other clusters' endpoints, and config applied after the restart takes effect")
def test_multicluster_control_plane_restart(scenario: Scenario) -> None:
    primary = scenario.primaries[0]
    far = [c for c in scenario.clusters if c != primary]
    scenario.require(bool(far), "a cluster besides the primary")
    server, *_ = [scenario.deploy("server", cluster) for cluster in far]  # only in the other clusters
    client = scenario.deploy("client", primary)
    scenario.baseline(f"the client reaches {', '.join(far)}", lambda: scenario.call(client, server, count=20),
                      lambda result: expect_reached_clusters(result, far))
    endpoints = endpoint_count(scenario.admin(client, "/clusters"), outbound_cluster(server.host, DATA_PORT))

    faults = scenario.faults
    watching = scenario.config.timeouts.control_plane_s + scenario.config.timeouts.consistency_s
    with scenario.watch_endpoints(client, server, max_seconds=watching) as watch, \
            scenario.traffic(client, server, min_batch_s=0.1) as traffic:
        traffic.wait(0.5)
        traffic.mark("restart")
        faults.restart_control_plane(primary)
        traffic.mark("restarted")
        scenario.apply("multicluster-control-plane-restart.yaml", [primary])
        applied = scenario.await_convergence(
            lambda: scenario.call(client, server.url("/after-restart"), count=3, attach=False),
            lambda result: expect_all_status(result, 418))
        traffic.mark("config applied")
        traffic.wait(0.5)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, f"traffic to {', '.join(far)} across the restart of {primary}'s control plane")

    samples = watch.samples
    fewest = min((count for _, count in samples), default=0)
    scenario.measure("the service's endpoints at the client's sidecar before the restart", endpoints, "endpoints")
    scenario.measure("fewest endpoints the client's sidecar held during the restart", fewest, "endpoints",
                     budget=endpoints, comparison=">=")
    scenario.measure("endpoint reads during the restart", len(samples), "reads")
    scenario.measure("failed calls across the restart", len(timeline.failures()), "calls", budget=0)
    scenario.measure("config applied after the restart took effect", applied.elapsed_s, "s")
    expect_endpoints_kept(samples, endpoints, f"the restart of {primary}'s control plane")
    expect_no_failed_calls(timeline, across="restart")
