"""``localityLbSetting.failover`` names where traffic goes when the caller's region has no healthy endpoint
(pilot/pkg/networking/core/loadbalancer/loadbalancer.go ``applyLocalityFailover``: the region a rule's ``to``
names gets priority 3, every other region 4). With three regions the rule decides between two remote ones:
without it both would share priority 3 and split the traffic."""

from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by


@check("failover-locality-failover-region", area=Area.FAILOVER,
       features=[Feature.MULTI_CLUSTER, Feature.WORKLOAD_FAULTS],
       description="With localityLbSetting.failover from the client's region to a named region, traffic leaves a "
                   "region without endpoints for the named region only, not for a third one")
def test_failover_locality_failover_region(scenario: Scenario) -> None:
    home, named = scenario.clusters[0], scenario.clusters[-1]
    regions = {cluster: scenario.cluster(cluster).region for cluster in scenario.clusters}
    thirds = [c for c in scenario.clusters if regions[c] not in (regions[home], regions[named])]
    scenario.require(regions[home] != regions[named] and bool(thirds), "clusters in three regions")
    third = thirds[0]
    servers = {cluster: scenario.deploy("server", cluster) for cluster in (home, third, named)}
    client = scenario.deploy("client", home)
    scenario.apply("failover-locality-failover-region.yaml", from_region=regions[home], to_region=regions[named])
    scenario.baseline(f"calls stay in {home} while it has endpoints",
                      lambda: scenario.call(client, servers[home], count=20),
                      lambda result: expect_answered_by(result, [home]))

    scenario.faults.scale(servers[home], 0)  # the client's region has no endpoint left
    scenario.await_convergence(lambda: scenario.call(client, servers[named], count=20),
                               lambda result: expect_answered_by(result, [named]))
    sample = scenario.call(client, servers[named], count=100)
    elsewhere = sum(1 for r in sample.responses if r.cluster != named)
    scenario.measure(f"calls answered outside {named} after {home} lost its endpoints", elsewhere, "calls", budget=0)
    expect_answered_by(sample, [named])
