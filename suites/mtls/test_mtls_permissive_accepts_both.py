from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_no_peer_identity, expect_peer_identity


@check("mtls-permissive-accepts-both", area=Area.MTLS, features=[Feature.OUT_OF_MESH_WORKLOADS],
       description="Under PERMISSIVE both plaintext and mTLS callers are served; only mTLS calls carry an identity")
def test_mtls_permissive_accepts_both(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1", service_account="frontend")
    outsider = scenario.deploy("outsider", "cluster1", in_mesh=False)

    scenario.apply("mtls-permissive-accepts-both.yaml")

    # a plaintext caller cannot claim an identity: Envoy drops the XFCC it sends (Istio's inbound chains use
    # APPEND_FORWARD, which trusts the header only over mTLS; listener_inbound.go buildSidecarInboundHTTPOpts)
    forged = {"x-forwarded-client-cert": f"By={scenario.spiffe_id('server')};URI={scenario.spiffe_id('frontend')}"}
    scenario.await_convergence(lambda: scenario.call(outsider, server, count=5, headers=forged),
                               expect_no_peer_identity)
    scenario.await_convergence(
        lambda: scenario.call(client, server, count=5),
        lambda result: expect_peer_identity(result, scenario.spiffe_id("frontend")),
    )
