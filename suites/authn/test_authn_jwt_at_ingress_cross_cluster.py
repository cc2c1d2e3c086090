from conformance import Area, Feature, Scenario, check
from conformance.expect import (
    expect_all_forbidden,
    expect_all_unauthenticated,
    expect_answered_by,
    expect_request_header,
)
from conformance.probe import CallResult

VERIFIED_PAYLOAD = "x-meshconf-verified-payload"
"""Set by the gateway's RequestAuthentication (outputPayloadToHeader) once it verified the token."""


@check("authn-jwt-at-ingress-cross-cluster", area=Area.AUTHN, serial=True,
       features=[Feature.MULTI_CLUSTER, Feature.INGRESS_GATEWAY, Feature.MESH_WIDE_CONFIG,
                 Feature.OUT_OF_MESH_WORKLOADS],
       description="cluster1's ingress gateway verifies the token and routes to cluster2, whose claim policy holds too")
def test_authn_jwt_at_ingress_cross_cluster(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster2")
    outsider = scenario.deploy("outsider", "cluster1", in_mesh=False)  # an end user outside the mesh
    issuer = scenario.token_issuer("ES256")
    host = f"jwt.{scenario.namespace}.example.com"
    edge, origin = scenario.control_plane_of("cluster1"), scenario.control_plane_of("cluster2")
    scenario.apply("authn-jwt-at-ingress-cross-cluster.routes.yaml", clusters=[edge], host=host)
    ingress = scenario.ingress_url("cluster1")

    def through_ingress(token: str | None = None) -> CallResult:
        headers = {"Host": host, **({"Authorization": f"Bearer {token}"} if token else {})}
        return scenario.call(outsider, ingress, count=5, headers=headers)

    def with_groups(*groups: str) -> str:
        return issuer.token("alice", claims={"groups": list(groups)})

    scenario.baseline(f"cluster1's ingress gateway routes {host} to the server only in cluster2",
                      through_ingress, lambda result: expect_answered_by(result, [server.cluster]))

    # the gateway's policies go to the control plane of cluster1, the server's to the one of cluster2
    scenario.apply("authn-jwt-at-ingress-cross-cluster.yaml", clusters=[edge], host=host, issuer=issuer.issuer,
                   jwks=issuer.jwks)
    scenario.apply("authn-jwt-at-ingress-cross-cluster.server.yaml", clusters=[origin], issuer=issuer.issuer,
                   jwks=issuer.jwks)

    def verified_at_the_edge_and_served_in_cluster2(result: CallResult) -> None:
        expect_answered_by(result, ["cluster2"])
        expect_request_header(result, VERIFIED_PAYLOAD)

    # a customer who is an admin passes both: the gateway verified the token, cluster2 answered
    scenario.await_convergence(lambda: through_ingress(with_groups("customers", "admins")),
                               verified_at_the_edge_and_served_in_cluster2)
    # a customer who is not an admin passes the gateway and is refused by cluster2's own policy
    scenario.await_convergence(lambda: through_ingress(with_groups("customers")), expect_all_forbidden)
    # the gateway: a token that fails verification gets 401 there; no token, or no "customers", gets 403
    expect_all_unauthenticated(through_ingress(issuer.forged("alice", claims={"groups": ["customers", "admins"]})))
    expect_all_forbidden(through_ingress())
    expect_all_forbidden(through_ingress(with_groups("admins")))
