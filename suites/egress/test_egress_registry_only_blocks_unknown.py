from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_blocked, expect_answered_by


@check("egress-registry-only-blocks-unknown", area=Area.EGRESS, features=[Feature.OUT_OF_MESH_WORKLOADS],
       description="Under REGISTRY_ONLY a destination the mesh does not know is never reached, until a ServiceEntry "
                   "declares it")
def test_egress_registry_only_blocks_unknown(scenario: Scenario) -> None:
    client = scenario.deploy("client", "cluster1")
    external = scenario.deploy("external", "cluster1", in_mesh=False)
    address = external.instances[0].address
    host = f"external.{scenario.namespace}.example"
    by_address = f"http://{address}:8080/"  # needs no name lookup: only the sidecar can stop it
    by_name = f"http://{host}:8080/"

    scenario.apply("egress-registry-only-blocks-unknown.yaml")

    # Istio: REGISTRY_ONLY answers 502 from the caller's sidecar; with DNS proxying an unknown name does not
    # even resolve. Either way the external workload never sees the call.
    scenario.await_convergence(lambda: scenario.call(client, by_address, count=3), expect_all_blocked)
    expect_all_blocked(scenario.call(client, by_name, count=3))

    scenario.apply("egress-registry-only-blocks-unknown.service-entry.yaml", external_host=host,
                   external_address=address)

    scenario.await_convergence(lambda: scenario.call(client, by_name, count=3),
                               lambda result: expect_answered_by(result, ["cluster1"]))
