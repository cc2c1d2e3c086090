from conformance import Area, Scenario, check
from conformance.expect import expect_all_forbidden, expect_all_ok


@check("authz-deny-path-method", area=Area.AUTHZ,
       description="A DENY policy on a path prefix and methods denies exactly those requests")
def test_authz_deny_path_method(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1")

    scenario.apply("authz-deny-path-method.yaml")

    scenario.await_convergence(lambda: scenario.call(client, server, count=5, path="/admin/users", method="POST"),
                               expect_all_forbidden)
    expect_all_forbidden(scenario.call(client, server, count=5, path="/admin/users", method="DELETE"))
    expect_all_ok(scenario.call(client, server, count=5, path="/admin/users", method="GET"))
    expect_all_ok(scenario.call(client, server, count=5, path="/public", method="POST"))
    # Istio reads "/admin/*" as the prefix "/admin/" (pilot/pkg/security/authz/matcher: StringMatcherPrefix):
    # the bare "/admin" is not under it
    expect_all_ok(scenario.call(client, server, count=5, path="/admin", method="POST"))
