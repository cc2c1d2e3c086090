from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by, expect_failover


@check("failover-on-endpoint-failure", area=Area.FAILOVER, features=[Feature.MULTI_CLUSTER, Feature.WORKLOAD_FAULTS],
       description="When the local pod answers 503, outlier detection shifts traffic to the other cluster quickly, "
                   "and again after the still-failing pod is re-admitted")
def test_failover_on_endpoint_failure(scenario: Scenario) -> None:
    local = scenario.deploy("server", "cluster1")
    scenario.deploy("server", "cluster2")
    client = scenario.deploy("client", "cluster1")
    docs = scenario.apply("failover-on-endpoint-failure.yaml")
    outlier = next(d for d in docs if d["kind"] == "DestinationRule")["spec"]["trafficPolicy"]["outlierDetection"]
    base_ejection_s = float(outlier["baseEjectionTime"].removesuffix("s"))
    interval_s = float(outlier["interval"].removesuffix("s"))
    scenario.baseline("local calls stay in cluster1", lambda: scenario.call(client, local, count=10),
                      lambda result: expect_answered_by(result, ["cluster1"]))

    budgets = scenario.config.budgets
    with scenario.traffic(client, local) as traffic:
        traffic.wait(0.5)
        traffic.mark("failure")
        scenario.faults.set_mode(local, status=503)
        traffic.wait_until(lambda t: t.stable("failure", "cluster2"), budgets.failover_shift_s + 1)
        # past the ejection time: Envoy re-admits the pod at the next sweep, it fails again and is ejected for
        # twice as long (baseEjectionTime x times ejected); the window holds that re-admission
        traffic.wait(base_ejection_s + interval_s + 1)
        traffic.wait_until(lambda t: t.stable("failure", "cluster2"), budgets.readmission_failing_s + 1)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, "traffic across the failure and a re-admission")

    shift = timeline.reached("failure", "cluster2")
    spells = timeline.failing_spells("failure")
    if shift is not None:
        since = timeline.events["failure"]
        before_shift = timeline.responses(after=since, before=since + shift)
        relapses = [b - a for a, b in spells if a >= since + shift]
        scenario.measure("client-visible errors while traffic shifted", sum(not r.ok for r in before_shift), "calls",
                         budget=budgets.failover_errors)
        scenario.measure("time to shift", shift, "s", budget=budgets.failover_shift_s)
        scenario.measure("re-admissions of the failing pod", len(relapses), "times")
        if relapses:
            scenario.measure("longest failing spell after a re-admission", max(relapses), "s",
                             budget=budgets.readmission_failing_s)
    expect_failover(timeline, "failure", "cluster2", budgets.failover_errors, budgets.failover_shift_s,
                    max_relapse_s=budgets.readmission_failing_s)
