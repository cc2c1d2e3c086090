from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by, expect_failover


@check("failover-on-endpoint-failure", area=Area.FAILOVER, features=[Feature.MULTI_CLUSTER, Feature.WORKLOAD_FAULTS],
       description="When the local pod answers 503, outlier detection shifts traffic to the other cluster quickly")
def test_failover_on_endpoint_failure(scenario: Scenario) -> None:
    local = scenario.deploy("server", "cluster1")
    scenario.deploy("server", "cluster2")
    client = scenario.deploy("client", "cluster1")
    scenario.apply("failover-on-endpoint-failure.yaml")
    scenario.baseline("local calls stay in cluster1", lambda: scenario.call(client, local, count=10),
                      lambda result: expect_answered_by(result, ["cluster1"]))

    budgets = scenario.config.budgets
    with scenario.traffic(client, local) as traffic:
        traffic.wait(0.5)
        traffic.mark("failure")
        scenario.faults.set_mode(local, status=503)
        traffic.wait_until(lambda t: t.stable("failure", "cluster2"), budgets.failover_shift_s + 1)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, "traffic across the failure")

    shift = timeline.shift_time("failure", "cluster2")
    scenario.measure("client-visible errors", timeline.errors_after("failure"), "calls", budget=budgets.failover_errors)
    if shift is not None:
        scenario.measure("time to shift", shift, "s", budget=budgets.failover_shift_s)
    expect_failover(timeline, "failure", "cluster2", budgets.failover_errors, budgets.failover_shift_s)
