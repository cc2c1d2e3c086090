from conformance import Area, Scenario, check
from conformance.expect import expect_all_forbidden, expect_all_ok


@check("authz-jwt-claim-condition", area=Area.AUTHZ,
       description="A when condition on request.auth.claims[groups] admits members of the group and no one else")
def test_authz_jwt_claim_condition(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1")
    issuer = scenario.token_issuer("RS256")
    scenario.baseline("the server answers before any policy", lambda: scenario.call(client, server, count=3),
                      expect_all_ok)

    scenario.apply("authz-jwt-claim-condition.yaml", issuer=issuer.issuer, jwks=issuer.jwks)

    def bearer(groups: list[str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {issuer.token('alice', claims={'groups': groups})}"}

    scenario.await_convergence(lambda: scenario.call(client, server, count=5, headers=bearer(["dev"])),
                               expect_all_forbidden)
    expect_all_forbidden(scenario.call(client, server, count=5))  # no token: no claims
    expect_all_ok(scenario.call(client, server, count=10, headers=bearer(["dev", "admins"])))
