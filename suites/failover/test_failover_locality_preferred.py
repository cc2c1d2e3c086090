from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_share


@check("failover-locality-preferred", area=Area.FAILOVER, features=[Feature.MULTI_CLUSTER],
       description="With localityLbSetting and outlier detection, calls stay in the caller's own cluster")
def test_failover_locality_preferred(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    scenario.deploy("server", "cluster2")
    clients = {cluster: scenario.deploy("client", cluster) for cluster in scenario.clusters}

    scenario.apply("failover-locality-preferred.yaml")

    budget = scenario.config.budgets.locality_local_pct
    for cluster, client in clients.items():
        converged = scenario.await_convergence(lambda c=client: scenario.call(c, server, count=50),  # type: ignore[misc]
                                               lambda result, k=cluster: expect_share(result, [k], budget))
        local = 100.0 * converged.result.clusters()[cluster] / len(converged.result)
        scenario.measure(f"calls from {cluster} served locally", local, "%", budget=budget, comparison=">=")
