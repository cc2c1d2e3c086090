"""The mesh's root CA replaced in Istio's plug-in CA steps, under cross-cluster mTLS traffic
(tests/integration/security/cacert_rotation: ``root-cert-combined.pem``, then intermediates signed by the new root,
then the new root alone; samples/certs/README.md). Every proxy trusts both roots from the first step, so calls never
fail whichever root a peer's chain ends at (read from both proxies after each step before the last: a mesh that
drops the old root early refuses peers not yet re-signed, which real traffic shows only while they are); at the end
every chain ends at the new root and the old root is trusted no more."""

from conformance import Area, Feature, Scenario, check
from conformance.expect import (
    expect_both_roots_trusted,
    expect_chain_moved_to_new_root,
    expect_no_failed_calls,
    expect_peer_identity,
)
from conformance.identity import SECRETS_PATH, ServedIdentity, served_identity
from conformance.provider import RootStep


@check("mtls-root-ca-migration", area=Area.MTLS, serial=True,
       features=[Feature.MULTI_CLUSTER, Feature.ROOT_CA_MIGRATION],
       description="The root CA is migrated in Istio's three plug-in CA steps under cross-cluster mTLS traffic with "
                   "zero failed calls; afterwards every chain ends at the new root and the old root is not trusted")
def test_mtls_root_ca_migration(scenario: Scenario) -> None:
    here, there = scenario.clusters[0], scenario.clusters[-1]
    scenario.require(here != there, "two clusters")
    server = scenario.deploy("server", there)
    client = scenario.deploy("client", here)
    scenario.apply("mtls-root-ca-migration.yaml")
    scenario.baseline("the client reaches the server over mTLS", lambda: scenario.call(client, server, count=3),
                      lambda result: expect_peer_identity(result, scenario.spiffe_id("client")))

    faults = scenario.faults
    with scenario.traffic(client, server, min_batch_s=0.1,
                          max_seconds=3 * scenario.config.timeouts.control_plane_s) as traffic:
        traffic.wait(0.5)
        during: list[tuple[str, str, ServedIdentity]] = []
        for step in RootStep:
            traffic.mark(str(step))
            roots = faults.migrate_root(step, [scenario.namespace])  # cacerts, istiod restarted, workloads
            if step is not RootStep.OLD_ROOT_REMOVED:
                during += [(str(step), str(probe), served_identity(scenario.admin(probe, SECRETS_PATH)))
                           for probe in (client, server)]
            traffic.wait(1.0)
    timeline = traffic.stop()
    scenario.attach_timeline(timeline, "traffic across the root migration")

    identities = {str(probe): served_identity(scenario.admin(probe, SECRETS_PATH)) for probe in (client, server)}
    for step in RootStep:
        scenario.measure(f"calls during step {step}", len(timeline.responses(
            after=timeline.events[str(step)], before=_next(timeline.events, step))), "calls")
    scenario.measure("failed calls across the migration", len(timeline.failures()), "calls", budget=0)
    for step_name, workload, identity in during:  # the cause first: on the local mesh its symptom lasts milliseconds
        expect_both_roots_trusted(identity, roots, workload, step_name)
    expect_no_failed_calls(timeline, across=str(RootStep.COMBINED_ROOT))
    for workload, identity in identities.items():
        expect_chain_moved_to_new_root(identity, roots, workload)


def _next(events: dict[str, float], step: RootStep) -> float:
    steps = list(RootStep)
    index = steps.index(step)
    return events[str(steps[index + 1])] if index + 1 < len(steps) else float("inf")
