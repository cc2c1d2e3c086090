from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_reached_clusters


@check("failover-reaches-all-clusters", area=Area.FAILOVER, features=[Feature.MULTI_CLUSTER],
       description="Without locality settings, calls from every cluster reach the service's pods in every cluster")
def test_failover_reaches_all_clusters(scenario: Scenario) -> None:
    server, *_ = [scenario.deploy("server", cluster) for cluster in scenario.clusters]
    clients = [scenario.deploy("client", cluster) for cluster in scenario.clusters]

    for client in clients:
        scenario.await_convergence(lambda c=client: scenario.call(c, server, count=30),  # type: ignore[misc]
                                   lambda result: expect_reached_clusters(result, scenario.clusters))
