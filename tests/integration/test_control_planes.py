"""The local mesh's control planes on their ADS streams, with real Envoy: bootstrap, pushes, rotation,
stop / start / restart, and remote clusters served by their primary."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conformance.errors import ProviderError, UsageError
from conformance.probe import CallResult
from conformance.provider import ProbeHandle, ProbeSpec
from conformance.providers import build_config
from conformance.providers.local.provider import LocalProvider
from conformance.topology import load_topology
from tests.integration.mesh import call, doc, eventually

pytestmark = pytest.mark.integration

RECONNECT_S = 40.0
"""Envoy's own xDS reconnect backoff (0.5 s doubling up to 30 s, jittered) bounds how long it takes to
come back after its control plane does."""


@dataclass
class Pods:
    namespace: str
    client: ProbeHandle
    server: ProbeHandle


@pytest.fixture(scope="module")
def pods(local_mesh: LocalProvider) -> Iterator[Pods]:
    namespace = f"xds-{secrets.token_hex(3)}"
    server = local_mesh.deploy_probe(ProbeSpec("server", namespace, "cluster1"))
    client = local_mesh.deploy_probe(ProbeSpec("client", namespace, "cluster2"))
    yield Pods(namespace, client, server)
    local_mesh.delete_namespace(namespace)


@pytest.fixture
def control_planes_up(local_mesh: LocalProvider) -> Iterator[None]:
    yield
    for cluster in ("cluster1", "cluster2"):
        local_mesh.set_control_plane(cluster, True)


def _deny(namespace: str) -> dict[str, object]:
    return doc("AuthorizationPolicy", "deny", namespace, {"selector": {"matchLabels": {"app": "server"}},
                                                         "action": "DENY", "rules": [{}]})


def _statuses(result: CallResult) -> set[int]:
    return {r.status for r in result.responses}


def _allowed(mesh: LocalProvider, pods: Pods) -> None:
    """Wait out a previous test's policy on kept-alive connections (they drain within Envoy's drain time)."""
    result = eventually(lambda: call(mesh, pods.client, pods.server.url(), count=3), lambda r: _statuses(r) == {200})
    assert _statuses(result) == {200}


def _in_sync(mesh: LocalProvider, cluster: str, within_s: float) -> dict[str, object]:
    deadline = time.monotonic() + within_s
    status = mesh.control_plane_status(cluster)
    while not all(p["inSync"] for p in status["proxies"].values()) and time.monotonic() < deadline:
        time.sleep(0.2)
        status = mesh.control_plane_status(cluster)
    return status


def test_every_envoy_bootstraps_with_ads_over_grpc_and_watches_no_file(local_mesh: LocalProvider,
                                                                       pods: Pods) -> None:
    dump = json.loads(local_mesh.proxy_admin(pods.server, "/config_dump"))
    bootstrap = dump["configs"][0]["bootstrap"]
    ads = bootstrap["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == "GRPC" and ads["grpc_services"] == [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]
    assert bootstrap["dynamic_resources"]["cds_config"]["ads"] == {}
    assert bootstrap["node"]["metadata"]["CLUSTER_ID"] == "cluster1"
    assert bootstrap["node"]["metadata"]["SERVICE_ACCOUNT"] == "server"
    everything = local_mesh.proxy_admin(pods.server, "/config_dump?include_eds")
    assert "path_config_source" not in everything and "watched_directory" not in everything
    dynamic = {c["@type"].rpartition(".")[2] for c in json.loads(everything)["configs"]}
    assert {"ListenersConfigDump", "ClustersConfigDump", "EndpointsConfigDump", "RoutesConfigDump",
            "SecretsConfigDump"} <= dynamic


def test_apply_returns_when_every_proxy_acked(local_mesh: LocalProvider, pods: Pods) -> None:
    assert _statuses(call(local_mesh, pods.client, pods.server.url(), count=3)) == {200}
    local_mesh.apply([_deny(pods.namespace)], ["cluster1", "cluster2"])
    try:
        status = local_mesh.control_plane_status("cluster1")["proxies"]
        server = status[pods.server.instances[0].name]
        assert server["inSync"] and server["connected"]
        # the policy is in the ACKed config already; a kept-alive connection drains within Envoy's drain time
        denied = eventually(lambda: call(local_mesh, pods.client, pods.server.url(), count=3),
                            lambda r: _statuses(r) == {403}, within_s=5)
        assert _statuses(denied) == {403}
    finally:
        local_mesh.delete([_deny(pods.namespace)], ["cluster1", "cluster2"])


def test_certificate_rotation_is_a_push(local_mesh: LocalProvider, pods: Pods, tmp_path: Path) -> None:
    serials = local_mesh.rotate_certificates(pods.namespace)
    name = pods.server.instances[0].name
    certs = json.loads(local_mesh.proxy_admin(pods.server, "/certs"))
    served = {c["serial_number"].lower().lstrip("0") for entry in certs["certificates"]
              for c in entry["cert_chain"]}
    assert serials[name].lstrip("0") in served  # rotate_certificates returned after the ACK: no waiting
    pushes = json.loads(next(p for p in local_mesh.diagnostics(tmp_path, [pods.namespace])
                             if p.name == "xds-pushes.json").read_text())
    rotation = [e for e in pushes["cluster1"] if e["reason"] == "certificate rotation"][-1]
    assert rotation["proxies"][name]["ackMs"] >= 0


def test_a_proxy_keeps_serving_while_its_control_plane_is_down_and_catches_up_after(
        local_mesh: LocalProvider, pods: Pods, control_planes_up: None) -> None:
    _allowed(local_mesh, pods)
    local_mesh.set_control_plane("cluster1", False)
    status = local_mesh.control_plane_status("cluster1")
    assert status["up"] is False and not any(p["connected"] for p in status["proxies"].values())
    assert _statuses(call(local_mesh, pods.client, pods.server.url(), count=3)) == {200}
    local_mesh.apply([_deny(pods.namespace)], ["cluster1"])  # stored; nobody to push it to
    try:
        time.sleep(1)
        assert _statuses(call(local_mesh, pods.client, pods.server.url(), count=3)) == {200}
        local_mesh.set_control_plane("cluster1", True)
        denied = eventually(lambda: call(local_mesh, pods.client, pods.server.url(), count=3),
                            lambda r: _statuses(r) == {403}, within_s=RECONNECT_S)
        assert _statuses(denied) == {403}
        status = _in_sync(local_mesh, "cluster1", RECONNECT_S)
        assert all(p["connected"] and p["inSync"] and p["connects"] >= 2 for p in status["proxies"].values())
    finally:
        local_mesh.delete([_deny(pods.namespace)], ["cluster1"])


def test_a_restarted_control_plane_rebuilds_its_state_and_serves_pushes(
        local_mesh: LocalProvider, pods: Pods, control_planes_up: None) -> None:
    _allowed(local_mesh, pods)
    before = local_mesh.control_plane_status("cluster2")["proxies"]
    after = local_mesh.restart_control_plane("cluster2")
    assert after["up"] is True and set(after["proxies"]) == set(before)
    status = _in_sync(local_mesh, "cluster2", RECONNECT_S)
    client = status["proxies"][pods.client.instances[0].name]
    assert client["connected"] and client["inSync"] and client["connects"] == 1  # a new control plane's count
    local_mesh.apply([doc("VirtualService", "server", pods.namespace, {"hosts": ["server"], "http": [
        {"fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}},
         "route": [{"destination": {"host": "server"}}]}]})], ["cluster2"])
    try:  # routes take effect per request: the ACKed route config answers at once
        assert _statuses(call(local_mesh, pods.client, pods.server.url(), count=3)) == {418}
    finally:
        local_mesh.delete([doc("VirtualService", "server", pods.namespace, {})], ["cluster2"])


def test_a_proxy_cannot_start_while_its_control_plane_is_down(local_mesh: LocalProvider, pods: Pods,
                                                              control_planes_up: None) -> None:
    local_mesh.set_control_plane("cluster2", False)
    with pytest.raises(ProviderError, match="control plane of cluster cluster2 is down"):
        local_mesh.deploy_probe(ProbeSpec("late", pods.namespace, "cluster2"))


def test_remote_clusters_are_served_by_their_primary() -> None:
    provider = LocalProvider(build_config(topology="primary-remote"), load_topology("primary-remote"))
    provider.up()
    try:
        remote = provider.deploy_probe(ProbeSpec("client", "ns1", "cluster2"))
        primary = provider.control_plane_status("cluster1")
        assert remote.instances[0].name in primary["proxies"]
        assert primary["proxies"][remote.instances[0].name]["inSync"]
        with pytest.raises(UsageError, match="cluster2 is a remote cluster"):
            provider.control_plane_status("cluster2")
    finally:
        provider.down()
