"""The control-plane and trust faults of the kind and existing providers: kind's exact commands (recorded
runner), istioctl remote-clusters and /debug/clusterz parsed, the existing provider's istiod restart / stop /
start through the API (a fake KubeAPI at the one seam), and the wait for re-signed identities."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from conformance.certs import MeshCA, RootStep
from conformance.errors import ProviderError, TimeoutExpired
from conformance.provider import RemoteClusterStatus
from conformance.providers import build_config
from conformance.providers.kind.faults import BROKEN_KEY, TOKENS_KEY
from conformance.providers.kind.provider import KindProvider
from conformance.providers.kind.runner import Recorder
from conformance.providers.kind.schemas import validate_manifest
from conformance.providers.kube.api import Pod
from conformance.providers.kube.lifecycle import (
    STOPPED_KEY,
    KubeControlPlanes,
    clusterz_rows,
    parse_remote_clusters,
    restore_control_planes,
    wait_for_identities,
)
from conformance.runstate import RunState, new_run_dir
from conformance.topology import load_topology

KUBECTL = "kubectl --kubeconfig {run}/kubeconfig --context kind-{cluster}"
SYNCED = ("NAME         SECRET                                    STATUS      ISTIOD\n"
          "cluster1                                               synced      istiod-5d8c7f-abcde\n"
          "cluster2     istio-system/istio-remote-secret-cluster2   synced      istiod-5d8c7f-abcde\n"
          "cluster3     istio-system/istio-remote-secret-cluster3   synced      istiod-5d8c7f-abcde\n")


def _provider(answers: dict[str, Any] | None = None) -> tuple[KindProvider, Recorder, Path]:
    run_dir = new_run_dir("kind")
    MeshCA.create(run_dir / "ca")
    RunState(run_dir).update(provider="kind", ready=True, created=["cluster1", "cluster2", "cluster3"],
                             istioctl="istioctl", kind_subnet="172.19.0.0/16", link_rtt_ms=25,
                             variables={f"CLUSTER{n}_CONTROL_PLANE_IP": f"172.19.0.{n + 1}" for n in (1, 2, 3)})
    recorder = Recorder(answers={r"remote-clusters": SYNCED, **(answers or {})})
    config = build_config(provider="kind", topology="three-cluster", istio_version="1.28.0")
    return KindProvider(config, load_topology("three-cluster"), run_dir, runner=recorder), recorder, run_dir


def _shown(run_dir: Path, cluster: str) -> str:
    return KUBECTL.format(run=run_dir, cluster=cluster)


def test_restart_stop_start_and_status_run_kubectl_and_istioctl() -> None:
    provider, recorder, run = _provider({r"get deployment/istiod": "1"})
    faults = provider.faults
    faults.restart_control_plane("cluster1")
    faults.set_control_plane("cluster3", False)
    assert RunState(run).read()[STOPPED_KEY] == {"cluster3": {"deployment": "istiod", "replicas": 1}}
    faults.set_control_plane("cluster3", True)
    assert RunState(run).read()[STOPPED_KEY] == {}
    status = faults.control_plane_status("cluster1")
    c1, c3 = _shown(run, "cluster1"), _shown(run, "cluster3")
    remote_clusters = f"istioctl remote-clusters --kubeconfig {run}/kubeconfig --context kind-cluster1"
    assert recorder.rendered() == [
        f"{c1} -n istio-system rollout restart deployment/istiod",
        f"{c1} -n istio-system rollout status deployment/istiod --timeout=300s",
        remote_clusters,
        f"{c3} -n istio-system scale deployment/istiod --replicas=0",
        f"{c3} -n istio-system wait --for=delete pod -l app=istiod --timeout=300s",
        f"{c3} -n istio-system scale deployment/istiod --replicas=1",
        f"{c3} -n istio-system rollout status deployment/istiod --timeout=300s",
        f"istioctl remote-clusters --kubeconfig {run}/kubeconfig --context kind-cluster3",
        f"{c1} -n istio-system get deployment/istiod -o 'jsonpath={{.status.readyReplicas}}'",
        remote_clusters,
    ]
    assert status.ready and status.status_of("cluster3") == "synced" and status.status_of("cluster2") == "synced"
    with pytest.raises(ProviderError, match="cluster2 is a remote cluster"):
        faults.restart_control_plane("cluster2")


def test_a_restart_waits_until_every_cluster_is_synced_again(monkeypatch: pytest.MonkeyPatch) -> None:
    syncing = SYNCED.replace("cluster3   synced", "cluster3   syncing").replace(
        "istio-remote-secret-cluster3   synced", "istio-remote-secret-cluster3   syncing")
    provider, recorder, _ = _provider({r"remote-clusters": [syncing, SYNCED]})
    waits: list[float] = []
    monkeypatch.setattr("conformance.providers.kube.runner.time.sleep", waits.append)  # the runner's poll
    provider.faults.restart_control_plane("cluster1")
    assert sum("remote-clusters" in c for c in recorder.rendered()) == 2
    assert waits == [5.0]


def test_rotation_makes_a_new_token_and_deletes_only_the_previous_rotations() -> None:
    provider, recorder, run = _provider()
    faults = provider.faults
    faults.rotate_remote_secret("cluster1", "cluster3")
    faults.rotate_remote_secret("cluster1", "cluster3")
    c1, c3 = _shown(run, "cluster1"), _shown(run, "cluster3")
    create = (f"istioctl create-remote-secret --name=cluster3 --secret-name={{}} --server=https://172.19.0.4:6443 "
              f"--kubeconfig {run}/kubeconfig --context kind-cluster3")
    first, second = (f"istio-reader-service-account-meshconf-cluster1-{n}" for n in (1, 2))
    assert recorder.rendered() == [
        f"{c3} apply -f {run}/faults/cluster3/{first}.yaml", create.format(first), f"{c1} apply -f -",
        f"{c3} apply -f {run}/faults/cluster3/{second}.yaml", create.format(second), f"{c1} apply -f -",
        f"{c3} -n istio-system delete secret {first} --ignore-not-found",  # the install's token is never deleted
    ]
    assert RunState(run).read()[TOKENS_KEY] == {"cluster1/cluster3": second}
    token = yaml.safe_load((run / "faults" / "cluster3" / f"{second}.yaml").read_text())
    validate_manifest(token)
    assert token["type"] == "kubernetes.io/service-account-token" and "data" not in token
    assert token["metadata"]["annotations"] == {"kubernetes.io/service-account.name": "istio-reader-service-account"}


def test_break_and_restore_write_the_secret_again_and_reset_restores_a_broken_one() -> None:
    provider, recorder, run = _provider()
    faults = provider.faults
    faults.break_remote_secret("cluster1", "cluster2")
    assert RunState(run).read()[BROKEN_KEY] == ["cluster1/cluster2"]
    faults.reset()  # a check that ended without restoring it
    assert RunState(run).read()[BROKEN_KEY] == []
    create = ("istioctl create-remote-secret --name=cluster2 --secret-name=istio-reader-service-account-istio-remote-"
              "secret-token --server={} --kubeconfig " + f"{run}/kubeconfig --context kind-cluster2")
    calls = [c for c in recorder.rendered() if "create-remote-secret" in c]
    assert calls == [create.format("https://255.255.255.255:6443"), create.format("https://172.19.0.3:6443")]
    piped = [i for i, c in enumerate(recorder.rendered()) if c == f"{_shown(run, 'cluster1')} apply -f -"]
    assert len(piped) == 2  # each secret goes from istioctl's stdout into kubectl's stdin, never to a file


def test_root_migration_replaces_cacerts_restarts_istiod_and_annotates_pods(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, recorder, run = _provider()
    waited: list[tuple[list[str], dict[str, bytes], bytes]] = []
    monkeypatch.setattr("conformance.providers.kind.faults.wait_for_identities",
                        lambda _mesh, namespaces, signers, bundle, _timeout: waited.append((namespaces, signers,
                                                                                            bundle)))
    roots = provider.faults.migrate_root(RootStep.COMBINED_ROOT, ["meshconf-x"])
    calls = recorder.rendered()
    for cluster in ("cluster1", "cluster2", "cluster3"):
        path = run / "faults" / "root-combined-root" / cluster / "cacerts.yaml"
        assert f"{_shown(run, cluster)} apply -f {path}" in calls
        assert (path.stat().st_mode & 0o777) == 0o600
        assert f"{_shown(run, cluster)} -n meshconf-x annotate pods --all meshconf.io/root-migration=combined-root " \
               "--overwrite" in calls
    restarts = [c for c in calls if "rollout restart" in c]
    assert restarts == [f"{_shown(run, c)} -n istio-system rollout restart deployment/istiod"
                        for c in ("cluster1", "cluster3")]
    namespaces, signers, bundle = waited[0]
    assert namespaces == ["meshconf-x", "meshconf-smoke"] and bundle == roots.bundle
    assert signers["cluster2"] == signers["cluster1"]  # a remote cluster's pods are signed by its primary's istiod
    assert bundle.count(b"BEGIN CERTIFICATE") == 2
    assert "PRIVATE KEY" not in "\n".join(calls)


@pytest.mark.parametrize(("text", "expected"), [
    (SYNCED, {"cluster1": ("", "synced"), "cluster2": ("istio-system/istio-remote-secret-cluster2", "synced"),
              "cluster3": ("istio-system/istio-remote-secret-cluster3", "synced")}),
    # two istiods: a cluster is synced only if both say so
    ("NAME      SECRET                       STATUS     ISTIOD\n"
     "cluster1                               synced     istiod-a\n"
     "cluster3  istio-system/istio-rs-c3     synced     istiod-a\n"
     "cluster1                               synced     istiod-b\n"
     "cluster3  istio-system/istio-rs-c3     timeout    istiod-b\n",
     {"cluster1": ("", "synced"), "cluster3": ("istio-system/istio-rs-c3", "timeout")}),
])
def test_remote_clusters_table(text: str, expected: dict[str, tuple[str, str]]) -> None:
    rows = parse_remote_clusters(text, "cluster1")
    assert {r.cluster: (r.secret, r.status) for r in rows} == expected


def test_remote_clusters_without_a_table_is_an_error() -> None:
    with pytest.raises(ProviderError, match="printed no NAME SECRET STATUS table"):
        parse_remote_clusters("Error: no running Istio pods", "cluster1")


def test_clusterz_rows_merge_every_istiod() -> None:
    one = json.dumps([{"id": "cluster1", "secretName": "", "syncStatus": "synced"},
                      {"id": "cluster2", "secretName": "istio-system/istio-remote-secret-cluster2",
                       "syncStatus": "synced"}])
    two = json.dumps([{"id": "cluster1", "secretName": "", "syncStatus": "synced"},
                      {"id": "cluster2", "secretName": "istio-system/istio-remote-secret-cluster2",
                       "syncStatus": "syncing"}])
    assert clusterz_rows([one, two]) == (RemoteClusterStatus("cluster1", "", "synced"),
                                         RemoteClusterStatus("cluster2", "istio-system/istio-remote-secret-cluster2",
                                                             "syncing"))


class FakeAPI:
    """The KubeAPI calls the control-plane faults make, against an in-memory istiod Deployment."""

    def __init__(self, replicas: int = 2) -> None:
        self.context = "staging"
        self.replicas = replicas
        self.calls: list[str] = []
        self.clusterz = json.dumps([{"id": "c1", "secretName": "", "syncStatus": "synced"}])

    def deployment(self, namespace: str, name: str) -> Any:
        return SimpleNamespace(spec=SimpleNamespace(replicas=self.replicas),
                               status=SimpleNamespace(ready_replicas=self.replicas))

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.calls.append(f"scale {namespace}/{name} {replicas}")
        self.replicas = replicas

    def restart_deployment(self, namespace: str, name: str) -> None:
        self.calls.append(f"restart {namespace}/{name}")

    def wait_rollout(self, namespace: str, name: str, timeout_s: float) -> list[Pod]:
        self.calls.append(f"rollout {namespace}/{name}")
        return []

    def pods(self, namespace: str, selector: dict[str, str]) -> list[Pod]:
        return [Pod(f"istiod-{i}", "10.0.0.1", "n", True, selector) for i in range(self.replicas)]

    def exec(self, namespace: str, pod: str, container: str, command: list[str]) -> str:
        self.calls.append(f"exec {pod}/{container} {' '.join(command)}")
        return self.clusterz


def _existing(api: FakeAPI, run_dir: Path | None, revision: str | None = None) -> Any:
    topology = load_topology("multi-primary")
    return SimpleNamespace(topology=topology, run_dir=run_dir, config=build_config(),
                           api=lambda _cluster: api, revision_for=lambda _cluster: revision)


def test_existing_control_planes_through_the_api_and_down_restores_a_stopped_istiod() -> None:
    api, run_dir = FakeAPI(replicas=2), new_run_dir("existing")
    planes = KubeControlPlanes(_existing(api, run_dir, revision="1-28-0"))
    planes.restart("cluster1")
    planes.set("cluster1", False)
    assert RunState(run_dir).read()[STOPPED_KEY] == {"cluster1": {"deployment": "istiod-1-28-0", "replicas": 2}}
    restore_control_planes({"cluster1": api}, RunState(run_dir))  # a crashed run: down() brings it back
    assert api.replicas == 2 and RunState(run_dir).read()[STOPPED_KEY] == {}
    status = planes.status("cluster1")
    assert status.ready and status.remote_clusters == (RemoteClusterStatus("c1", "", "synced"),)
    assert api.calls[:4] == ["restart istio-system/istiod-1-28-0", "rollout istio-system/istiod-1-28-0",
                             "scale istio-system/istiod-1-28-0 0", "scale istio-system/istiod-1-28-0 2"]
    assert api.calls[-1] == "exec istiod-1/discovery pilot-discovery request GET /debug/clusterz"


def _identity_dump(chain: list[bytes], bundle: bytes) -> str:
    import base64

    return json.dumps({"configs": [{"dynamic_active_secrets": [
        {"name": "default", "secret": {"tls_certificate": {"certificate_chain": {
            "inline_bytes": base64.b64encode(b"".join(chain)).decode()}}}},
        {"name": "ROOTCA", "secret": {"validation_context": {"trusted_ca": {
            "inline_bytes": base64.b64encode(bundle).decode()}}}}]}]})


def test_waiting_for_identities_ends_when_every_proxy_serves_the_new_chain(tmp_path: Path) -> None:
    ca = MeshCA.create(tmp_path)
    old = ca.intermediate("cluster1").issue("cluster.local", "ns", "sa")
    ca.migrate(RootStep.COMBINED_ROOT)
    ca.migrate(RootStep.NEW_INTERMEDIATES)
    new = ca.intermediate("cluster1").issue("cluster.local", "ns", "sa")
    dumps = [_identity_dump([old.chain_pem], ca.trust_bundle), _identity_dump([new.chain_pem], ca.trust_bundle)]
    api = SimpleNamespace(pods=lambda ns, sel: [Pod("p", "1", "n", True, {})] if ns == "ns" else [],
                          exec=lambda *_: dumps[0] if len(slept) == 0 else dumps[1])
    mesh = SimpleNamespace(topology=load_topology("multi-primary"), api=lambda _c: api)
    slept: list[float] = []
    signers = {"cluster1": ca.intermediate("cluster1").cert_pem, "cluster2": ca.intermediate("cluster1").cert_pem}
    wait_for_identities(mesh, ["ns"], signers, ca.trust_bundle, 60, sleep=slept.append)  # type: ignore[arg-type]
    assert len(slept) == 1
    stuck: Callable[..., str] = lambda *_: dumps[0]  # noqa: E731
    api.exec = stuck
    with pytest.raises(TimeoutExpired, match="still serve the previous certificate"):
        wait_for_identities(mesh, ["ns"], signers, ca.trust_bundle, 0, sleep=slept.append)  # type: ignore[arg-type]


def test_every_fault_of_a_provider_that_cannot_says_why() -> None:
    from conformance.providers.kube.faults import WorkloadFaults

    faults = WorkloadFaults(_existing(FakeAPI(), None))  # type: ignore[arg-type]
    for call, match in ((lambda: faults.restart_control_plane("c"), "no control-plane faults"),
                        (lambda: faults.rotate_remote_secret("c", "d"), "not meshconf's"),
                        (lambda: faults.migrate_root(RootStep.COMBINED_ROOT, []), "not meshconf's")):
        with pytest.raises(ProviderError, match=match):
            call()
