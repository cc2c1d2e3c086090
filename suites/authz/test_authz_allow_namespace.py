from conformance import Area, Scenario, check
from conformance.expect import expect_all_forbidden, expect_all_ok


@check("authz-allow-namespace", area=Area.AUTHZ,
       description="An ALLOW policy on a namespace admits its workloads and denies those of another namespace")
def test_authz_allow_namespace(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    neighbour = scenario.deploy("client", "cluster1")
    stranger = scenario.deploy("client", "cluster1", namespace=scenario.other_namespace)

    scenario.apply("authz-allow-namespace.yaml")

    scenario.await_convergence(lambda: scenario.call(stranger, server, count=5), expect_all_forbidden)
    expect_all_ok(scenario.call(neighbour, server, count=10))
