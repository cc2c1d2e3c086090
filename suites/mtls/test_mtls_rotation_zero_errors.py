from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_ok, expect_new_certificate, expect_no_failed_calls
from conformance.identity import SECRETS_PATH, served_identity


@check("mtls-rotation-zero-errors", area=Area.MTLS, features=[Feature.CERT_ROTATION, Feature.MULTI_CLUSTER],
       description="Certificates rotate under continuous cross-cluster mTLS traffic without a single failed call")
def test_mtls_rotation_zero_errors(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster2")
    scenario.apply("mtls-rotation-zero-errors.yaml")
    scenario.baseline("the client reaches the server", lambda: scenario.call(client, server, count=3), expect_all_ok)
    before = served_identity(scenario.admin(server, SECRETS_PATH)).leaf.serial_number

    with scenario.traffic(client, server, max_seconds=scenario.config.timeouts.rotation_s) as traffic:
        traffic.wait(1.0)
        traffic.mark("rotation")
        scenario.mesh.rotate_certificates(scenario.namespace)
        traffic.wait(1.5)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, "traffic across the rotation")

    after = served_identity(scenario.admin(server, SECRETS_PATH)).leaf.serial_number
    scenario.measure("failed calls across the rotation", len(timeline.failures()), "calls", budget=0)
    expect_no_failed_calls(timeline, across="rotation")
    expect_new_certificate(before, after)
