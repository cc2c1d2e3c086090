"""The local mesh's control-plane lifecycle on the three-cluster topology, with real Envoy: each primary sees the
other clusters only through its remote secrets (synced, broken, repaired, rotated with the old token revoked), a
restarted control plane syncs them before it serves, the root migration's trust bundle reaches every proxy over
SDS, and MeshConfig clusterLocal keeps calls in the caller's cluster."""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from conformance.connections import EndpointWatch, endpoint_count, outbound_cluster
from conformance.identity import SECRETS_PATH, served_identity
from conformance.provider import DATA_PORT, ProbeHandle, ProbeSpec, RootStep
from conformance.providers import build_config
from conformance.providers.local.provider import LocalProvider
from conformance.topology import load_topology
from tests.integration.mesh import call, eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProvider]:
    saved = os.environ.get("MESHCONF_STATE_DIR")
    os.environ["MESHCONF_STATE_DIR"] = str(tmp_path_factory.getbasetemp() / "runs")
    provider = LocalProvider(build_config(topology="three-cluster"), load_topology("three-cluster"))
    try:
        provider.up()
        yield provider
    finally:
        provider.down()
        if saved is None:
            os.environ.pop("MESHCONF_STATE_DIR", None)
        else:
            os.environ["MESHCONF_STATE_DIR"] = saved


@dataclass
class Pods:
    namespace: str
    client: ProbeHandle
    far: ProbeHandle
    """Only in cluster3."""


@pytest.fixture(scope="module")
def pods(mesh: LocalProvider) -> Iterator[Pods]:
    namespace = f"rs-{secrets.token_hex(3)}"
    far = mesh.deploy_probe(ProbeSpec("far", namespace, "cluster3"))
    client = mesh.deploy_probe(ProbeSpec("client", namespace, "cluster1"))
    yield Pods(namespace, client, far)
    mesh.delete_namespace(namespace)


def _statuses(mesh: LocalProvider, source: ProbeHandle, target: ProbeHandle) -> set[int]:
    return {r.status for r in call(mesh, source, target.url(), count=3).responses}


def test_every_primary_reads_every_other_cluster_through_a_secret(mesh: LocalProvider) -> None:
    for primary, others in (("cluster1", ["cluster2", "cluster3"]), ("cluster3", ["cluster1", "cluster2"])):
        rows = mesh.faults.control_plane_status(primary).remote_clusters
        assert [(r.cluster, r.secret, r.status) for r in rows] == [(primary, "", "synced")] + [
            (c, f"istio-remote-secret-{c}", "synced") for c in others]
        assert mesh.faults.control_plane_status(primary).ready
    assert mesh.run_dir is not None
    files = sorted(p.relative_to(mesh.run_dir).as_posix() for p in mesh.run_dir.glob("remote-secrets/*/*"))
    assert files == ["remote-secrets/cluster1/istio-remote-secret-cluster2.json",
                     "remote-secrets/cluster1/istio-remote-secret-cluster3.json",
                     "remote-secrets/cluster3/istio-remote-secret-cluster1.json",
                     "remote-secrets/cluster3/istio-remote-secret-cluster2.json"]
    assert all((mesh.run_dir / f).stat().st_mode & 0o777 == 0o600 for f in files)


def test_a_broken_secret_drops_the_cluster_and_a_repaired_one_brings_it_back(mesh: LocalProvider, pods: Pods) -> None:
    assert _statuses(mesh, pods.client, pods.far) == {200}
    mesh.faults.break_remote_secret("cluster1", "cluster3")
    try:
        assert mesh.faults.control_plane_status("cluster1").status_of("cluster3") == "syncing"
        broken = call(mesh, pods.client, pods.far.url(), count=3)
        assert {r.error for r in broken.responses} == {"unresolved host"}  # cluster1 no longer knows the service
        assert _statuses(mesh, pods.far, pods.client) == {200}  # cluster3's own secret for cluster1 is fine
    finally:
        mesh.faults.restore_remote_secret("cluster1", "cluster3")
    assert mesh.faults.control_plane_status("cluster1").status_of("cluster3") == "synced"
    assert _statuses(mesh, pods.client, pods.far) == {200}


def test_a_credential_without_the_readers_role_is_refused(mesh: LocalProvider, pods: Pods) -> None:
    mesh.remote_secret("cluster1", "cluster3", "break", how="rejected")
    try:
        row = next(r for r in mesh.control_plane_status("cluster1")["remoteClusters"] if r["id"] == "cluster3")
        assert row["syncStatus"] == "syncing" and "403 Forbidden" in row["error"]
    finally:
        mesh.faults.restore_remote_secret("cluster1", "cluster3")


