from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_forbidden, expect_all_ok


@check("authz-trust-domain-alias", area=Area.AUTHZ, features=[Feature.MESH_WIDE_CONFIG], serial=True,
       description="With MeshConfig trustDomainAliases, a principal written for an alias admits that workload")
def test_authz_trust_domain_alias(scenario: Scenario) -> None:
    """istio.io's "Configure trust domain migration" task: after the mesh moves from cluster.local to td1 with
    alias cluster.local, a policy naming cluster.local/... still admits the workload. Istio expands any principal
    whose trust domain is in the bundle (the trust domain and its aliases) to every trust domain of the bundle
    (pilot/pkg/security/trustdomain/bundle.go ReplaceTrustDomainAliases), so the same property shows without
    re-rooting the mesh: trust domain cluster.local, alias td1, and a principal written for td1."""
    server = scenario.deploy("server", "cluster1")
    frontend = scenario.deploy("frontend", "cluster1", service_account="frontend")
    other = scenario.deploy("other", "cluster1", service_account="other")

    scenario.apply("authz-trust-domain-alias.yaml")
    scenario.baseline("without the alias, a td1 principal names no workload of this mesh",
                      lambda: scenario.call(frontend, server, count=3), expect_all_forbidden)

    scenario.mesh_config({"trustDomainAliases": ["td1"]})  # restored when the check ends

    scenario.await_convergence(lambda: scenario.call(frontend, server, count=5), expect_all_ok)
    expect_all_forbidden(scenario.call(other, server, count=5))
