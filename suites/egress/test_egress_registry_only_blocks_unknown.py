from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_ok, expect_all_status


@check("egress-registry-only-blocks-unknown", area=Area.EGRESS, features=[Feature.OUT_OF_MESH_WORKLOADS],
       description="Under REGISTRY_ONLY an unknown host is refused (502) until a ServiceEntry declares it")
def test_egress_registry_only_blocks_unknown(scenario: Scenario) -> None:
    client = scenario.deploy("client", "cluster1")
    external = scenario.deploy("external", "cluster1", in_mesh=False)
    address = external.instances[0].address
    unknown = f"http://{address}:8080/"

    scenario.apply("egress-registry-only-blocks-unknown.yaml")
    scenario.await_convergence(lambda: scenario.call(client, unknown, count=3),
                               lambda result: expect_all_status(result, 502))

    scenario.apply("egress-registry-only-blocks-unknown.service-entry.yaml", external_address=address)
    scenario.await_convergence(lambda: scenario.call(client, "http://external.example.com:8080/", count=3),
                               expect_all_ok)
