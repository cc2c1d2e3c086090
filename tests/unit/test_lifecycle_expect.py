"""The lifecycle checks' helpers and expectations: held connections, endpoint reads, control-plane status, the
root migration's chains; and a check that needs more clusters skips, saying which."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from conformance.certs import MeshCA, RootStep
from conformance.connections import ConnectionHold, EndpointWatch, HeldConnections, endpoint_count
from conformance.errors import ProviderError
from conformance.expect import (
    Nonconformance,
    expect_both_roots_trusted,
    expect_chain_moved_to_new_root,
    expect_connections_kept,
    expect_control_plane_ready,
    expect_endpoints_kept,
    expect_remote_cluster_synced,
    expect_remote_cluster_unsynced,
)
from conformance.identity import ServedIdentity
from conformance.provider import ControlPlaneStatus, RemoteClusterStatus

CLUSTERS = """outbound|8080||server.ns.svc.cluster.local::observability_name::outbound|8080||server.ns.svc.cluster.local
outbound|8080||server.ns.svc.cluster.local::127.11.0.5:8080::cx_active::1
outbound|8080||server.ns.svc.cluster.local::127.11.0.5:8080::health_flags::healthy
outbound|8080||server.ns.svc.cluster.local::127.13.127.3:15443::health_flags::healthy
outbound|8080|v1|server.ns.svc.cluster.local::127.11.0.5:8080::health_flags::healthy
outbound|8080||other.ns.svc.cluster.local::127.11.0.9:8080::health_flags::healthy
"""


def test_endpoint_count_counts_one_cluster_hosts() -> None:
    assert endpoint_count(CLUSTERS, "outbound|8080||server.ns.svc.cluster.local") == 2
    assert endpoint_count(CLUSTERS, "outbound|8080|v1|server.ns.svc.cluster.local") == 1
    assert endpoint_count(CLUSTERS, "outbound|9090||server.ns.svc.cluster.local") == 0


def test_an_endpoint_watch_records_reads_and_keeps_a_failed_read() -> None:
    texts = iter([CLUSTERS, "", CLUSTERS])
    with EndpointWatch(lambda: next(texts, CLUSTERS), "outbound|8080||server.ns.svc.cluster.local", 5,
                       interval_s=0.001) as watch:
        time.sleep(0.1)
    assert watch.minimum() is not None and watch.minimum()[1] == 0  # type: ignore[index]
    expect_endpoints_kept([(0.0, 2), (0.5, 2)], 2, "a restart")
    with pytest.raises(Nonconformance, match=r"held 0 of the service's 2 endpoints \(0.20 s in; 2 of 3 reads"):
        expect_endpoints_kept([(0.1, 2), (0.2, 0), (0.3, 1)], 2, "a restart")
    with pytest.raises(Nonconformance, match="never read"):
        expect_endpoints_kept([], 2, "a restart")

    def broken() -> str:
        raise ProviderError("admin unreachable")

    with EndpointWatch(broken, "c", 5) as failing:
        time.sleep(0.05)
    with pytest.raises(ProviderError, match="admin unreachable"):
        _ = failing.samples  # a failed read is no reading of zero endpoints


def _calls(*records: tuple[int, int, str | None]) -> dict[str, Any]:
    return {"calls": [{"connection": c, "status": s, "error": e, "startedUs": i * 1000}
                      for i, (c, s, e) in enumerate(records)]}


def test_held_connections_count_replaced_and_failed_ones() -> None:
    kept = HeldConnections.from_answer(_calls((1, 200, None), (2, 200, None), (1, 200, None), (2, 200, None)), 2)
    assert (kept.opened, kept.lost, kept.failed_calls) == (2, 0, 0)
    expect_connections_kept(kept, "pushes")
    replaced = HeldConnections.from_answer(_calls((1, 200, None), (2, 200, None), (3, 200, None), (2, 200, None)), 2)
    assert replaced.lost == 1
    with pytest.raises(Nonconformance, match="3 were opened for 2 held"):
        expect_connections_kept(replaced, "pushes")
    failed = HeldConnections.from_answer(_calls((1, 200, None), (1, 0, "connection reset")), 1)
    assert failed.lost == 1 and failed.errors() == {"connection reset": 1}
    with pytest.raises(Nonconformance, match="nothing was proven"):
        expect_connections_kept(HeldConnections(2, ()), "pushes")


def test_a_connection_hold_is_stopped_by_name_and_returns_its_calls() -> None:
    stopped = threading.Event()
    seen: list[Any] = []

    def forward(request: Any) -> Any:
        seen.append(request)
        stopped.wait(5)
        return _calls((1, 200, None), (2, 200, None))

    def stop(name: str) -> Any:
        seen.append(name)
        stopped.set()
        return {"stopped": True}

    request = {"name": "hold-1", "concurrency": 2, "max_duration_ms": 20_000}
    with ConnectionHold(forward, stop, request) as held:
        held.wait(0.05)
        assert held.running
    result = held.result()
    assert seen == [request, "hold-1"] and held.ended_early and result.opened == 2 and not held.running


def test_control_plane_status_expectations() -> None:
    status = ControlPlaneStatus("cluster1", True, (RemoteClusterStatus("cluster1", "", "synced"),
                                                    RemoteClusterStatus("cluster3", "istio-remote-secret-cluster3",
                                                                        "timeout")))
    expect_control_plane_ready(status)
    expect_remote_cluster_synced(status, "cluster1")
    expect_remote_cluster_unsynced(status, "cluster3")
    with pytest.raises(Nonconformance, match="cluster3 is timeout, not synced"):
        expect_remote_cluster_synced(status, "cluster3")
    with pytest.raises(Nonconformance, match="cluster9 is not listed"):
        expect_remote_cluster_synced(status, "cluster9")
    with pytest.raises(Nonconformance, match="not ready"):
        expect_control_plane_ready(ControlPlaneStatus("cluster1", False, ()))


def test_chain_moved_to_the_new_root(tmp_path: Path) -> None:
    ca = MeshCA.create(tmp_path)
    before = ca.intermediate("cluster1").issue("cluster.local", "ns", "sa")
    ca.migrate(RootStep.COMBINED_ROOT)
    ca.migrate(RootStep.NEW_INTERMEDIATES)
    after = ca.intermediate("cluster1").issue("cluster.local", "ns", "sa")
    roots = ca.migrate(RootStep.OLD_ROOT_REMOVED)
    new, old = (x509.load_pem_x509_certificate(r) for r in (roots.new_root, roots.old_root))

    def identity(cert: Any, *trusted: x509.Certificate) -> ServedIdentity:
        return ServedIdentity(tuple(x509.load_pem_x509_certificates(cert.chain_pem)), trusted)

    expect_chain_moved_to_new_root(identity(after, new), roots, "client")
    with pytest.raises(Nonconformance, match=r"ends at .* not at the new root"):
        expect_chain_moved_to_new_root(identity(before, new), roots, "client")
    with pytest.raises(Nonconformance, match="still trusts the old root"):
        expect_chain_moved_to_new_root(identity(after, old, new), roots, "client")


def test_both_roots_trusted_until_the_old_one_is_removed(tmp_path: Path) -> None:
    ca = MeshCA.create(tmp_path)
    roots = ca.migrate(RootStep.COMBINED_ROOT)
    cert = ca.intermediate("cluster1").issue("cluster.local", "ns", "sa")
    chain = tuple(x509.load_pem_x509_certificates(cert.chain_pem))
    new, old = (x509.load_pem_x509_certificate(r) for r in (roots.new_root, roots.old_root))
    expect_both_roots_trusted(ServedIdentity(chain, (old, new)), roots, "client", "combined-root")
    with pytest.raises(Nonconformance, match="after step new-intermediates the proxy of client does not trust the "
                                             "old root"):
        expect_both_roots_trusted(ServedIdentity(chain, (new,)), roots, "client", "new-intermediates")
    with pytest.raises(Nonconformance, match="does not trust the new root"):
        expect_both_roots_trusted(ServedIdentity(chain, (old,)), roots, "client", "combined-root")
