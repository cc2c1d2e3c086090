"""Keep-alive connections across clusters outlive config pushes that do not concern them, and a restart of the
control plane, as Cilium gates its upgrades on long-lived connections. Istio sends HTTP routes by RDS and
listeners by LDS; a listener replaced is drained and its connections closed, so a push must change a listener only
when the listener itself changed (pilot/pkg/xds: unchanged resources are not even resent, and a restarted istiod
sends the same state of the world again)."""

from conformance import Area, EnvironmentBroken, Feature, Scenario, check
from conformance.expect import (
    expect_all_status,
    expect_answered_by,
    expect_connections_kept,
)

CONNECTIONS = 8


@check("multicluster-long-lived-connections", area=Area.MULTICLUSTER, serial=True,
       features=[Feature.MULTI_CLUSTER, Feature.CONTROL_PLANE_FAULTS],
       description="Keep-alive connections across clusters survive unrelated config pushes (a DestinationRule, a "
                   "new workload) and a control-plane restart without a reset")
def test_multicluster_long_lived_connections(scenario: Scenario) -> None:
    primary, far = scenario.primaries[0], scenario.clusters[-1]
    scenario.require(far != primary, "a cluster besides the primary")
    server = scenario.deploy("server", far)
    client = scenario.deploy("client", primary)
    scenario.baseline(f"the client reaches the server in {far}", lambda: scenario.call(client, server, count=5),
                      lambda result: expect_answered_by(result, [far]))

    with scenario.hold_connections(client, server, CONNECTIONS, scenario.config.timeouts.connection_hold_s) as held:
        held.wait(2.0)  # every connection open and used
        scenario.apply("multicluster-long-lived-connections.yaml")  # a DestinationRule for another service
        bystander = scenario.deploy("bystander", primary)  # a new workload, a new service
        scenario.faults.restart_control_plane(primary)
        scenario.apply("multicluster-long-lived-connections.after-restart.yaml", [primary])
        scenario.await_convergence(lambda: scenario.call(client, bystander, count=3, attach=False),
                                   lambda result: expect_all_status(result, 418))  # pushed to the client again
        held.wait(2.0)  # a connection closed by the last push shows on its next call
        if not held.running:
            raise EnvironmentBroken("the held connections ended before the pushes and the restart did: raise "
                                    "--timeout connection_hold_s")
    connections = held.result()

    scenario.measure("keep-alive connections held", CONNECTIONS, "connections")
    scenario.measure("calls on them", len(connections.calls), "calls")
    scenario.measure("connections lost", connections.lost, "connections", budget=0)
    expect_connections_kept(connections, "unrelated pushes and a control-plane restart")
