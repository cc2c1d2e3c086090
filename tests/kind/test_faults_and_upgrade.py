"""Link faults inside the node containers (recorded), the canary upgrade's steps, and `meshconf down`."""

from __future__ import annotations

from pathlib import Path

from conformance.certs import MeshCA
from conformance.probe import probe_source
from conformance.providers import build_config
from conformance.providers.kind.plan import PlanContext
from conformance.providers.kind.provider import KindProvider
from conformance.providers.kind.runner import Recorder
from conformance.providers.kind.schemas import validate_manifest
from conformance.providers.kind.upgrade import upgrade_steps
from conformance.runstate import RunState, new_run_dir
from conformance.topology import load_topology
from tests.conftest import run_meshconf


def _recorded_provider(answers: dict[str, str] | None = None) -> tuple[KindProvider, Recorder]:
    run_dir = new_run_dir("kind")
    RunState(run_dir).update(provider="kind", ready=True, created=["cluster1", "cluster2"],
                             kind_subnet="172.19.0.0/16", link_rtt_ms=25,
                             variables={"CLUSTER1_CONTROL_PLANE_IP": "172.19.0.2",
                                        "CLUSTER2_CONTROL_PLANE_IP": "172.19.0.3",
                                        "CLUSTER2_WORKER_IP": "172.19.0.4"})
    recorder = Recorder(answers={r"^kind get nodes --name cluster1": "cluster1-control-plane\n",
                                 r"^kind get nodes --name cluster2": "cluster2-control-plane\ncluster2-worker\n",
                                 **(answers or {})})
    config = build_config(provider="kind", topology="multi-network", istio_version="1.28.0")
    return KindProvider(config, load_topology("multi-network"), run_dir, runner=recorder), recorder


def test_latency_changes_the_links_netem_on_every_node_and_reset_restores_the_topologys_rtt() -> None:
    """Item 1 and 12: set_link changes the qdiscs the links step made, on every node ``kind get nodes`` lists
    (workers too); reset() puts the topology's 25 ms back, not 0."""
    provider, recorder = _recorded_provider()
    provider.faults.set_link("cluster1", "cluster2", rtt_ms=100)
    provider.faults.reset()
    calls = [c for c in recorder.rendered() if c.startswith("docker exec")]
    change = "tc qdisc change dev eth0 parent 1:4 handle 40: netem delay {}ms limit 10000"
    assert calls == [
        f"docker exec cluster1-control-plane {change.format(50)}",
        f"docker exec cluster2-control-plane {change.format(50)}",
        f"docker exec cluster2-worker {change.format(50)}",
        f"docker exec cluster1-control-plane {change.format(12.5)}",
        f"docker exec cluster2-control-plane {change.format(12.5)}",
        f"docker exec cluster2-worker {change.format(12.5)}",
    ]


def test_partition_drops_everything_between_the_clusters_both_ways() -> None:
    """Item 2: nodes, pod and service subnets, and load balancers of the other cluster, on every node."""
    provider, recorder = _recorded_provider()
    provider.faults.set_link("cluster1", "cluster2", cut=True)
    provider.faults.reset()
    calls = recorder.rendered()
    drops = [c for c in calls if " -I " in c]
    rule = "iptables -I {} -d {} -m comment --comment meshconf-partition -j DROP"
    for target in ("172.19.0.3/32", "172.19.0.4/32", "10.20.0.0/16", "10.255.20.0/24", "172.19.255.32/27"):
        assert f"docker exec cluster1-control-plane {rule.format('FORWARD', target)}" in drops
    for node in ("cluster2-control-plane", "cluster2-worker"):
        for target in ("172.19.0.2/32", "10.10.0.0/16", "10.255.10.0/24", "172.19.255.0/27"):
            assert f"docker exec {node} {rule.format('OUTPUT', target)}" in drops
    assert len(drops) == 2 * (5 + 2 * 4) == len([c for c in calls if " -D " in c])  # reset heals every rule


def test_meshconf_down_deletes_only_the_clusters_a_run_created() -> None:
    provider, _ = _recorded_provider()
    assert provider.run_dir is not None
    recorder = Recorder()
    KindProvider.cleanup(provider.run_dir, recorder)
    kubeconfig = provider.run_dir / "kubeconfig"
    assert recorder.rendered() == [f"kind delete cluster --name cluster1 --kubeconfig {kubeconfig}",
                                   f"kind delete cluster --name cluster2 --kubeconfig {kubeconfig}",
                                   "kind get clusters"]
    assert not provider.run_dir.exists()


def test_meshconf_down_knows_a_kind_run_directory(tmp_path: Path) -> None:
    run_dir = new_run_dir("kind")
    RunState(run_dir).update(provider="kind", created=[])  # nothing created: nothing to delete
    done = run_meshconf("down", str(run_dir))
    assert done.returncode == 0, done.stderr
    assert not run_dir.exists()


def test_canary_steps_validate_and_keep_their_order(mesh_ca: MeshCA) -> None:
    ctx = PlanContext(load_topology("multi-network"), "1.27.3", mesh_ca, probe_source().read_text())
    steps = upgrade_steps(ctx, "1.28.0", "istioctl-1.28.0", 12)
    assert [s.key for s in steps] == ["preload", "canary", "gateways", "tag", "restart"]
    assert [s.number for s in steps] == [12, 13, 14, 15, 16]
    for step in steps:
        for manifest in step.manifests:
            for doc in manifest.docs:
                assert validate_manifest(doc) == "install"
                assert (doc["spec"]["revision"], doc["spec"]["tag"]) == ("1-28-0", "1.28.0")
    # item 6: the target version's images are pulled once and loaded into every cluster before its install
    preload = [c.render() for c in steps[0].commands]
    assert preload == [
        "docker pull docker.io/istio/pilot:1.28.0", "docker pull docker.io/istio/proxyv2:1.28.0",
        "kind load docker-image docker.io/istio/pilot:1.28.0 docker.io/istio/proxyv2:1.28.0 --name cluster1",
        "kind load docker-image docker.io/istio/pilot:1.28.0 docker.io/istio/proxyv2:1.28.0 --name cluster2"]
