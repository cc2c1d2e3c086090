from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by, expect_peer_identity


@check("mtls-cross-cluster-identity", area=Area.MTLS, features=[Feature.MULTI_CLUSTER],
       description="A client in cluster1 reaches a STRICT server that runs only in cluster2, with its own identity")
def test_mtls_cross_cluster_identity(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster2")
    client = scenario.deploy("client", "cluster1", service_account="frontend")

    scenario.apply("mtls-cross-cluster-identity.yaml")  # in every primary: each control plane holds its own copy

    converged = scenario.await_convergence(
        lambda: scenario.call(client, server, count=10),
        lambda result: expect_peer_identity(result, scenario.spiffe_id("frontend")),
    )
    expect_answered_by(converged.result, ["cluster2"])
