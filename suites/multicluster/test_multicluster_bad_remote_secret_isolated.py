"""One remote secret broken (tests/integration/pilot/multicluster_test.go ``TestBadRemoteSecret``: an unreachable
``--server``), then repaired (istio#58047: a bad secret followed by a good one never recovers). The cluster it
names drops out of the primary's view (secretcontroller.go: the old registry is closed when the new secret
arrives, and the new one never syncs); everything else must go on as before, the control plane must stay ready
(it never waits for a remote cluster longer than PILOT_REMOTE_CLUSTER_TIMEOUT, cluster.go), and a good secret
must bring the cluster back."""

from conformance import Area, CallResult, Feature, Scenario, check
from conformance.expect import (
    expect_answered_by,
    expect_control_plane_ready,
    expect_no_failed_calls,
    expect_reached_clusters,
    expect_remote_cluster_unsynced,
    expect_within_budget,
)


@check("multicluster-bad-remote-secret-isolated", area=Area.MULTICLUSTER, serial=True,
       features=[Feature.MULTI_CLUSTER, Feature.REMOTE_SECRET_FAULTS, Feature.CONTROL_PLANE_FAULTS],
       description="A broken remote secret leaves traffic to the other clusters unaffected and the control plane "
                   "ready, and once it is repaired that cluster's endpoints come back within budget")
def test_multicluster_bad_remote_secret_isolated(scenario: Scenario) -> None:
    primary, broken = scenario.primaries[0], scenario.clusters[-1]
    scenario.require(broken != primary, "a cluster besides the primary")
    others = [c for c in scenario.clusters if c != broken]
    stranded = scenario.deploy("stranded", broken)  # only in the cluster whose secret breaks
    kept, *_ = [scenario.deploy("kept", cluster) for cluster in others]  # in every other cluster
    client = scenario.deploy("client", primary)
    scenario.baseline(f"the client reaches {broken}", lambda: scenario.call(client, stranded, count=3),
                      lambda result: expect_answered_by(result, [broken]))
    scenario.baseline(f"the client reaches {', '.join(others)}", lambda: scenario.call(client, kept, count=20),
                      lambda result: expect_reached_clusters(result, others))

    faults = scenario.faults
    with scenario.traffic(client, kept, min_batch_s=0.1) as traffic:
        traffic.wait(0.5)
        traffic.mark("broken")
        faults.break_remote_secret(primary, broken)
        scenario.baseline(f"the control plane of {primary} took the broken secret (stopped reading {broken})",
                          lambda: faults.control_plane_status(primary),
                          lambda status: expect_remote_cluster_unsynced(status, broken))
        traffic.mark("taken")
        traffic.wait(2.0)
        status = faults.control_plane_status(primary)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, f"traffic to {', '.join(others)} while the secret for {broken} is broken")

    faults.restore_remote_secret(primary, broken)
    back = scenario.await_convergence(lambda: scenario.call(client, stranded, count=3, attach=False),
                                      lambda result: expect_answered_by(result, [broken]),
                                      within_s=scenario.config.budgets.remote_secret_recovery_s)

    budget = scenario.config.budgets.remote_secret_recovery_s
    scenario.measure(f"failed calls to {', '.join(others)} while the secret was broken", len(timeline.failures()),
                     "calls", budget=0)
    scenario.measure(f"{broken}'s endpoints back after the secret was repaired", back.elapsed_s, "s", budget)
    expect_no_failed_calls(timeline, across="broken")
    after = CallResult(str(client), kept.url(), tuple(timeline.responses(after=timeline.events["taken"])))
    expect_reached_clusters(after, others)
    expect_control_plane_ready(status)
    expect_within_budget(f"{broken}'s endpoints served again after its secret was repaired", back.elapsed_s,
                         budget, "s")

