from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_ok, expect_fails_fast, expect_no_failed_calls


@check("failover-east-west-gateway-loss", area=Area.FAILOVER, serial=True,
       features=[Feature.MULTI_NETWORK, Feature.EAST_WEST_GATEWAY, Feature.GATEWAY_FAULTS],
       description="With another network's east-west gateway down, local traffic is unaffected and calls across "
                   "the networks fail fast")
def test_failover_east_west_gateway_loss(scenario: Scenario) -> None:
    home = scenario.clusters[0]
    away = next(c for c in scenario.clusters if scenario.cluster(c).network != scenario.cluster(home).network)
    server = scenario.deploy("server", home)
    scenario.deploy("server", away)
    remote = scenario.deploy("remote", away)
    client = scenario.deploy("client", home)
    scenario.apply("failover-east-west-gateway-loss.yaml")
    # Local calls are not required to stay in the home cluster before the fault: keeping them there, so that the
    # other network's gateway is not on their path, is what locality-preferred routing does for them, and a mesh
    # that spreads them over both clusters loses some when the gateway goes down (retries are off): the traffic
    # judges it.
    scenario.baseline("local calls answer", lambda: scenario.call(client, server, count=10), expect_all_ok)
    scenario.baseline(f"{away}'s service answers across the networks", lambda: scenario.call(client, remote, count=3),
                      expect_all_ok)

    with scenario.traffic(client, server) as traffic:
        traffic.wait(0.3)
        traffic.mark("gateway down")
        scenario.faults.set_gateway(away, up=False)
        cut_off = scenario.call(client, remote, count=3)
        traffic.wait(1.5)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, "local traffic while the gateway is down")

    slowest = max(r.latency_us for r in cut_off.responses) / 1e6
    scenario.measure("slowest failed cross-network call", slowest, "s", budget=scenario.config.budgets.fail_fast_s)
    expect_no_failed_calls(timeline, across="gateway down")
    expect_fails_fast(cut_off, scenario.config.budgets.fail_fast_s)
