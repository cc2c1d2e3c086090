from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by


@check("failover-cross-cluster-discovery", area=Area.FAILOVER, features=[Feature.MULTI_CLUSTER],
       description="A service that runs only in cluster2 is discovered and reachable from cluster1")
def test_failover_cross_cluster_discovery(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster2")
    client = scenario.deploy("client", "cluster1")

    scenario.apply("failover-cross-cluster-discovery.yaml")

    scenario.await_convergence(lambda: scenario.call(client, server, count=5),
                               lambda result: expect_answered_by(result, ["cluster2"]))
