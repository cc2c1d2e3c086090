"""A cut link between clusters, through real Envoy: a blackhole, as iptables DROP is between kind clusters.

Istio (MeshConfig ``connectTimeout``, default 10 s; DestinationRule ``connectionPool.tcp.connectTimeout``):
a new connection across a partition fails only when the proxy's connect timeout fires; a request on a
connection opened before the cut waits for an answer that never comes.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from conformance.provider import ProbeHandle, ProbeSpec
from conformance.providers.local.provider import LocalProvider
from tests.integration.mesh import CLUSTERS, call, doc

pytestmark = pytest.mark.integration


@pytest.fixture
def cross_cluster(local_mesh: LocalProvider) -> Iterator[tuple[ProbeHandle, ProbeHandle, str]]:
    ns = f"cut-{secrets.token_hex(3)}"
    remote = local_mesh.deploy_probe(ProbeSpec("remote", ns, "cluster2"))
    client = local_mesh.deploy_probe(ProbeSpec("client", ns, "cluster1"))
    local_mesh.apply([doc("VirtualService", "remote", ns, {"hosts": ["remote"], "http": [
        {"route": [{"destination": {"host": "remote"}}], "retries": {"attempts": 0}}]})], CLUSTERS)
    try:
        yield client, remote, ns
    finally:
        local_mesh.faults.reset()
        local_mesh.delete_namespace(ns)


def _pool(mesh: LocalProvider, ns: str, **pool: object) -> None:
    mesh.apply([doc("DestinationRule", "remote", ns, {"host": "remote", "trafficPolicy": {"connectionPool": pool}})],
               CLUSTERS)


def test_a_new_connection_across_a_cut_fails_when_the_connect_timeout_fires(
        local_mesh: LocalProvider, cross_cluster: tuple[ProbeHandle, ProbeHandle, str]) -> None:
    client, remote, ns = cross_cluster
    _pool(local_mesh, ns, tcp={"connectTimeout": "500ms"}, http={"maxRequestsPerConnection": 1})
    assert call(local_mesh, client, remote.url(), 3).statuses() == {200: 3}
    local_mesh.faults.set_link("cluster1", "cluster2", cut=True)
    cut = call(local_mesh, client, remote.url(), 3)
    assert cut.statuses() == {503: 3}, cut.summary()  # Envoy's "upstream connect error", not a reset
    assert all(450_000 <= r.latency_us < 1_000_000 for r in cut.responses), [r.latency_us for r in cut.responses]
    local_mesh.faults.set_link("cluster1", "cluster2", cut=False)
    assert call(local_mesh, client, remote.url(), 3).statuses() == {200: 3}


def test_without_a_connect_timeout_a_call_across_a_cut_hangs(
        local_mesh: LocalProvider, cross_cluster: tuple[ProbeHandle, ProbeHandle, str]) -> None:
    client, remote, ns = cross_cluster
    _pool(local_mesh, ns, http={"maxRequestsPerConnection": 1})  # Istio's default connect timeout: 10 s
    assert call(local_mesh, client, remote.url(), 1).statuses() == {200: 1}
    local_mesh.faults.set_link("cluster1", "cluster2", cut=True)
    hung = call(local_mesh, client, remote.url(), 1)
    assert [r.error for r in hung.responses] == ["timeout"], hung.summary()  # the probe gave up after 2 s


def test_a_request_on_a_connection_opened_before_the_cut_stalls_until_it_heals(
        local_mesh: LocalProvider, cross_cluster: tuple[ProbeHandle, ProbeHandle, str]) -> None:
    client, remote, ns = cross_cluster
    _pool(local_mesh, ns, tcp={"connectTimeout": "500ms"})  # keep-alive: the client's sidecar pools the connection
    assert call(local_mesh, client, remote.url(), 3).statuses() == {200: 3}
    local_mesh.faults.set_link("cluster1", "cluster2", cut=True)
    stalled = call(local_mesh, client, remote.url(), 1)
    assert [r.error for r in stalled.responses] == ["timeout"], stalled.summary()  # no reset, no connect timeout
    local_mesh.faults.set_link("cluster1", "cluster2", cut=False)
    assert call(local_mesh, client, remote.url(), 3).statuses() == {200: 3}
