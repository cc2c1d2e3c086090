from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by_version, expect_reached_clusters


@check("failover-priority-labels", area=Area.FAILOVER, features=[Feature.MULTI_CLUSTER, Feature.WORKLOAD_FAULTS],
       description="failoverPriority on a label sends calls to the endpoints whose value matches the caller's "
                   "first, and to the others when those fail")
def test_failover_priority_labels(scenario: Scenario) -> None:
    # the caller is v1; its own cluster has a v1 and a v2 pod, the other cluster a v2 pod. (A pod label is not
    # matched across networks: Istio's east-west gateway endpoint carries only cluster and network labels.)
    matching = scenario.deploy("server", "cluster1", version="v1")
    scenario.deploy("server", "cluster1", version="v2")
    scenario.deploy("server", "cluster2", version="v2")
    client = scenario.deploy("client", "cluster1", version="v1")
    scenario.baseline("without the rule, calls reach both clusters",
                      lambda: scenario.call(client, matching, count=30),
                      lambda result: expect_reached_clusters(result, ["cluster1", "cluster2"]))

    scenario.apply("failover-priority-labels.yaml")

    scenario.await_convergence(lambda: scenario.call(client, matching, count=20),
                               lambda result: expect_answered_by_version(result, ["v1"]))
    sample = scenario.call(client, matching, count=200)
    preferred = 100.0 * sum(1 for r in sample.responses if r.ok and r.version == "v1") / len(sample)
    scenario.measure("calls answered by the caller's version", round(preferred, 1), "%", budget=100, comparison=">=")
    expect_answered_by_version(sample, ["v1"])

    scenario.faults.set_mode(matching, status=503)
    scenario.await_convergence(lambda: scenario.call(client, matching, count=10),
                               lambda result: expect_answered_by_version(result, ["v2"]))
