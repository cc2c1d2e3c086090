from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by, expect_failover


@check("failover-failback", area=Area.FAILOVER, features=[Feature.MULTI_CLUSTER, Feature.WORKLOAD_FAULTS],
       description="When the local pod recovers, traffic returns to it within the ejection time and an interval")
def test_failover_failback(scenario: Scenario) -> None:
    local = scenario.deploy("server", "cluster1")
    scenario.deploy("server", "cluster2")
    client = scenario.deploy("client", "cluster1")
    scenario.apply("failover-failback.yaml")
    scenario.baseline("local calls stay in cluster1", lambda: scenario.call(client, local, count=10),
                      lambda result: expect_answered_by(result, ["cluster1"]))
    scenario.faults.set_mode(local, status=503)
    scenario.baseline("with the local pod failing, calls are served by cluster2",
                      lambda: scenario.call(client, local, count=10),
                      lambda result: expect_answered_by(result, ["cluster2"]))

    budgets = scenario.config.budgets
    with scenario.traffic(client, local) as traffic:
        traffic.wait(0.3)
        traffic.mark("recovery")
        scenario.faults.set_mode(local, status=None)
        traffic.wait_until(lambda t: t.stable("recovery", "cluster1"), budgets.failback_s + 2)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, "traffic across the recovery")

    back = timeline.shift_time("recovery", "cluster1")
    if back is not None:
        scenario.measure("time to fail back", back, "s", budget=budgets.failback_s)
    expect_failover(timeline, "recovery", "cluster1", max_errors=0, max_shift_s=budgets.failback_s)
