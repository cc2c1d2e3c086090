import time

from conformance import Area, Scenario, check
from conformance.expect import expect_all_forbidden, expect_all_ok, expect_within_budget


@check("authz-propagation-time", area=Area.AUTHZ,
       description="A new DENY policy is enforced within the propagation budget of being applied")
def test_authz_propagation_time(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1")
    scenario.baseline("the server answers before any policy",
                      lambda: scenario.call(client, server, count=3, attach=False), expect_all_ok)

    started = time.monotonic()
    scenario.apply("authz-propagation-time.yaml")
    applied_s = time.monotonic() - started
    converged = scenario.await_convergence(lambda: scenario.call(client, server, count=1, attach=False),
                                           expect_all_forbidden)

    budget = scenario.config.budgets.authz_propagation_s
    propagation = scenario.measure("authz_propagation", applied_s + converged.elapsed_s, "s", budget)
    expect_within_budget("AuthorizationPolicy propagation (apply -> first enforced denial)",
                         propagation.value, budget, "s")
