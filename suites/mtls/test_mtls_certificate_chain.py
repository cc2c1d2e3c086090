from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_ok, expect_workload_certificate
from conformance.identity import SECRETS_PATH, served_identity


@check("mtls-certificate-chain", area=Area.MTLS, features=[Feature.MULTI_CLUSTER],
       description="Workload certificates carry one SPIFFE URI SAN, chain to the shared root, and are short-lived")
def test_mtls_certificate_chain(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster2")
    client = scenario.deploy("client", "cluster1", service_account="frontend")
    scenario.apply("mtls-certificate-chain.yaml")

    # a ready sidecar serves its workload certificate already: Envoy warms its listeners until SDS delivers it
    server_identity = served_identity(scenario.admin(server, SECRETS_PATH))
    client_identity = served_identity(scenario.admin(client, SECRETS_PATH))

    ttl = scenario.config.budgets.cert_ttl_s
    validity = server_identity.leaf.not_valid_after_utc - server_identity.leaf.not_valid_before_utc
    scenario.measure("server certificate validity", validity.total_seconds(), "s", budget=ttl)
    expect_workload_certificate(server_identity, scenario.spiffe_id("server"), ttl)
    expect_workload_certificate(client_identity, scenario.spiffe_id("frontend"), ttl)
    # and those certificates carry STRICT mTLS across the clusters
    scenario.await_convergence(lambda: scenario.call(client, server, count=3), expect_all_ok)
