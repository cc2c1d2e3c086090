from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_ok, expect_all_status


@check("ingress-only-declared-routes", area=Area.INGRESS, features=[Feature.INGRESS_GATEWAY],
       description="The ingress gateway serves the declared host and path and answers 404 for anything else")
def test_ingress_only_declared_routes(scenario: Scenario) -> None:
    scenario.deploy("server", "cluster1")
    outsider = scenario.deploy("outsider", "cluster1", in_mesh=False)
    # the gateway is shared by the whole mesh: hosts of the check's own, so no other route can answer them
    declared = {"Host": f"app.{scenario.namespace}.example.com"}
    undeclared = {"Host": f"other.{scenario.namespace}.example.com"}

    scenario.apply("ingress-only-declared-routes.yaml")

    ingress = scenario.ingress_url("cluster1")
    scenario.await_convergence(lambda: scenario.call(outsider, f"{ingress}app/index", headers=declared), expect_all_ok)
    expect_all_status(scenario.call(outsider, f"{ingress}admin", headers=declared), 404)
    expect_all_status(scenario.call(outsider, f"{ingress}app/index", headers=undeclared), 404)
