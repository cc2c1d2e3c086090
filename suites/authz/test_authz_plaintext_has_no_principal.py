from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_forbidden, expect_all_ok


@check("authz-plaintext-has-no-principal", area=Area.AUTHZ, features=[Feature.OUT_OF_MESH_WORKLOADS],
       description="Under PERMISSIVE a plaintext caller never matches a principal rule: it is denied with 403")
def test_authz_plaintext_has_no_principal(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1")
    outsider = scenario.deploy("outsider", "cluster1", in_mesh=False)

    scenario.apply("authz-plaintext-has-no-principal.yaml")

    scenario.await_convergence(lambda: scenario.call(outsider, server, count=5), expect_all_forbidden)
    expect_all_ok(scenario.call(client, server, count=10))
