from conformance import Area, Scenario, check
from conformance.expect import expect_all_forbidden, expect_all_ok


@check("authz-allow-nothing-denies-all", area=Area.AUTHZ,
       description="An ALLOW policy without rules denies every request to the workloads it selects")
def test_authz_allow_nothing_denies_all(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1")
    scenario.baseline("the server answers before any policy", lambda: scenario.call(client, server, count=3),
                      expect_all_ok)

    scenario.apply("authz-allow-nothing-denies-all.yaml")

    scenario.await_convergence(lambda: scenario.call(client, server, count=5), expect_all_forbidden)
