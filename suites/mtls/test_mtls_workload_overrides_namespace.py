from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_ok, expect_all_refused


@check("mtls-workload-overrides-namespace", area=Area.MTLS, features=[Feature.OUT_OF_MESH_WORKLOADS],
       description="A workload policy (selector, portLevelMtls) overrides the namespace's STRICT mode")
def test_mtls_workload_overrides_namespace(scenario: Scenario) -> None:
    strict = scenario.deploy("server", "cluster1")
    legacy = scenario.deploy("legacy", "cluster1")
    split = scenario.deploy("split", "cluster1", ports=(8080, 9090))
    outsider = scenario.deploy("outsider", "cluster1", in_mesh=False)

    scenario.apply("mtls-workload-overrides-namespace.yaml")

    scenario.await_convergence(lambda: scenario.call(outsider, strict, count=3), expect_all_refused)
    scenario.await_convergence(lambda: scenario.call(outsider, split, count=3), expect_all_refused)
    scenario.await_convergence(lambda: scenario.call(outsider, legacy, count=3), expect_all_ok)
    scenario.await_convergence(lambda: scenario.call(outsider, split, count=3, port=9090), expect_all_ok)
