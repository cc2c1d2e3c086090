from conformance import Area, Scenario, check
from conformance.expect import expect_all_forbidden, expect_all_ok


@check("authz-service-account-field", area=Area.AUTHZ,
       description="source.serviceAccounts admits exactly that service account of the policy's namespace")
def test_authz_service_account_field(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    frontend = scenario.deploy("frontend", "cluster1", service_account="frontend")
    other = scenario.deploy("other", "cluster1", service_account="other")
    # the same account name in another namespace is another account
    namesake = scenario.deploy("frontend", "cluster1", service_account="frontend", namespace=scenario.other_namespace)
    scenario.baseline("the server answers before any policy", lambda: scenario.call(other, server, count=3),
                      expect_all_ok)

    scenario.apply("authz-service-account-field.yaml")

    scenario.await_convergence(lambda: scenario.call(other, server, count=5), expect_all_forbidden)
    expect_all_forbidden(scenario.call(namesake, server, count=5))
    expect_all_ok(scenario.call(frontend, server, count=10))
