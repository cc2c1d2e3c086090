from conformance import Area, Scenario, check
from conformance.expect import expect_peer_identity


@check("mtls-strict-peer-identity", area=Area.MTLS,
       description="Under STRICT the server sees the caller's SPIFFE identity (its service account) in XFCC")
def test_mtls_strict_peer_identity(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1", service_account="frontend")

    scenario.apply("mtls-strict-peer-identity.yaml")

    scenario.await_convergence(
        lambda: scenario.call(client, server, count=5),
        lambda result: expect_peer_identity(result, scenario.spiffe_id("frontend")),
    )
