from conformance import Area, Scenario, check
from conformance.expect import expect_all_forbidden, expect_all_ok

TOKEN = "x-meshconf-token"


@check("authz-header-condition", area=Area.AUTHZ,
       description="A when condition on a request header admits requests that carry the value and no others")
def test_authz_header_condition(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1")

    scenario.apply("authz-header-condition.yaml")

    scenario.await_convergence(lambda: scenario.call(client, server, count=5), expect_all_forbidden)
    expect_all_forbidden(scenario.call(client, server, count=5, headers={TOKEN: "guess"}))
    expect_all_ok(scenario.call(client, server, count=10, headers={TOKEN: "let-me-in"}))
