"""A primary's control plane stopped (istiod scaled to 0): its proxies keep the config they have (Envoy never drops
config when its xDS stream goes; it retries with its own backoff), so workloads keep calling across clusters.
Meanwhile another primary goes on: a workload deployed there is reached by this primary's proxies once their
control plane is back, within budget. (What is deployed is a workload in another primary, not Istio config for
the stopped one: with istiod down, its validating webhook, failurePolicy Fail once istiod has patched it, refuses
Istio config in its cluster, and its injector refuses new pods.)"""

from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by, expect_no_failed_calls, expect_within_budget


@check("multicluster-control-plane-down-keeps-data-plane", area=Area.MULTICLUSTER, serial=True,
       features=[Feature.MULTI_CLUSTER, Feature.CONTROL_PLANE_FAULTS],
       description="With a primary's control plane stopped, its workloads keep calling across clusters without an "
                   "error, and what changed meanwhile reaches them within budget once it is back")
def test_multicluster_control_plane_down_keeps_data_plane(scenario: Scenario) -> None:
    primary = scenario.primaries[0]
    others = [c for c in scenario.primaries if c != primary]
    scenario.require(bool(others), "two primary clusters (one goes on deploying while the other's control plane "
                                   "is down)")
    far = others[-1]
    server = scenario.deploy("server", far)
    client = scenario.deploy("client", primary)
    scenario.baseline(f"the client reaches the server in {far}", lambda: scenario.call(client, server, count=5),
                      lambda result: expect_answered_by(result, [far]))

    faults = scenario.faults
    with scenario.traffic(client, server, min_batch_s=0.1) as traffic:
        traffic.wait(0.5)
        traffic.mark("down")
        faults.set_control_plane(primary, False)
        late = scenario.deploy("late", far)  # while the primary's control plane is away
        traffic.wait(1.0)
        traffic.mark("back")
        faults.set_control_plane(primary, True)
        reached = scenario.await_convergence(lambda: scenario.call(client, late, count=3, attach=False),
                                             lambda result: expect_answered_by(result, [far]),
                                             within_s=scenario.config.budgets.control_plane_return_s)
        traffic.mark("reached")
        traffic.wait(0.5)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, f"traffic to {far} while {primary}'s control plane is down, and after")

    budget = scenario.config.budgets.control_plane_return_s
    down_s = timeline.events["back"] - timeline.events["down"]
    scenario.measure(f"{primary}'s control plane down", round(down_s, 2), "s")
    scenario.measure("failed calls while it was down, and after", len(timeline.failures()), "calls", budget=0)
    scenario.measure("a workload deployed meanwhile reached once it was back", reached.elapsed_s, "s", budget)
    expect_no_failed_calls(timeline, across="down")
    expect_within_budget(f"a workload deployed in {far} while {primary}'s control plane was down, reached once it "
                         "was back", reached.elapsed_s, budget, "s")
