from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_share


@check("failover-locality-preferred", area=Area.FAILOVER, features=[Feature.MULTI_CLUSTER],
       description="With localityLbSetting and outlier detection, calls stay in the caller's own cluster")
def test_failover_locality_preferred(scenario: Scenario) -> None:
    server, *_ = [scenario.deploy("server", cluster) for cluster in scenario.clusters]
    clients = {cluster: scenario.deploy("client", cluster) for cluster in scenario.clusters}

    scenario.apply("failover-locality-preferred.yaml")  # retries off: each call is one load-balancing decision

    budgets = scenario.config.budgets
    for cluster, client in clients.items():  # the config takes effect (a mesh where it never does fails here)
        scenario.await_convergence(lambda c=client: scenario.call(c, server, count=50),  # type: ignore[misc]
                                   lambda result, k=cluster: expect_share(result, [k], budgets.locality_local_pct))

    # the polls that converged only say the config has arrived: the share is measured on a sample of its own
    samples = {cluster: scenario.call(client, server, count=budgets.locality_sample_calls)
               for cluster, client in clients.items()}
    for cluster, sample in samples.items():
        local = 100.0 * sum(1 for r in sample.responses if r.ok and r.cluster == cluster) / max(1, len(sample))
        scenario.measure(f"calls from {cluster} served locally", local, "%", budget=budgets.locality_local_pct,
                         comparison=">=")
    for cluster, sample in samples.items():
        expect_share(sample, [cluster], budgets.locality_local_pct)
