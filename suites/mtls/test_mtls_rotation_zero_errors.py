from cryptography.hazmat.primitives import hashes

from conformance import Area, Feature, Scenario, check
from conformance.expect import (
    expect_new_certificate,
    expect_new_certificate_on_the_wire,
    expect_no_failed_calls,
    expect_peer_identity,
)
from conformance.identity import SECRETS_PATH, served_identity


@check("mtls-rotation-zero-errors", area=Area.MTLS, features=[Feature.CERT_ROTATION, Feature.MULTI_CLUSTER],
       description="A client's certificate rotates under continuous cross-cluster mTLS traffic without a failed call, "
                   "and its new connections carry the new certificate")
def test_mtls_rotation_zero_errors(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster2", namespace=scenario.other_namespace)
    scenario.apply("mtls-rotation-zero-errors.yaml")
    scenario.baseline("the client reaches the server over mTLS", lambda: scenario.call(client, server, count=3),
                      lambda result: expect_peer_identity(result, scenario.spiffe_id("client", client.namespace)))
    before = served_identity(scenario.admin(client, SECRETS_PATH)).leaf

    # on Istio the rotation comes on istio-agent's schedule (up to rotation_s): at most 20 calls a second keeps
    # that much traffic within ContinuousTraffic's bound on calls
    with scenario.traffic(client, server, max_seconds=scenario.config.timeouts.rotation_s + 60,
                          min_batch_s=0.25) as traffic:
        traffic.wait(1.0)
        traffic.mark("rotation requested")
        scenario.mesh.rotate_certificates(client.namespace)  # on Istio: waits for istio-agent's own rotation
        # rotation has completed when the client's sidecar serves a new certificate
        served = scenario.await_convergence(lambda: served_identity(scenario.admin(client, SECRETS_PATH)).leaf,
                                            lambda leaf: expect_new_certificate(before.serial_number,
                                                                                leaf.serial_number))
        traffic.mark("rotation completed")
        # a batch of calls that began on the old certificate can end after the mark: give it half a second
        traffic.wait(0.5)
        traffic.mark("new connections")
        traffic.wait(2.0)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, "traffic across the rotation")

    after = served.result
    scenario.measure("failed calls across the rotation", len(timeline.failures()), "calls", budget=0)
    scenario.measure("rotation requested -> completed",
                     timeline.events["rotation completed"] - timeline.events["rotation requested"], "s")
    scenario.measure("calls on new connections after the rotation", len(timeline.responses(
        after=timeline.events["new connections"])), "calls")
    expect_no_failed_calls(timeline, across="rotation completed")
    expect_new_certificate_on_the_wire(timeline, "new connections", after.fingerprint(hashes.SHA256()).hex())
