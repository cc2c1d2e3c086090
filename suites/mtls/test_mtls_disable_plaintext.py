from conformance import Area, Scenario, check
from conformance.expect import expect_all_unavailable, expect_no_peer_identity, expect_peer_identity


@check("mtls-disable-plaintext", area=Area.MTLS,
       description="With PeerAuthentication DISABLE, in-mesh calls are plaintext and a client forced to mTLS is "
                   "refused by the server")
def test_mtls_disable_plaintext(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1", service_account="frontend")
    scenario.baseline(  # auto-mTLS: in-mesh calls are mTLS until the policy says otherwise
        "auto-mTLS carries the client's identity",
        lambda: scenario.call(client, server, count=3),
        lambda result: expect_peer_identity(result, scenario.spiffe_id("frontend")),
    )

    scenario.apply("mtls-disable-plaintext.yaml")

    # client side: tls DISABLE sends plaintext, and the server takes it
    scenario.await_convergence(lambda: scenario.call(client, server, count=5), expect_no_peer_identity)

    scenario.apply("mtls-disable-plaintext.client-mtls.yaml")

    # server side: DISABLE accepts plaintext only, so a client that insists on mTLS never gets through
    scenario.await_convergence(lambda: scenario.call(client, server, count=5), expect_all_unavailable)
