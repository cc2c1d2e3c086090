from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_ok, expect_answered_by, expect_fails_fast, expect_no_failed_calls


@check("failover-partition-keeps-local-traffic", area=Area.FAILOVER, serial=True,
       features=[Feature.MULTI_CLUSTER, Feature.LINK_FAULTS],
       description="When the link between the clusters is cut, local traffic sees no error and calls across it fail "
                   "fast")
def test_failover_partition_keeps_local_traffic(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    scenario.deploy("server", "cluster2")
    remote = scenario.deploy("remote", "cluster2")
    client = scenario.deploy("client", "cluster1")
    scenario.apply("failover-partition-keeps-local-traffic.yaml")
    scenario.baseline("local calls stay in cluster1", lambda: scenario.call(client, server, count=10),
                      lambda result: expect_answered_by(result, ["cluster1"]))
    scenario.baseline("cluster2's service answers across the link", lambda: scenario.call(client, remote, count=3),
                      expect_all_ok)

    with scenario.traffic(client, server) as traffic:
        traffic.wait(0.3)
        traffic.mark("partition")
        scenario.faults.set_link("cluster1", "cluster2", cut=True)
        cut_off = scenario.call(client, remote, count=3)
        traffic.wait(1.5)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, "local traffic during the partition")

    budgets = scenario.config.budgets
    slowest = max(r.latency_us for r in cut_off.responses) / 1e6
    scenario.measure("failed local calls during the partition", len(timeline.failures()), "calls", budget=0)
    scenario.measure("slowest failed call across the cut link", slowest, "s", budget=budgets.fail_fast_s)
    expect_no_failed_calls(timeline, across="partition")
    expect_fails_fast(cut_off, budgets.fail_fast_s)