def test_rotation_keeps_serving_and_revokes_the_old_token(mesh: LocalProvider, pods: Pods) -> None:
    assert mesh.run_dir is not None
    secret = mesh.run_dir / "remote-secrets" / "cluster1" / "istio-remote-secret-cluster3.json"
    before = json.loads(secret.read_text())
    mesh.faults.rotate_remote_secret("cluster1", "cluster3")
    after = json.loads(secret.read_text())
    assert after["token"] != before["token"] and after["server"] == before["server"]
    assert _statuses(mesh, pods.client, pods.far) == {200}
    server = before["server"].replace("https://", "http://")
    for token, status in ((before["token"], 401), (after["token"], 200)):
        request = urllib.request.Request(f"{server}/api/v1/pods", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                assert answer.status == status
        except urllib.error.HTTPError as refused:
            assert refused.code == status


def test_a_restarted_control_plane_never_pushes_without_the_remote_endpoints(mesh: LocalProvider, pods: Pods) -> None:
    cluster = outbound_cluster(pods.far.host, DATA_PORT)
    assert endpoint_count(mesh.proxy_admin(pods.client, "/clusters"), cluster) == 1
    before = mesh.control_plane_status("cluster1")["proxies"][pods.client.instances[0].name]["connects"]
    with EndpointWatch(lambda: mesh.proxy_admin(pods.client, "/clusters"), cluster, max_seconds=60) as watch:
        mesh.faults.restart_control_plane("cluster1")
        reconnected = eventually(lambda: call(mesh, pods.client, pods.far.url(), count=1),
                                 lambda _r: mesh.control_plane_status("cluster1")["proxies"][
                                     pods.client.instances[0].name]["inSync"], within_s=40)
    assert reconnected.responses[0].ok and before >= 1
    assert len(watch.samples) > 10 and min(count for _, count in watch.samples) == 1


def test_root_migration_moves_every_proxys_trust_and_chain(mesh: LocalProvider, pods: Pods) -> None:
    trusted: list[int] = []
    for step in RootStep:
        roots = mesh.faults.migrate_root(step, [pods.namespace])
        identity = served_identity(mesh.proxy_admin(pods.client, SECRETS_PATH))
        trusted.append(len(identity.roots))
        assert _statuses(mesh, pods.client, pods.far) == {200}
    new = x509.load_pem_x509_certificate(roots.new_root)
    old = x509.load_pem_x509_certificate(roots.old_root)
    assert trusted == [2, 2, 1]
    for probe in (pods.client, pods.far):
        identity = served_identity(mesh.proxy_admin(probe, SECRETS_PATH))
        identity.chain[-1].verify_directly_issued_by(new)
        assert identity.roots == (new,) and old not in identity.roots


def test_cluster_local_keeps_calls_in_the_callers_cluster(mesh: LocalProvider, tmp_path: Path) -> None:
    namespace = f"cl-{secrets.token_hex(3)}"
    try:
        for cluster in ("cluster1", "cluster2", "cluster3"):
            mesh.deploy_probe(ProbeSpec("local", namespace, cluster))
        client = mesh.deploy_probe(ProbeSpec("client", namespace, "cluster2"))
        target = f"http://local.{namespace}.svc.cluster.local:8080/"
        assert len({r.cluster for r in call(mesh, client, target, count=30).responses}) == 3
        undo = mesh.mesh_config({"serviceSettings": [{"hosts": [f"local.{namespace}.svc.cluster.local"],
                                                      "settings": {"clusterLocal": True}}]}, ["cluster1"])
        try:  # cluster2's proxies follow cluster1's control plane, but keep to their own cluster's endpoints
            assert {r.cluster for r in call(mesh, client, target, count=30).responses} == {"cluster2"}
        finally:
            mesh.mesh_config(undo["cluster1"], ["cluster1"])
        assert len({r.cluster for r in call(mesh, client, target, count=30).responses}) == 3
    finally:
        mesh.delete_namespace(namespace)


def test_the_name_table_comes_from_the_control_plane(mesh: LocalProvider, pods: Pods) -> None:
    """istio-agent's DNS names are pushed by istiod: a service that appears while its control plane is down
    resolves only once it is back."""
    mesh.faults.set_control_plane("cluster1", False)
    try:
        late = mesh.deploy_probe(ProbeSpec("late", pods.namespace, "cluster3"))
        assert {r.error for r in call(mesh, pods.client, late.url(), count=2).responses} == {"unresolved host"}
    finally:
        mesh.faults.set_control_plane("cluster1", True)
    reached = eventually(lambda: call(mesh, pods.client, late.url(), count=1), lambda r: r.responses[0].ok,
                         within_s=40)
    assert reached.responses[0].ok
