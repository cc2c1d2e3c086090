from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by, expect_latency_saving


@check("latency-locality-saves-rtt", area=Area.LATENCY, features=[Feature.MULTI_CLUSTER, Feature.LINK_RTT], serial=True,
       description="Locality-preferred routing saves about the inter-cluster round trip against crossing the link")
def test_latency_locality_saves_rtt(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    scenario.deploy("server", "cluster2")
    client = scenario.deploy("client", "cluster1")

    regions = {c.name: c.region for c in scenario.mesh.clusters()}
    scenario.apply("latency-locality-saves-rtt.remote.yaml", near_region=regions["cluster1"],
                   far_region=regions["cluster2"])
    scenario.baseline("calls are routed across the link", lambda: scenario.call(client, server, count=10),
                      lambda result: expect_answered_by(result, ["cluster2"]))
    users = scenario.config.load.users_for(scenario.config.budgets.cross_cluster_p99_ms)  # same users both runs
    across = scenario.load(scenario.from_workload(client, server), label="across the link", users=users)

    scenario.apply("latency-locality-saves-rtt.yaml")
    scenario.baseline("locality-preferred calls stay in cluster1", lambda: scenario.call(client, server, count=10),
                      lambda result: expect_answered_by(result, ["cluster1"]))
    local = scenario.load(scenario.from_workload(client, server), label="locality-preferred", users=users)
    scenario.attach_comparison("locality-preferred against across the link", across, local)

    budget = scenario.config.budgets.locality_rtt_saving_ms
    scenario.measure("p50 saved by locality", across.percentile_ms("p50") - local.percentile_ms("p50"), "ms",
                     budget, comparison=">=")
    expect_latency_saving(local, across, "p50", budget)
    expect_latency_saving(local, across, "p90", budget)
