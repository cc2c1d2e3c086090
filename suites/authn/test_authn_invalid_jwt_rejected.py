from conformance import Area, Scenario, check
from conformance.expect import expect_all_ok, expect_all_unauthenticated


@check("authn-invalid-jwt-rejected", area=Area.AUTHN,
       description="A token with a bad signature, expired or of another issuer gets 401; a valid token and none pass")
def test_authn_invalid_jwt_rejected(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1")
    issuer = scenario.token_issuer("RS256")
    scenario.baseline("the server answers before any policy", lambda: scenario.call(client, server, count=3),
                      expect_all_ok)

    scenario.apply("authn-invalid-jwt-rejected.yaml", issuer=issuer.issuer, jwks=issuer.jwks)

    # pilot/pkg/security/authn/policy_applier.go: each provider OR allow_missing, so a token that fails
    # verification is rejected (401) and a missing one passes; only an AuthorizationPolicy can require one
    forged = {"Authorization": f"Bearer {issuer.forged('alice')}"}  # the issuer's key id, another key's signature
    scenario.await_convergence(lambda: scenario.call(client, server, count=5, headers=forged),
                               expect_all_unauthenticated)
    expired = {"Authorization": f"Bearer {issuer.token('alice', expires_in_s=-300)}"}
    expect_all_unauthenticated(scenario.call(client, server, count=5, headers=expired))
    foreign = {"Authorization": f"Bearer {issuer.token('alice', issuer='https://elsewhere.meshconf.test')}"}
    expect_all_unauthenticated(scenario.call(client, server, count=5, headers=foreign))
    valid = {"Authorization": f"Bearer {issuer.token('alice')}"}
    expect_all_ok(scenario.call(client, server, count=5, headers=valid))
    expect_all_ok(scenario.call(client, server, count=5))
