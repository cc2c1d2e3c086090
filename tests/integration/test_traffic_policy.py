"""DestinationRule outlier detection and connect timeout on real Envoy, as Istio configures them.

Istio's behaviour followed: ``pilot/pkg/networking/core/cluster_traffic_policy.go`` — ``applyOutlierDetection``
sets only the fields a rule names (so Envoy's defaults stay: a consecutive-5xx detector of 5 errors, enforced)
and enforces a named consecutive-errors detector at 100% unless its count is 0 (then 0%: off);
``applyConnectionPool`` sets the cluster's ``connect_timeout`` from ``connectionPool.tcp.connectTimeout``.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conformance.provider import ProbeSpec
from conformance.providers import build_config
from conformance.providers.local.defects import Defect
from conformance.providers.local.provider import LocalProvider
from conformance.topology import load_topology
from tests.integration.mesh import CLUSTERS, call, doc, no_retries

pytestmark = pytest.mark.integration



def _failing_local_server(mesh: LocalProvider, outlier: dict[str, Any]) -> tuple[str, Any, Any]:
    """A client and a server in cluster1 that answers 503, a healthy server in cluster2, locality failover on
    (the mesh default) with ``outlier``, and no retries: the client sees exactly what the mesh does."""
    ns = f"outlier-{secrets.token_hex(3)}"
    client = mesh.deploy_probe(ProbeSpec("client", ns, "cluster1"))
    local = mesh.deploy_probe(ProbeSpec("server", ns, "cluster1"))
    mesh.deploy_probe(ProbeSpec("server", ns, "cluster2"))
    rule = doc("DestinationRule", "server", ns, {"host": "server", "trafficPolicy": {"outlierDetection": outlier}})
    mesh.apply([rule, no_retries(ns)], CLUSTERS)
    assert call(mesh, client, local.url(), 5).clusters() == {"cluster1": 5}
    mesh.faults.set_mode(local, status=503)
    return ns, client, local


def _ejected_after(result: Any, threshold: int) -> None:
    """The calls failed until the detector's threshold ejected the failing pod, then the other cluster answered
    every one. Envoy counts the errors on the worker thread but ejects on the main thread
    (``DetectorImpl::notifyMainThreadConsecutiveError`` posts to the main dispatcher, and the new host set reaches
    the worker as a thread-local update; envoy source/common/upstream/outlier_detection_impl.cc), so a call sent
    right after the threshold's error can still reach the pod: ``threshold`` errors, or one more."""
    statuses = [r.status for r in result.responses]
    errors = statuses.count(503)
    assert errors in (threshold, threshold + 1), result.summary()
    assert statuses[:errors] == [503] * errors and set(statuses[errors:]) == {200}, result.summary()
    assert result.clusters()["cluster2"] == len(statuses) - errors, result.summary()


def test_without_consecutive_5xx_envoys_default_detector_ejects_after_five(local_mesh: LocalProvider) -> None:
    ns, client, local = _failing_local_server(local_mesh, {"baseEjectionTime": "30s", "maxEjectionPercent": 100})
    _ejected_after(call(local_mesh, client, local.url(), 20), 5)  # Envoy's default consecutive_5xx: 5
    local_mesh.delete_namespace(ns)


def test_zero_counts_turn_both_detectors_off(local_mesh: LocalProvider) -> None:
    ns, client, local = _failing_local_server(local_mesh, {"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 0,
                                                           "interval": "0.2s", "maxEjectionPercent": 100})
    result = call(local_mesh, client, local.url(), 30)
    assert result.statuses() == {503: 30}, result.summary()
    local_mesh.delete_namespace(ns)


def test_gateway_errors_detector_alone_ejects(local_mesh: LocalProvider) -> None:
    """consecutive5xxErrors 0, consecutiveGatewayErrors 2: a 503 is a gateway error, ejected after two."""
    ns, client, local = _failing_local_server(local_mesh, {"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 2,
                                                           "baseEjectionTime": "30s", "maxEjectionPercent": 100})
    _ejected_after(call(local_mesh, client, local.url(), 10), 2)
    local_mesh.delete_namespace(ns)


# -- connectTimeout against a blackhole -------------------------------------------------------------------


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port on 127.0.0.1 whose SYNs go unanswered: a listener with a full accept queue drops them (the
    Linux kernel does, with the queue at its limit), as a partitioned peer would. Yields the port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):  # fill the accept queue (never accepted); later SYNs are dropped
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            fillers.append(filler)
            filler.connect_ex(("127.0.0.1", port))
        time.sleep(0.2)
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            with pytest.raises(TimeoutError):
                probe.connect(("127.0.0.1", port))
        finally:
            probe.close()
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def _call_blackhole(mesh: LocalProvider, port: int, connect_timeout: str) -> tuple[str, Any, float]:
    ns = f"connect-{secrets.token_hex(3)}"
    client = mesh.deploy_probe(ProbeSpec("client", ns, "cluster1"))
    host = "blackhole.example.com"
    mesh.apply([
        doc("ServiceEntry", "blackhole", ns, {
            "hosts": [host], "location": "MESH_EXTERNAL", "resolution": "STATIC",
            "ports": [{"number": port, "name": "http", "protocol": "HTTP"}], "endpoints": [{"address": "127.0.0.1"}]}),
        doc("DestinationRule", "blackhole", ns, {
            "host": host, "trafficPolicy": {"connectionPool": {"tcp": {"connectTimeout": connect_timeout}}}}),
        doc("VirtualService", "blackhole", ns, {"hosts": [host], "http": [
            {"route": [{"destination": {"host": host}}], "retries": {"attempts": 0}}]}),
    ], CLUSTERS)
    result = call(mesh, client, f"http://{host}:{port}/", 1)
    return ns, result, result.responses[0].latency_us / 1e6


def test_connect_timeout_comes_from_the_destination_rule(local_mesh: LocalProvider, blackhole: int) -> None:
    ns, result, seconds = _call_blackhole(local_mesh, blackhole, "0.5s")
    assert result.statuses() == {503: 1}, result.summary()  # the sidecar gave up connecting
    assert 0.4 <= seconds <= 1.2, f"the call took {seconds:.2f} s; connectTimeout is 0.5 s"
    local_mesh.delete_namespace(ns)


@pytest.fixture
def mesh_without_connect_timeout(tmp_path_factory: pytest.TempPathFactory,
                                 monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalProvider]:
    monkeypatch.setitem(os.environ, "MESHCONF_STATE_DIR", str(tmp_path_factory.getbasetemp() / "runs"))
    provider = LocalProvider(build_config(defects=[Defect.CONNECT_TIMEOUT_IGNORED.value]),
                             load_topology("multi-primary"))
    try:
        provider.up()
        yield provider
    finally:
        provider.down()


def test_connect_timeout_ignored_defect_waits_istios_default(mesh_without_connect_timeout: LocalProvider,
                                                            blackhole: int) -> None:
    """The probe gives a call 2 s: with Istio's 10 s default connect timeout the sidecar is still waiting."""
    ns, result, seconds = _call_blackhole(mesh_without_connect_timeout, blackhole, "0.5s")
    assert result.statuses() == {0: 1} and seconds >= 1.9, (seconds, result.summary())
    mesh_without_connect_timeout.delete_namespace(ns)
