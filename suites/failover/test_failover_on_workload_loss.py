from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by, expect_failover


@check("failover-on-workload-loss", area=Area.FAILOVER, features=[Feature.MULTI_CLUSTER, Feature.WORKLOAD_FAULTS],
       description="When the local workload is scaled to zero, calls are served by the other cluster")
def test_failover_on_workload_loss(scenario: Scenario) -> None:
    local = scenario.deploy("server", "cluster1")
    scenario.deploy("server", "cluster2")
    client = scenario.deploy("client", "cluster1")
    scenario.apply("failover-on-workload-loss.yaml")
    scenario.baseline("local calls stay in cluster1", lambda: scenario.call(client, local, count=10),
                      lambda result: expect_answered_by(result, ["cluster1"]))

    budgets = scenario.config.budgets
    with scenario.traffic(client, local) as traffic:
        traffic.wait(0.5)
        traffic.mark("scaled to zero")
        scenario.faults.scale(local, 0)
        traffic.wait_until(lambda t: t.stable("scaled to zero", "cluster2"), budgets.failover_shift_s + 1)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, "traffic across the loss")

    shift = timeline.reached("scaled to zero", "cluster2")
    scenario.measure("client-visible errors", timeline.errors_after("scaled to zero"), "calls",
                     budget=budgets.failover_errors)
    if shift is not None:
        scenario.measure("time to shift", shift, "s", budget=budgets.failover_shift_s)
    expect_failover(timeline, "scaled to zero", "cluster2", budgets.failover_errors, budgets.failover_shift_s)
