from conformance import Area, Scenario, check
from conformance.expect import expect_all_forbidden, expect_all_ok


@check("authz-deny-overrides-allow", area=Area.AUTHZ,
       description="A request that both an ALLOW and a DENY policy match is denied")
def test_authz_deny_overrides_allow(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    frontend = scenario.deploy("frontend", "cluster1", service_account="frontend")

    scenario.apply("authz-deny-overrides-allow.yaml")

    scenario.await_convergence(lambda: scenario.call(frontend, server, count=5, path="/private/data"),
                               expect_all_forbidden)
    expect_all_ok(scenario.call(frontend, server, count=10, path="/public"))
