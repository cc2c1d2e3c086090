from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_ok, expect_error_rate_within, expect_latency_within


@check("latency-ingress-budget", area=Area.LATENCY, features=[Feature.INGRESS_GATEWAY], serial=True,
       description="Under paced Locust load through the ingress gateway, p99 and errors stay within their budgets")
def test_latency_ingress_budget(scenario: Scenario) -> None:
    scenario.deploy("server", "cluster1")
    outsider = scenario.deploy("outsider", "cluster1", in_mesh=False)

    scenario.apply("latency-ingress-budget.yaml")
    host = f"load.{scenario.namespace}.example.com"  # the gateway is shared: a host of the check's own
    ingress = scenario.ingress_url("cluster1")
    scenario.baseline("the ingress gateway serves the route",
                      lambda: scenario.call(outsider, ingress, headers={"Host": host}, count=3), expect_all_ok)

    result = scenario.load(scenario.through_ingress("cluster1", host))

    budgets = scenario.config.budgets
    scenario.measure("p99 through the ingress gateway", result.percentile_ms("p99"), "ms", budgets.ingress_p99_ms)
    scenario.measure("error rate under load", result.error_rate_pct, "%", budgets.error_rate_pct)
    expect_latency_within(result, "p99", budgets.ingress_p99_ms)
    expect_error_rate_within(result, budgets.error_rate_pct)
