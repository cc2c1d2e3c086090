import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from conformance import Area, CallResult, Feature, Scenario, check
from conformance.expect import expect_reached_clusters, expect_share

SAMPLE = 1000
"""Calls per caller in the measured sample (the share's tolerance shrinks with its square root)."""
POLL = 200
"""Calls per caller in each poll while the rule takes effect."""
CONCURRENCY = 10
"""Calls in flight at once: a sample takes seconds even when a share of it crosses a slow link."""
Z = 4.42
"""How many binomial standard deviations a measured share may stray from the set one: a conformant mesh
fails the check by chance once in 100,000 samples. (Envoy picks a locality by weight with a scheduler that
spreads picks more evenly than independent draws, so the real spread is at most this.)"""


def tolerance_pct(share_pct: float, calls: int) -> float:
    """Half-width, in points, of the band a share of ``share_pct`` % measured on ``calls`` calls stays in."""
    share = share_pct / 100
    return 100 * Z * math.sqrt(share * (1 - share) / calls)


def set_shares(docs: Sequence[Mapping[str, Any]], regions: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """Caller's cluster -> {cluster: % of its calls}, as the applied DestinationRule's ``distribute`` sets them
    (``region/*`` patterns; one cluster per region)."""
    cluster_of = {region: cluster for cluster, region in regions.items()}
    rule = next(d for d in docs if d["kind"] == "DestinationRule")
    shares: dict[str, dict[str, int]] = {}
    for item in rule["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]["distribute"]:
        source = cluster_of[item["from"].split("/")[0]]
        shares[source] = {cluster_of[pattern.split("/")[0]]: int(weight) for pattern, weight in item["to"].items()}
    return shares


def answered_in_shares(result: CallResult, shares: Mapping[str, int]) -> None:
    """Each cluster answered its set share of ``result``'s calls, within the tolerance for their number."""
    __tracebackhide__ = True
    for cluster, pct in shares.items():
        expect_share(result, [cluster], pct - tolerance_pct(pct, len(result)))


@check("failover-locality-distribute", area=Area.FAILOVER, features=[Feature.MULTI_CLUSTER],
       description="localityLbSetting.distribute sends each caller's set share of calls to each cluster")
def test_failover_locality_distribute(scenario: Scenario) -> None:
    regions = {c.name: c.region for c in scenario.mesh.clusters() if c.name in ("cluster1", "cluster2")}
    if len(set(regions.values())) < 2:
        pytest.skip("distribute weights regions: cluster1 and cluster2 must be in different regions")
    server = scenario.deploy("server", "cluster1")
    scenario.deploy("server", "cluster2")
    clients = {cluster: scenario.deploy("client", cluster) for cluster in regions}
    for cluster, client in clients.items():
        scenario.baseline(f"without the rule, calls from {cluster} reach both clusters",
                          lambda c=client: scenario.call(c, server, count=30),  # type: ignore[misc]
                          lambda result: expect_reached_clusters(result, regions))

    docs = scenario.apply("failover-locality-distribute.yaml", region1=regions["cluster1"],
                          region2=regions["cluster2"])

    for cluster, shares in set_shares(docs, regions).items():
        client = clients[cluster]

        def calls(count: int, attach: bool = True) -> CallResult:
            return scenario.call(client, server, count=count, concurrency=CONCURRENCY, attach=attach)  # noqa: B023

        scenario.await_convergence(lambda: calls(POLL, attach=False),
                                   lambda result, s=shares: answered_in_shares(result, s))  # type: ignore[misc]
        sample = calls(SAMPLE)
        for target, pct in shares.items():
            served = 100.0 * sum(1 for r in sample.responses if r.ok and r.cluster == target) / len(sample)
            scenario.measure(f"calls from {cluster} answered by {target} (set: {pct}%)", round(served, 1), "%",
                             budget=round(pct - tolerance_pct(pct, len(sample)), 1), comparison=">=")
        answered_in_shares(sample, shares)
