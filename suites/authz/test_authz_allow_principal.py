from conformance import Area, Scenario, check
from conformance.expect import expect_all_forbidden, expect_all_ok


@check("authz-allow-principal", area=Area.AUTHZ,
       description="An ALLOW policy on a principal admits that service account and denies another one")
def test_authz_allow_principal(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    frontend = scenario.deploy("frontend", "cluster1", service_account="frontend")
    other = scenario.deploy("other", "cluster1", service_account="other")

    scenario.apply("authz-allow-principal.yaml")

    scenario.await_convergence(lambda: scenario.call(other, server, count=5), expect_all_forbidden)
    expect_all_ok(scenario.call(frontend, server, count=10))
