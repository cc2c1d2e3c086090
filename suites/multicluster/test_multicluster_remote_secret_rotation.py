"""A primary's remote secret for another cluster rotated under load (istio#61043: remote endpoint shards lost after
``istio-remote-secret`` rotation, until istiod restarts). Istio builds a new remote cluster from the changed
secret before it closes the old one (pkg/kube/multicluster/secretcontroller.go ``addSecret``, component.go
``clusterUpdated``), so the other cluster's endpoints must be served throughout, and what is deployed there
afterwards must still reach this primary's proxies."""

from conformance import Area, Feature, Scenario, check
from conformance.expect import (
    expect_answered_by,
    expect_no_failed_calls,
    expect_remote_cluster_synced,
    expect_within_budget,
)


@check("multicluster-remote-secret-rotation", area=Area.MULTICLUSTER, serial=True,
       features=[Feature.MULTI_CLUSTER, Feature.REMOTE_SECRET_FAULTS, Feature.CONTROL_PLANE_FAULTS],
       description="A primary's remote secret is rotated under continuous cross-cluster traffic with zero failed "
                   "calls, and a workload deployed in that cluster afterwards is reached within budget")
def test_multicluster_remote_secret_rotation(scenario: Scenario) -> None:
    primary, remote = scenario.primaries[0], scenario.clusters[-1]
    scenario.require(remote != primary, "a cluster besides the primary")
    server = scenario.deploy("server", remote)
    client = scenario.deploy("client", primary)
    scenario.baseline(f"the client reaches the server in {remote}", lambda: scenario.call(client, server, count=5),
                      lambda result: expect_answered_by(result, [remote]))

    faults = scenario.faults
    with scenario.traffic(client, server, min_batch_s=0.1) as traffic:
        traffic.wait(1.0)
        traffic.mark("rotation")
        faults.rotate_remote_secret(primary, remote)  # kind: a new token, istioctl create-remote-secret again
        scenario.await_convergence(lambda: faults.control_plane_status(primary),
                                   lambda status: expect_remote_cluster_synced(status, remote))
        traffic.mark("synced")
        traffic.wait(2.0)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, f"traffic to {remote} across the rotation of its remote secret")

    late = scenario.deploy("late", remote)  # ready: its pod is up with its sidecar
    reached = scenario.await_convergence(lambda: scenario.call(client, late, count=3, attach=False),
                                         lambda result: expect_answered_by(result, [remote]),
                                         within_s=scenario.config.budgets.endpoint_propagation_s)

    budget = scenario.config.budgets.endpoint_propagation_s
    scenario.measure("failed calls across the rotation", len(timeline.failures()), "calls", budget=0)
    scenario.measure(f"a workload deployed in {remote} after the rotation reached", reached.elapsed_s, "s", budget)
    expect_no_failed_calls(timeline, across="rotation")
    expect_within_budget(f"a workload deployed in {remote} after the rotation reached from {primary}",
                         reached.elapsed_s, budget, "s")
