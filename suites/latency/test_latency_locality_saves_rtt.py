from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by, expect_latency_saving, expect_share


@check("latency-locality-saves-rtt", area=Area.LATENCY, features=[Feature.MULTI_CLUSTER, Feature.LINK_RTT], serial=True,
       description="Locality-preferred routing saves about the inter-cluster round trip against crossing the link")
def test_latency_locality_saves_rtt(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    scenario.deploy("server", "cluster2")
    client = scenario.deploy("client", "cluster1")

    # The comparison crosses the link by a route to the subset of cluster2's region, not by localityLbSetting
    # (a subset picks endpoints before any locality setting applies), so it stands whatever the mesh does with
    # locality: whether calls stay local is what the saving below judges.
    regions = {c.name: c.region for c in scenario.mesh.clusters()}
    scenario.apply("latency-locality-saves-rtt.yaml", far_region=regions["cluster2"])
    across_route = scenario.apply("latency-locality-saves-rtt.across.yaml")
    scenario.baseline("calls are routed across the link", lambda: scenario.call(client, server, count=10),
                      lambda result: expect_answered_by(result, ["cluster2"]))
    users = scenario.config.load.users_for(scenario.config.budgets.cross_cluster_p99_ms)  # same users both runs
    across = scenario.load(scenario.from_workload(client, server), label="across the link", users=users)

    scenario.delete(across_route)
    # only that the route is gone (cluster1 answers again, 1 call of 10 is enough): where the calls go is judged
    # under load, by the saving
    scenario.baseline("the route across the link is gone", lambda: scenario.call(client, server, count=10),
                      lambda result: expect_share(result, ["cluster1"], at_least_pct=10))
    local = scenario.load(scenario.from_workload(client, server), label="locality-preferred", users=users)
    scenario.attach_comparison("locality-preferred against across the link", across, local)

    budget = scenario.config.budgets.locality_rtt_saving_ms
    for percentile in ("p50", "p90"):
        scenario.measure(f"{percentile} saved by locality",
                         across.percentile_ms(percentile) - local.percentile_ms(percentile), "ms", budget,
                         comparison=">=")
    expect_latency_saving(local, across, "p50", budget)
    # one call in ten or more crossing the link (a mesh that spreads calls over both clusters) puts the p90 of
    # the locality-preferred run at the link's latency: no saving there
    expect_latency_saving(local, across, "p90", budget)
