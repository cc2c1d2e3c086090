from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_peer_identity

GATEWAY_IDENTITY = ("istio-ingressgateway-service-account", "istio-system")


@check("ingress-to-mesh-mtls", area=Area.INGRESS, features=[Feature.INGRESS_GATEWAY],
       description="The hop from the ingress gateway to a STRICT workload is mTLS with the gateway's identity")
def test_ingress_to_mesh_mtls(scenario: Scenario) -> None:
    scenario.deploy("server", "cluster1")
    outsider = scenario.deploy("outsider", "cluster1", in_mesh=False)

    scenario.apply("ingress-to-mesh-mtls.yaml")

    gateway = scenario.spiffe_id(*GATEWAY_IDENTITY)
    host = {"Host": f"secure.{scenario.namespace}.example.com"}  # the gateway is shared: a host of the check's own
    scenario.await_convergence(
        lambda: scenario.call(outsider, scenario.ingress_url("cluster1"), headers=host),
        lambda result: expect_peer_identity(result, gateway),
    )
