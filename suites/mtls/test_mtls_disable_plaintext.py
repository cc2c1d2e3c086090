from conformance import Area, Scenario, check
from conformance.expect import expect_no_peer_identity, expect_peer_identity


@check("mtls-disable-plaintext", area=Area.MTLS,
       description="With PeerAuthentication DISABLE and DestinationRule tls DISABLE, in-mesh calls are plaintext")
def test_mtls_disable_plaintext(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1", service_account="frontend")
    scenario.baseline(  # auto-mTLS: in-mesh calls are mTLS until the policy says otherwise
        "auto-mTLS carries the client's identity",
        lambda: scenario.call(client, server, count=3),
        lambda result: expect_peer_identity(result, scenario.spiffe_id("frontend")),
    )

    scenario.apply("mtls-disable-plaintext.yaml")

    scenario.await_convergence(lambda: scenario.call(client, server, count=5), expect_no_peer_identity)
