"""DestinationRule subsets and VirtualService routing on real Envoy: a request matrix per feature."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from conformance.provider import ProbeHandle, ProbeSpec
from conformance.providers.local.provider import LocalProvider
from tests.integration.mesh import CLUSTERS, call, doc, eventually, versions

pytestmark = pytest.mark.integration


@dataclass
class Pods:
    namespace: str
    client: ProbeHandle
    v1: ProbeHandle
    v2: ProbeHandle


@pytest.fixture(scope="module")
def pods(local_mesh: LocalProvider) -> Iterator[Pods]:
    namespace = f"routing-{secrets.token_hex(3)}"
    v1 = local_mesh.deploy_probe(ProbeSpec("server", namespace, "cluster1", version="v1"))
    v2 = local_mesh.deploy_probe(ProbeSpec("server", namespace, "cluster1", version="v2"))
    client = local_mesh.deploy_probe(ProbeSpec("client", namespace, "cluster1"))
    subsets = doc("DestinationRule", "server", namespace, {"host": "server", "subsets": [
        {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]})
    local_mesh.apply([subsets], CLUSTERS)
    yield Pods(namespace, client, v1, v2)
    local_mesh.delete_namespace(namespace)


def _route(pods: Pods, http: list[dict[str, object]]) -> dict[str, object]:
    return doc("VirtualService", "server", pods.namespace, {"hosts": ["server"], "http": http})


def _to(subset: str, weight: int | None = None) -> dict[str, object]:
    destination: dict[str, object] = {"destination": {"host": "server", "subset": subset}}
    if weight is not None:
        destination["weight"] = weight
    return destination


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    headers: dict[str, str]
    method: str
    expected: str


MATCH_ROUTES = [
    {"match": [{"headers": {"x-version": {"exact": "v2"}}}], "route": [_to("v2")]},
    {"match": [{"uri": {"prefix": "/beta"}}, {"method": {"exact": "POST"}}], "route": [_to("v2")]},
    {"match": [{"uri": {"exact": "/only-v1"}}], "route": [_to("v1")]},
    {"route": [_to("v1")]},
]
CASES = [
    Case("header", "/", {"x-version": "v2"}, "GET", "v2"),
    Case("header-other-value", "/", {"x-version": "v3"}, "GET", "v1"),
    Case("uri-prefix", "/beta/x", {}, "GET", "v2"),
    Case("method", "/", {}, "POST", "v2"),
    Case("exact-path", "/only-v1", {}, "GET", "v1"),
    Case("fallthrough", "/other", {}, "GET", "v1"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_match_routes_to_subset(local_mesh: LocalProvider, pods: Pods, case: Case) -> None:
    local_mesh.apply([_route(pods, MATCH_ROUTES)], CLUSTERS)
    result = call(local_mesh, pods.client, pods.v1.url(case.path), 6, headers=case.headers, method=case.method)
    assert versions(result) == {case.expected}, result.summary()


def test_weights_split_between_subsets(local_mesh: LocalProvider, pods: Pods) -> None:
    local_mesh.apply([_route(pods, [{"route": [_to("v2", 100)]}])], CLUSTERS)
    assert versions(call(local_mesh, pods.client, pods.v1.url(), 10)) == {"v2"}
    local_mesh.apply([_route(pods, [{"route": [_to("v1", 50), _to("v2", 50)]}])], CLUSTERS)
    result = call(local_mesh, pods.client, pods.v1.url(), 60)
    assert versions(result) == {"v1", "v2"}, result.summary()


def test_no_route_matches_is_404(local_mesh: LocalProvider, pods: Pods) -> None:
    local_mesh.apply([_route(pods, [{"match": [{"uri": {"exact": "/yes"}}], "route": [_to("v1")]}])], CLUSTERS)
    result = call(local_mesh, pods.client, pods.v1.url("/no"), 3)
    assert result.statuses() == {404: 3}, result.summary()


def test_fault_abort_and_delay(local_mesh: LocalProvider, pods: Pods) -> None:
    abort = {"abort": {"httpStatus": 418, "percentage": {"value": 100}}}
    local_mesh.apply([_route(pods, [{"fault": abort, "route": [_to("v1")]}])], CLUSTERS)
    assert call(local_mesh, pods.client, pods.v1.url(), 3).statuses() == {418: 3}
    delay = {"delay": {"fixedDelay": "150ms", "percentage": {"value": 100}}}
    local_mesh.apply([_route(pods, [{"fault": delay, "route": [_to("v1")]}])], CLUSTERS)
    result = call(local_mesh, pods.client, pods.v1.url(), 3)
    # Envoy arms the delay timer from its event loop's cached time, taken when the loop woke: on a busy machine
    # that is a few ms before the request arrived, so the delay can end a little early (148 ms was seen in CI)
    assert result.statuses() == {200: 3} and min(r.latency_us for r in result.responses) >= 140_000


def test_timeout_gives_504(local_mesh: LocalProvider, pods: Pods) -> None:
    local_mesh.apply([_route(pods, [{"timeout": "0.1s", "route": [_to("v1")]}])], CLUSTERS)
    result = call(local_mesh, pods.client, pods.v1.url("/?delay_ms=400"), 2)
    assert result.statuses() == {504: 2}, result.summary()


def test_retries_hide_one_failing_replica(local_mesh: LocalProvider, pods: Pods) -> None:
    """Istio's default retry (to another host) hides a replica answering 503; attempts 0 shows it."""
    local_mesh.apply([_route(pods, [{"route": [_to("v1", 50), _to("v2", 50)]}])], CLUSTERS)
    no_subsets = _route(pods, [{"route": [{"destination": {"host": "server"}}]}])
    local_mesh.apply([no_subsets], CLUSTERS)
    local_mesh.faults.set_mode(pods.v2, status=503)
    try:
        hidden = call(local_mesh, pods.client, pods.v1.url(), 40)
        assert hidden.statuses() == {200: 40}, hidden.summary()
        visible = _route(pods, [{"retries": {"attempts": 0}, "route": [{"destination": {"host": "server"}}]}])
        local_mesh.apply([visible], CLUSTERS)
        shown = eventually(lambda: call(local_mesh, pods.client, pods.v1.url(), 40), lambda r: 503 in r.statuses())
        assert 503 in shown.statuses(), shown.summary()
    finally:
        local_mesh.faults.set_mode(pods.v2, status=None)


def test_connection_pool_overflow_is_503(local_mesh: LocalProvider, pods: Pods) -> None:
    pool = doc("DestinationRule", "server", pods.namespace, {"host": "server", "subsets": [
        {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
        "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 1},
                                             "http": {"http1MaxPendingRequests": 1}}}})
    local_mesh.apply([pool, _route(pods, [{"retries": {"attempts": 0}, "route": [_to("v1")]}])], CLUSTERS)
    result = call(local_mesh, pods.client, pods.v1.url("/?delay_ms=200"), 8, concurrency=8)
    assert 503 in result.statuses() and 200 in result.statuses(), result.summary()
