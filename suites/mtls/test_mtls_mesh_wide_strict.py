from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_ok, expect_all_refused


@check("mtls-mesh-wide-strict", area=Area.MTLS, serial=True,
       features=[Feature.OUT_OF_MESH_WORKLOADS, Feature.MESH_WIDE_CONFIG],
       description="A STRICT policy in the root namespace makes every namespace refuse plaintext, until removed")
def test_mtls_mesh_wide_strict(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1")
    outsider = scenario.deploy("outsider", "cluster1", in_mesh=False)
    scenario.baseline("plaintext is accepted where no policy says otherwise (no mesh-wide STRICT is in place yet)",
                      lambda: scenario.call(outsider, server, count=3), expect_all_ok)

    mesh_wide = scenario.apply("mtls-mesh-wide-strict.yaml")

    scenario.await_convergence(lambda: scenario.call(outsider, server, count=3), expect_all_refused)
    expect_all_ok(scenario.call(client, server, count=5))

    scenario.delete(mesh_wide)  # only the policy this check created: the mesh is as it was, plaintext accepted again

    scenario.await_convergence(lambda: scenario.call(outsider, server, count=3), expect_all_ok)
