from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by, expect_error_rate_within, expect_latency_within


@check("latency-cross-cluster-budget", area=Area.LATENCY, serial=True,
       features=[Feature.MULTI_CLUSTER, Feature.LINK_RTT],
       description="Under paced load, calls from cluster1 to a service only in cluster2 stay within the p99 budget")
def test_latency_cross_cluster_budget(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster2")
    client = scenario.deploy("client", "cluster1")

    scenario.apply("latency-cross-cluster-budget.yaml")
    scenario.baseline("cluster2's server answers", lambda: scenario.call(client, server, count=3),
                      lambda result: expect_answered_by(result, ["cluster2"]))

    budgets = scenario.config.budgets
    result = scenario.load(scenario.from_workload(client, server),
                           users=scenario.config.load.users_for(budgets.cross_cluster_p99_ms))

    scenario.measure("p50 across clusters under load", result.percentile_ms("p50"), "ms")
    scenario.measure("p99 across clusters under load", result.percentile_ms("p99"), "ms", budgets.cross_cluster_p99_ms)
    scenario.measure("error rate under load", result.error_rate_pct, "%", budgets.error_rate_pct)
    expect_latency_within(result, "p99", budgets.cross_cluster_p99_ms)
    expect_error_rate_within(result, budgets.error_rate_pct)
