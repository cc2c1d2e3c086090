from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_ok, expect_all_refused


@check("mtls-strict-rejects-plaintext", area=Area.MTLS, features=[Feature.OUT_OF_MESH_WORKLOADS],
       description="Under a STRICT namespace policy a plaintext caller is refused and an mTLS caller is served")
def test_mtls_strict_rejects_plaintext(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1")
    outsider = scenario.deploy("outsider", "cluster1", in_mesh=False)
    # the mesh's default may be anything: the namespace starts PERMISSIVE because its own policy says so
    scenario.apply("mtls-strict-rejects-plaintext.permissive.yaml")
    scenario.baseline("plaintext is accepted under the namespace's PERMISSIVE policy",
                      lambda: scenario.call(outsider, server, count=3), expect_all_ok)

    scenario.apply("mtls-strict-rejects-plaintext.yaml")

    scenario.await_convergence(lambda: scenario.call(outsider, server, count=5), expect_all_refused)
    expect_all_ok(scenario.call(client, server, count=10))
