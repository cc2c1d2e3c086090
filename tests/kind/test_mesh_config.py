"""MeshConfig changes on Kubernetes (``providers/kube/meshconfig.py``): the ``mesh`` key of istiod's ConfigMap is
patched with the resourceVersion it was read at, the change returns only once every istiod serves it on
``/debug/mesh``, and the user's ConfigMap is put back byte for byte, also by ``down`` after a crash, but never over
someone else's change. Against a fake cluster (the calls KubeAPI makes), and the two new KubeAPI calls against a
fake API server with the real ``kubernetes`` client building the requests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.errors import ProviderError, TimeoutExpired, UsageError
from conformance.providers import build_config
from conformance.providers.existing.provider import ExistingProvider
from conformance.providers.kube.api import KubeAPI, Pod
from conformance.providers.kube.meshconfig import STATE_KEY, patch_mesh_config, restore_mesh_configs
from conformance.runstate import RunState
from conformance.topology import load_topology

# what a user's istio ConfigMap looks like: comments and an order that a YAML dump would not keep
USER_MESH = """# managed by the platform team
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
trustDomain: cluster.local
enablePrometheusMerge: true
"""


class FakeCluster:
    """The API server calls meshconfig.py makes: the ConfigMap (with a resourceVersion), istiod pods, and exec of
    ``pilot-discovery request GET /debug/mesh``, which serves what the ConfigMap held ``lag`` reads ago."""

    def __init__(self, context: str = "ctx", mesh: str = USER_MESH, lag: int = 1, name: str = "istio") -> None:
        self.context = context
        self.name = name
        self.data = {"mesh": mesh}
        self.version = 7
        self.lag = lag
        self.patches: list[tuple[str, dict[str, str], str]] = []
        self.execs: list[tuple[str, str, list[str]]] = []
        self.served = yaml.safe_load(mesh) or {}
        self._reads = 0

    def config_map(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        assert namespace == "istio-system"
        return (dict(self.data), str(self.version)) if name == self.name else None

    def patch_config_map(self, namespace: str, name: str, data: dict[str, str], resource_version: str) -> None:
        if resource_version != str(self.version):
            raise ProviderError(f"{self.context}: patch configmap {namespace}/{name}: 409 Conflict")
        self.patches.append((name, dict(data), resource_version))
        self.data.update(data)
        self.version += 1
        self._reads = 0

    def pods(self, namespace: str, selector: dict[str, str]) -> list[Pod]:
        assert (namespace, selector["app"]) == ("istio-system", "istiod")
        return [Pod(f"istiod-{selector['istio.io/rev']}-x", "10.0.0.5", "n", True, dict(selector))]

    def exec(self, namespace: str, pod: str, container: str, command: list[str]) -> str:
        self.execs.append((pod, container, list(command)))
        self._reads += 1
        if self._reads > self.lag:  # the kubelet refreshed the mounted ConfigMap; istiod reloaded it
            self.served = yaml.safe_load(self.data["mesh"]) or {}
        return json.dumps(self.served)


@pytest.fixture(autouse=True)
def _no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("conformance.providers.kube.meshconfig.POLL_S", 0.0)


def _state(tmp_path: Path) -> RunState:
    return RunState(tmp_path)


def test_a_patch_waits_for_istiod_and_its_undo_restores_the_users_text(tmp_path: Path) -> None:
    cluster, state = FakeCluster(lag=2), _state(tmp_path)
    undo = patch_mesh_config(cluster, "cluster1", None, {"trustDomainAliases": ["td1"]}, state, 5)
    assert undo == {"trustDomainAliases": None}
    name, data, version = cluster.patches[-1]
    assert (name, version) == ("istio", "7")  # written only over the version it read
    assert yaml.safe_load(data["mesh"])["trustDomainAliases"] == ["td1"]
    assert yaml.safe_load(data["mesh"])["enablePrometheusMerge"] is True  # the rest is kept
    # it returned only once istiod served the new MeshConfig (two stale reads first)
    assert cluster.served["trustDomainAliases"] == ["td1"]
    assert [c for _, c, _ in cluster.execs] == ["discovery"] * 3
    assert cluster.execs[0][2] == ["pilot-discovery", "request", "GET", "/debug/mesh"]
    assert state.read()[STATE_KEY]["cluster1"]["original"] == USER_MESH  # recorded in case the run crashes

    patch_mesh_config(cluster, "cluster1", None, undo, state, 5)
    assert cluster.data["mesh"] == USER_MESH  # byte for byte: comments and order kept
    assert STATE_KEY not in state.read() or not state.read()[STATE_KEY]


def test_a_revision_uses_its_own_config_map_and_istiods(tmp_path: Path) -> None:
    cluster = FakeCluster(name="istio-1-28-0")
    patch_mesh_config(cluster, "c", "1-28-0", {"trustDomainAliases": ["td1"]}, None, 5)
    assert cluster.patches[-1][0] == "istio-1-28-0"
    assert cluster.execs[-1][0] == "istiod-1-28-0-x"


def test_a_missing_config_map_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match=r"ctx: ConfigMap istio-system/istio-canary .* does not exist"):
        patch_mesh_config(FakeCluster(), "c", "canary", {"trustDomainAliases": ["td1"]}, None, 5)


def test_istiod_that_never_loads_it_times_out_with_what_it_serves(tmp_path: Path) -> None:
    cluster = FakeCluster(lag=10_000)
    with pytest.raises(TimeoutExpired, match=r"did not load the changed MeshConfig within 0s .*istiod-default-x"):
        patch_mesh_config(cluster, "c", None, {"trustDomainAliases": ["td1"]}, None, 0)


def test_down_after_a_crash_restores_the_users_text(tmp_path: Path) -> None:
    cluster, state = FakeCluster(), _state(tmp_path)
    patch_mesh_config(cluster, "cluster1", None, {"trustDomainAliases": ["td1"]}, state, 5)
    # the check never restored it (the run was killed); down does
    restore_mesh_configs({"cluster1": cluster}, state)
    assert cluster.data["mesh"] == USER_MESH
    assert not state.read()[STATE_KEY]
    restore_mesh_configs({"cluster1": cluster}, state)
    assert len(cluster.patches) == 2  # nothing left to do


def test_someone_elses_later_change_is_never_overwritten(tmp_path: Path) -> None:
    cluster, state = FakeCluster(), _state(tmp_path)
    patch_mesh_config(cluster, "cluster1", None, {"trustDomainAliases": ["td1"]}, state, 5)
    cluster.data["mesh"] = "trustDomain: cluster.local\n# their change\n"
    with pytest.raises(ProviderError, match=r"changed by someone else .* left as it is; its mesh key was:\n# managed"):
        restore_mesh_configs({"cluster1": cluster}, state)
    assert cluster.data["mesh"] == "trustDomain: cluster.local\n# their change\n"


# -- the existing provider: only with --allow-mesh-wide; down puts it back --------------------------------


def _existing(tmp_path: Path, allow: bool, cluster: FakeCluster) -> ExistingProvider:
    config = build_config(provider="existing", contexts=["east", "west"], allow_mesh_wide=allow)
    provider = ExistingProvider(config, load_topology("multi-primary"), api_factory=lambda ctx: cluster)
    provider.run_dir = tmp_path
    RunState(tmp_path).update(ready=True, namespaces=[], objects=[])
    return provider


def test_existing_refuses_mesh_config_without_allow_mesh_wide(tmp_path: Path) -> None:
    cluster = FakeCluster()
    with pytest.raises(UsageError, match="rerun with --allow-mesh-wide"):
        _existing(tmp_path, False, cluster).mesh_config({"trustDomainAliases": ["td1"]}, ["cluster1"])
    assert not cluster.patches


def test_existing_changes_each_control_plane_and_down_restores(tmp_path: Path) -> None:
    cluster = FakeCluster()
    provider = _existing(tmp_path, True, cluster)
    undo = provider.mesh_config({"trustDomainAliases": ["td1"]}, ["cluster1", "cluster2"])
    assert set(undo) == {"cluster1", "cluster2"}
    assert yaml.safe_load(cluster.data["mesh"])["trustDomainAliases"] == ["td1"]
    provider.restore_mesh_configs()
    assert cluster.data["mesh"] == USER_MESH


def test_istiods_validation_runs_before_anything_is_written(tmp_path: Path) -> None:
    cluster = FakeCluster()
    with pytest.raises(UsageError, match="trust domain 'TD_1' is invalid"):
        _existing(tmp_path, True, cluster).mesh_config({"trustDomainAliases": ["TD_1"]}, ["cluster1"])
    assert not cluster.patches


# -- the two KubeAPI calls, built by the real client -----------------------------------------------------------


@pytest.fixture
def config_map_server(tmp_path: Path) -> Iterator[tuple[KubeAPI, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            seen.append({"method": self.command, "path": self.path, "type": self.headers.get("Content-Type"),
                         "body": json.loads(body) if body else None})
            if self.path.startswith("/api/v1/namespaces/istio-system/configmaps/istio"):
                payload: Any = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {
                    "name": "istio", "namespace": "istio-system", "resourceVersion": "42"}, "data": {"mesh": USER_MESH}}
                status = 200
            else:
                payload, status = {"kind": "Status", "code": 404, "message": "not found"}, 404
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = _answer  # the http.server API

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "fake", "user": {"token": "t"}}],
        "contexts": [{"name": name, "context": {"cluster": "fake", "user": "fake"}} for name in ("fake", "kind-c1")],
    }))
    try:
        yield KubeAPI("fake", kubeconfig), seen
    finally:
        server.shutdown()
        server.server_close()


def test_config_map_read_and_conditional_merge_patch(config_map_server: tuple[KubeAPI, list[dict[str, Any]]]) -> None:
    api, seen = config_map_server
    assert api.config_map("istio-system", "istio") == ({"mesh": USER_MESH}, "42")
    assert api.config_map("istio-system", "absent") is None
    api.patch_config_map("istio-system", "istio", {"mesh": "a: 1\n"}, "42")
    patch = seen[-1]
    assert patch["method"] == "PATCH"
    assert patch["path"].startswith("/api/v1/namespaces/istio-system/configmaps/istio?")
    assert "fieldManager=meshconf" in patch["path"]
    # a JSON merge patch (RFC 7386) carrying the resourceVersion: the API server refuses it (409) if changed
    assert patch["type"] == "application/merge-patch+json"
    assert patch["body"] == {"metadata": {"resourceVersion": "42"}, "data": {"mesh": "a: 1\n"}}


def test_kind_down_restores_the_mesh_config_of_reused_clusters(
        config_map_server: tuple[KubeAPI, list[dict[str, Any]]], tmp_path: Path) -> None:
    """--reuse: the clusters outlive the run, so ``meshconf down`` puts back the MeshConfig a crashed run left
    (through the run's own kubeconfig, context kind-<cluster>); clusters the run created are simply deleted."""
    from conformance.providers.kind.provider import KindProvider

    _, seen = config_map_server
    state = RunState(tmp_path)
    (tmp_path / ".meshconf-run").write_text("test\n")
    state.update(created=[], reused=True, **{STATE_KEY: {"c1": {"configMap": "istio", "original": "trustDomain: a\n",
                                                                 "written": USER_MESH}}})

    class NoCommands:
        def run(self, argv: list[str], **_: Any) -> Any:
            raise AssertionError(f"no command expected, got {argv}")

    KindProvider.cleanup(tmp_path, NoCommands())  # type: ignore[arg-type]
    patch = next(r for r in seen if r["method"] == "PATCH")
    assert patch["body"] == {"metadata": {"resourceVersion": "42"}, "data": {"mesh": "trustDomain: a\n"}}
    assert not tmp_path.exists()  # the run's state is gone with it
