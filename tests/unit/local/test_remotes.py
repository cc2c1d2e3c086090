"""Remote secrets and remote clusters of a local control plane, against real API servers on 127.0.0.0/8
(pkg/kube/multicluster/secretcontroller.go, cluster.go: sync states, rotation, bad secrets, restart)."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.provider import ProbeSpec
from conformance.providers.local.addresses import PodAddresses
from conformance.providers.local.defects import Defect
from conformance.providers.local.model import Registry, Workload
from conformance.providers.local.remotes import API_PORT, REMOTE_CLUSTER_TIMEOUT_S, ApiServer, RemoteClusters
from conformance.topology import load_topology

TOPOLOGY = load_topology("three-cluster")


@pytest.fixture
def registry() -> Registry:
    registry = Registry()
    for index, cluster in enumerate(TOPOLOGY.clusters):
        registry.add(Workload(f"server-{cluster.name}", ProbeSpec("server", "ns", cluster.name), cluster,
                              cluster.zone, PodAddresses(f"127.0.{index}.2", "127.1.0.2")))
    return registry


@pytest.fixture
def api(registry: Registry) -> Iterator[ApiServer]:
    server = ApiServer("cluster3", "127.0.0.66", registry)  # kube-apiserver's port, 6443, on an unused address
    server.start()
    yield server
    server.close()


def _secrets(tmp_path: Path, registry: Registry, *defects: Defect) -> RemoteClusters:
    return RemoteClusters("cluster1", tmp_path / "cluster1", lambda _cluster, address, port: (address, port),
                          registry, frozenset(defects))


def test_a_good_secret_syncs_and_shows_the_cluster(tmp_path: Path, registry: Registry, api: ApiServer) -> None:
    secrets = _secrets(tmp_path, registry)
    assert secrets.visible() == {"cluster1"}
    secrets.write("cluster3", api.url, api.issue())
    assert secrets.load("cluster3") == "synced"
    assert secrets.visible() == {"cluster1", "cluster3"}
    assert stat.S_IMODE(secrets.path("cluster3").stat().st_mode) == 0o600
    rows = secrets.status()
    assert [(r["id"], r["secretName"], r["syncStatus"]) for r in rows] == [
        ("cluster1", "", "synced"), ("cluster3", "istio-remote-secret-cluster3", "synced")]
    assert secrets.token("cluster3") not in json.dumps(secrets.describe())  # no credential in diagnostics


def test_the_api_server_checks_the_credential(api: ApiServer) -> None:
    reader, other = api.issue(), api.issue(reader=False)
    assert api.answer("/api/v1/pods", f"Bearer {reader}")[0] == 200
    assert len(api.answer("/api/v1/pods", f"Bearer {reader}")[1]["items"]) == 1  # cluster3's pod only
    assert api.answer("/api/v1/pods", f"Bearer {other}")[0] == 403
    assert api.answer("/api/v1/pods", "Bearer nonsense")[0] == 401
    api.revoke(reader)
    assert api.answer("/api/v1/pods", f"Bearer {reader}")[0] == 401


def test_rotation_keeps_the_endpoints(tmp_path: Path, registry: Registry, api: ApiServer) -> None:
    secrets = _secrets(tmp_path, registry)
    secrets.write("cluster3", api.url, api.issue())
    secrets.load("cluster3")
    assert secrets.load("cluster3") == "synced"  # the same content: nothing happens
    secrets.write("cluster3", api.url, api.issue())
    assert secrets.load("cluster3") == "synced"
    assert secrets.visible() == {"cluster1", "cluster3"} and secrets.hidden() == set()


def test_the_rotation_defect_loses_the_endpoints_until_restart(tmp_path: Path, registry: Registry,
                                                                api: ApiServer) -> None:
    secrets = _secrets(tmp_path, registry, Defect.REMOTE_ENDPOINTS_LOST_ON_SECRET_ROTATION)
    secrets.write("cluster3", api.url, api.issue())
    secrets.load("cluster3")
    secrets.write("cluster3", api.url, api.issue())
    secrets.load("cluster3")
    assert "cluster3" in secrets.visible() and secrets.hidden() == {"server-cluster3"}
    secrets.restart(["cluster3"])
    assert secrets.hidden() == set()


@pytest.mark.parametrize(("server", "reader", "error"), [
    (f"https://127.0.0.77:{API_PORT}", True, "unreachable"),
    (None, False, "403"),
])
def test_a_bad_secret_drops_the_cluster_and_a_good_one_brings_it_back(
        tmp_path: Path, registry: Registry, api: ApiServer, server: str | None, reader: bool, error: str) -> None:
    secrets = _secrets(tmp_path, registry)
    good = api.issue()
    secrets.write("cluster3", api.url, good)
    secrets.load("cluster3")
    secrets.write("cluster3", server or api.url, api.issue(reader=reader))
    assert secrets.load("cluster3") == "syncing"
    assert secrets.visible() == {"cluster1"}
    row = secrets.status()[1]
    assert row["syncStatus"] == "syncing" and error in row["error"]
    assert secrets.synced() is False  # a starting control plane would still wait for it
    secrets._clusters["cluster3"].added -= REMOTE_CLUSTER_TIMEOUT_S  # as if PILOT_REMOTE_CLUSTER_TIMEOUT passed
    assert secrets.status()[1]["syncStatus"] == "timeout" and secrets.synced() is True
    secrets.write("cluster3", api.url, good)
    assert secrets.load("cluster3") == "synced"
    assert secrets.visible() == {"cluster1", "cluster3"}


def test_the_blocked_recovery_defect_ignores_the_good_secret_until_restart(tmp_path: Path, registry: Registry,
                                                                           api: ApiServer) -> None:
    secrets = _secrets(tmp_path, registry, Defect.BAD_SECRET_BLOCKS_RECOVERY)
    good = api.issue()
    secrets.write("cluster3", f"https://127.0.0.77:{API_PORT}", api.issue())
    secrets.load("cluster3")
    secrets.write("cluster3", api.url, good)
    assert secrets.load("cluster3") == "syncing" and secrets.visible() == {"cluster1"}
    secrets.restart(["cluster3"])
    assert secrets.visible() == {"cluster1", "cluster3"}
