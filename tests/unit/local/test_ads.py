"""The ADS server's protocol: versions, nonces, ACK/NACK, push order, stream stop and restart.

A scripted gRPC client stands in for Envoy here (the one seam these tests need); the integration tests
(tests/integration/test_xds.py) hold the same server against real Envoy.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from conformance.errors import ConfigNotApplied
from conformance.providers.local.ads import ControlPlane, EventLoopThread
from conformance.providers.local.envoy import XdsSnapshot, any_config
from conformance.providers.local.xds import (
    ADS_SOURCE,
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    Converter,
    ProxyResources,
    split,
)

NODE = "sidecar~127.0.0.2~p1.ns~ns.svc.cluster.local"
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def resources(status: int = 200, endpoint: str = "127.0.0.3", timeout: str = "10s",
              key: str = "eA==") -> ProxyResources:
    """One EDS cluster (TLS with the secret ``default``), one listener whose routes answer ``status``."""
    route = {"name": "outbound", "virtual_hosts": [{"name": "a", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": status}}]}]}
    listener = {"name": "virtualOutbound",
                "address": {"socket_address": {"address": "127.0.0.2", "port_value": 15001}},
                "filter_chains": [{"filters": [{"name": "hcm", "typed_config": any_config(
                    _HCM, stat_prefix="o", route_config=route, http_filters=[{
                        "name": "envoy.filters.http.router",
                        "typed_config": any_config("envoy.extensions.filters.http.router.v3.Router")}])}]}]}
    cluster = {"name": "outbound|8080||s", "type": "STATIC", "connect_timeout": timeout,
               "load_assignment": {"cluster_name": "outbound|8080||s", "endpoints": [{"lb_endpoints": [
                   {"endpoint": {"address": {"socket_address": {"address": endpoint, "port_value": 8080}}}}]}]},
               "transport_socket": {"name": "tls", "typed_config": any_config(
                   "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", common_tls_context={
                       "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": ADS_SOURCE}]})}}
    secret = {"name": "default", "tls_certificate": {"certificate_chain": {"inline_bytes": key},
                                                     "private_key": {"inline_bytes": key}}}
    return split(XdsSnapshot([listener], [cluster], {"default": secret}))


class FakeEnvoy:
    """An ADS client that sends what the test tells it and records every response."""

    def __init__(self, target: str, node: str = NODE) -> None:
        self.node = node
        self.channel = grpc.insecure_channel(target)
        self._requests: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
        self.received: queue.Queue[discovery_pb2.DiscoveryResponse | Exception] = queue.Queue()
        self._first = True
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self._responses = stub.StreamAggregatedResources(iter(self._requests.get, None))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self._responses:
                self.received.put(response)
            self.received.put(EOFError("the server ended the stream"))
        except grpc.RpcError as exc:
            self.received.put(exc)

    def send(self, type_url: str, names: tuple[str, ...] = (), nonce: str = "", version: str = "",
             error: str | None = None) -> None:
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names, response_nonce=nonce,
                                                 version_info=version)
        if self._first:
            request.node.id = self.node
            self._first = False
        if error is not None:
            request.error_detail.code = 3
            request.error_detail.message = error
        self._requests.put(request)

    def receive(self, timeout_s: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        found = self.received.get(timeout=timeout_s)
        if isinstance(found, Exception):
            raise found
        return found

    def nothing_more(self, within_s: float = 0.3) -> bool:
        try:
            self.received.get(timeout=within_s)
        except queue.Empty:
            return True
        return False

    def ack(self, response: discovery_pb2.DiscoveryResponse, names: tuple[str, ...] = ()) -> None:
        self.send(response.type_url, names, response.nonce, response.version_info)

    def sync(self, names: dict[str, tuple[str, ...]]) -> dict[str, discovery_pb2.DiscoveryResponse]:
        """What Envoy does at start: request every type, ACK every response; returns the last per type."""
        last = {}
        for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET):
            self.send(type_url, names.get(type_url, ()))
            last[type_url] = self.receive()
            self.ack(last[type_url], names.get(type_url, ()))
        return last

    def close(self) -> None:
        self._requests.put(None)
        self.channel.close()


SUBSCRIPTIONS = {ENDPOINT: ("outbound|8080||s",), ROUTE: ("outbound",), SECRET: ("default",)}


@pytest.fixture
def plane() -> Iterator[ControlPlane]:
    loop = EventLoopThread()
    control_plane = ControlPlane("cluster1", "127.0.0.1", loop, Converter(), port=0)
    control_plane.start()
    try:
        yield control_plane
    finally:
        control_plane.stop()
        loop.close()


@pytest.fixture
def envoy(plane: ControlPlane) -> Iterator[FakeEnvoy]:
    client = FakeEnvoy(f"127.0.0.1:{plane.port}")
    yield client
    client.close()


def _names(response: discovery_pb2.DiscoveryResponse) -> set[str]:
    converter = Converter()
    out = set()
    for packed in response.resources:
        message: Any = converter.message_class(packed.type_url.rpartition("/")[2])()
        packed.Unpack(message)
        out.add(message.cluster_name if response.type_url == ENDPOINT else message.name)
    return out


def test_a_starting_proxy_gets_everything_and_its_acks_complete_the_push(plane: ControlPlane,
                                                                        envoy: FakeEnvoy) -> None:
    push = plane.update({NODE: ("p1", resources())}, "start", await_connect=True)
    last = envoy.sync(SUBSCRIPTIONS)
    push.wait(5)
    assert {t: _names(r) for t, r in last.items()} == {
        CLUSTER: {"outbound|8080||s"}, ENDPOINT: {"outbound|8080||s"}, LISTENER: {"virtualOutbound"},
        ROUTE: {"outbound"}, SECRET: {"default"}}
    assert {r.version_info for r in last.values()} == {str(push.version)}
    assert push.acked_ms.keys() == {"p1"}
    status = plane.status()["proxies"]["p1"]
    assert status["connected"] and status["inSync"] and not status["nacks"]


def test_the_push_waits_for_the_acks(plane: ControlPlane, envoy: FakeEnvoy) -> None:
    push = plane.update({NODE: ("p1", resources())}, "start", await_connect=True)
    envoy.send(CLUSTER)
    envoy.receive()  # never ACKed
    with pytest.raises(ConfigNotApplied, match=r"no ACK of version \d+ within 0s from p1"):
        push.wait(0.3)


def test_a_change_pushes_only_what_changed_with_a_new_version(plane: ControlPlane, envoy: FakeEnvoy) -> None:
    plane.update({NODE: ("p1", resources())}, "start", await_connect=True)
    envoy.sync(SUBSCRIPTIONS)
    push = plane.update({NODE: ("p1", resources(status=403))}, "config")
    response = envoy.receive()
    assert (response.type_url, _names(response), response.version_info) == (ROUTE, {"outbound"}, str(push.version))
    assert envoy.nothing_more()
    envoy.ack(response, SUBSCRIPTIONS[ROUTE])
    push.wait(5)
    unchanged = plane.update({NODE: ("p1", resources(status=403))}, "config")
    unchanged.wait(1)
    assert envoy.nothing_more() and unchanged.acked_ms == {}


def test_types_go_out_in_istios_order(plane: ControlPlane, envoy: FakeEnvoy) -> None:
    plane.update({NODE: ("p1", resources())}, "start", await_connect=True)
    envoy.sync(SUBSCRIPTIONS)
    plane.update({NODE: ("p1", resources(status=403, endpoint="127.0.0.4", key="eQ=="))}, "config")
    order = [envoy.receive().type_url for _ in range(3)]
    assert order == [ENDPOINT, ROUTE, SECRET]


def test_a_changed_cluster_is_followed_by_its_endpoints(plane: ControlPlane, envoy: FakeEnvoy) -> None:
    """Envoy re-creates a changed cluster and keeps it warming until its endpoints come again."""
    plane.update({NODE: ("p1", resources())}, "start", await_connect=True)
    envoy.sync(SUBSCRIPTIONS)
    push = plane.update({NODE: ("p1", resources(timeout="5s"))}, "config")
    clusters, endpoints = envoy.receive(), envoy.receive()
    assert (clusters.type_url, endpoints.type_url) == (CLUSTER, ENDPOINT)
    assert _names(endpoints) == {"outbound|8080||s"}
    envoy.ack(clusters)
    with pytest.raises(ConfigNotApplied):
        push.wait(0.3)  # the endpoints are not ACKed yet
    envoy.ack(endpoints, SUBSCRIPTIONS[ENDPOINT])
    push.wait(5)


def test_a_stale_nonce_is_ignored(plane: ControlPlane, envoy: FakeEnvoy) -> None:
    plane.update({NODE: ("p1", resources())}, "start", await_connect=True)
    first = envoy.sync(SUBSCRIPTIONS)[ROUTE]
    plane.update({NODE: ("p1", resources(status=403))}, "config")
    second = envoy.receive()
    envoy.send(ROUTE, ("outbound", "new-name"), first.nonce, first.version_info)  # older than `second`
    assert envoy.nothing_more()
    envoy.ack(second, ("outbound", "new-name"))  # a new name: the watched names are sent (those that exist)
    again = envoy.receive()
    assert (again.type_url, _names(again)) == (ROUTE, {"outbound"})


def test_a_nack_fails_the_push_with_envoys_words(plane: ControlPlane, envoy: FakeEnvoy) -> None:
    plane.update({NODE: ("p1", resources())}, "start", await_connect=True)
    envoy.sync(SUBSCRIPTIONS)
    push = plane.update({NODE: ("p1", resources(status=403))}, "config")
    response = envoy.receive()
    reason = "Only unique values for domains are permitted. Duplicate entry of domain a"
    envoy.send(ROUTE, SUBSCRIPTIONS[ROUTE], response.nonce, "1", error=reason)
    with pytest.raises(ConfigNotApplied) as raised:
        push.wait(5)
    assert str(raised.value).endswith(f"rejected version {push.version} of control plane cluster1 (NACK): "
                                      f"RDS: {reason}")
    assert plane.status()["proxies"]["p1"]["nacks"] == {"RDS": reason}
    fixed = plane.update({NODE: ("p1", resources(status=404))}, "config")
    envoy.ack(envoy.receive(), SUBSCRIPTIONS[ROUTE])
    fixed.wait(5)
    assert plane.status()["proxies"]["p1"]["nacks"] == {}


def test_a_disconnected_proxy_is_not_waited_for_and_gets_the_latest_on_connect(plane: ControlPlane) -> None:
    plane.update({NODE: ("p1", resources())}, "start")
    push = plane.update({NODE: ("p1", resources(status=403))}, "config")
    push.wait(1)
    assert push.skipped == {"p1": "not connected"}
    envoy = FakeEnvoy(f"127.0.0.1:{plane.port}")
    try:
        assert envoy.sync(SUBSCRIPTIONS)[ROUTE].version_info == str(push.version)
    finally:
        envoy.close()


def test_an_unknown_proxy_is_refused(plane: ControlPlane) -> None:
    stranger = FakeEnvoy(f"127.0.0.1:{plane.port}", node="sidecar~127.0.0.9~x.ns~ns.svc.cluster.local")
    try:
        stranger.send(CLUSTER)
        with pytest.raises(grpc.RpcError) as raised:
            stranger.receive()
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        stranger.close()


def test_stop_closes_streams_and_refuses_connections_start_serves_again(plane: ControlPlane,
                                                                       envoy: FakeEnvoy) -> None:
    plane.update({NODE: ("p1", resources())}, "start", await_connect=True)
    envoy.sync(SUBSCRIPTIONS)
    plane.stop()
    with pytest.raises(grpc.RpcError):
        envoy.receive()
    assert plane.status()["proxies"]["p1"]["connected"] is False
    refused = FakeEnvoy(f"127.0.0.1:{plane.port}")
    refused.send(CLUSTER)
    with pytest.raises(grpc.RpcError) as raised:
        refused.receive()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    refused.close()
    while_down = plane.update({NODE: ("p1", resources(status=403))}, "config")
    while_down.wait(1)
    assert while_down.skipped == {"p1": "not connected"}
    plane.start()
    back = FakeEnvoy(f"127.0.0.1:{plane.port}")
    try:
        assert back.sync(SUBSCRIPTIONS)[ROUTE].version_info == str(while_down.version)
        assert plane.status()["proxies"]["p1"]["connects"] == 2
    finally:
        back.close()


def test_forget_drops_the_proxy_and_its_stream(plane: ControlPlane, envoy: FakeEnvoy) -> None:
    plane.update({NODE: ("p1", resources())}, "start", await_connect=True)
    envoy.sync(SUBSCRIPTIONS)
    plane.forget()
    with pytest.raises(EOFError):
        envoy.receive()
    assert plane.status()["proxies"] == {}


def test_the_timeline_records_every_push(plane: ControlPlane, envoy: FakeEnvoy) -> None:
    start = plane.update({NODE: ("p1", resources())}, "start", await_connect=True)
    envoy.sync(SUBSCRIPTIONS)
    start.wait(5)
    timeline = plane.timeline()
    assert [(e["version"], e["reason"]) for e in timeline] == [(start.version, "start")]
    assert timeline[0]["proxies"]["p1"]["ackMs"] >= 0
