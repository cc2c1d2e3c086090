from conformance import Area, Scenario, check
from conformance.expect import expect_all_ok, expect_error_rate_within, expect_latency_within


@check("latency-in-cluster-budget", area=Area.LATENCY, serial=True,
       description="Under paced load, calls between two workloads in one cluster stay within the p99 and error budgets")
def test_latency_in_cluster_budget(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1")

    scenario.apply("latency-in-cluster-budget.yaml")
    scenario.baseline("the server answers", lambda: scenario.call(client, server, count=3), expect_all_ok)

    result = scenario.load(scenario.from_workload(client, server))

    budgets = scenario.config.budgets
    scenario.measure("p99 under load", result.percentile_ms("p99"), "ms", budgets.in_cluster_p99_ms)
    scenario.measure("error rate under load", result.error_rate_pct, "%", budgets.error_rate_pct)
    expect_latency_within(result, "p99", budgets.in_cluster_p99_ms)
    expect_error_rate_within(result, budgets.error_rate_pct)
