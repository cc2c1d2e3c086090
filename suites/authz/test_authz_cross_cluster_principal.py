from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_forbidden, expect_answered_by


@check("authz-cross-cluster-principal", area=Area.AUTHZ, features=[Feature.MULTI_CLUSTER],
       description="A policy for a server in cluster2 admits the cluster1 client's identity and no other")
def test_authz_cross_cluster_principal(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster2")
    frontend = scenario.deploy("frontend", "cluster1", service_account="frontend")
    other = scenario.deploy("other", "cluster1", service_account="other")

    # only the control plane that configures the server's sidecar holds the policy
    scenario.apply("authz-cross-cluster-principal.yaml", clusters=[scenario.control_plane_of("cluster2")])

    scenario.await_convergence(lambda: scenario.call(other, server, count=5), expect_all_forbidden)
    expect_answered_by(scenario.call(frontend, server, count=10), ["cluster2"])
