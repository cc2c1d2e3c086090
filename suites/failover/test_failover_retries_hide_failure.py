from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by, expect_no_failed_calls
from conformance.stats import inbound_requests


@check("failover-retries-hide-failure", area=Area.FAILOVER, features=[Feature.MULTI_CLUSTER, Feature.WORKLOAD_FAULTS],
       description="With retries to remote localities, a failing local pod causes no client-visible error")
def test_failover_retries_hide_failure(scenario: Scenario) -> None:
    local = scenario.deploy("server", "cluster1")
    remote = scenario.deploy("server", "cluster2")
    client = scenario.deploy("client", "cluster1")
    scenario.apply("failover-retries-hide-failure.yaml")
    scenario.baseline("local calls stay in cluster1", lambda: scenario.call(client, local, count=10),
                      lambda result: expect_answered_by(result, ["cluster1"]))
    served_before = inbound_requests(scenario.mesh, local) + inbound_requests(scenario.mesh, remote)

    with scenario.traffic(client, local) as traffic:
        traffic.wait(0.5)
        traffic.mark("failure")
        scenario.faults.set_mode(local, status=503)
        traffic.wait(3.0)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, "traffic across the failure")

    upstream = inbound_requests(scenario.mesh, local) + inbound_requests(scenario.mesh, remote) - served_before
    scenario.measure("client-visible errors", len(timeline.failures()), "calls", budget=0)
    scenario.measure("upstream requests per client call", upstream / max(1, len(timeline)), "ratio")
    expect_no_failed_calls(timeline, across="failure")
