from conformance import Area, CallResult, Feature, Scenario, check
from conformance.expect import expect_answered_by, expect_failover
from conformance.traffic import Timeline


@check("failover-failback", area=Area.FAILOVER, features=[Feature.MULTI_CLUSTER, Feature.WORKLOAD_FAULTS],
       description="When the local pod recovers, traffic returns to it once its ejection ends")
def test_failover_failback(scenario: Scenario) -> None:
    local = scenario.deploy("server", "cluster1")
    scenario.deploy("server", "cluster2")
    client = scenario.deploy("client", "cluster1")
    docs = scenario.apply("failover-failback.yaml")
    outlier = next(d for d in docs if d["kind"] == "DestinationRule")["spec"]["trafficPolicy"]["outlierDetection"]
    base_ejection_s = float(outlier["baseEjectionTime"].removesuffix("s"))
    scenario.baseline("local calls stay in cluster1", lambda: scenario.call(client, local, count=10),
                      lambda result: expect_answered_by(result, ["cluster1"]))

    budgets = scenario.config.budgets
    with scenario.traffic(client, local) as traffic:
        traffic.wait(0.3)
        traffic.mark("failure")
        scenario.faults.set_mode(local, status=503)
        scenario.baseline("with the local pod failing, calls are served by cluster2",
                          lambda: _last_calls(traffic.snapshot(), "failure"),
                          lambda result: expect_answered_by(result, ["cluster2"]))
        traffic.mark("recovery")
        scenario.faults.set_mode(local, status=None)
        # Envoy's backoff: the pod's current ejection lasts baseEjectionTime x the times it was ejected in a row
        ejections = len(traffic.snapshot().failing_spells("failure", until="recovery"))
        allowed_s = budgets.failback_allowed(ejections, base_ejection_s)
        traffic.wait_until(lambda t: t.stable("recovery", "cluster1"), allowed_s + 2)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, "traffic across the failure and the recovery")

    back = timeline.reached("recovery", "cluster1")
    scenario.measure("ejections before the recovery", ejections, "times")
    if back is not None:
        scenario.measure("time to fail back", back, "s", budget=allowed_s)
    expect_failover(timeline, "recovery", "cluster1", max_errors=0, max_shift_s=allowed_s)


def _last_calls(timeline: Timeline, event: str, count: int = 10) -> CallResult:
    """The last ``count`` calls after ``event`` (none until there are that many)."""
    after = timeline.responses(after=timeline.events[event])
    return CallResult("client", "server", tuple(after[-count:]) if len(after) >= count else ())
