"""Link faults inside the node containers (recorded), the canary upgrade's manifests, and `meshconf down`."""

from __future__ import annotations

from pathlib import Path

from conformance.certs import MeshCA
from conformance.config import RunConfig
from conformance.probe import probe_source
from conformance.providers.kind.plan import PlanContext
from conformance.providers.kind.provider import KindProvider
from conformance.providers.kind.runner import Recorder
from conformance.providers.kind.schemas import validate_manifest
from conformance.providers.kind.upgrade import upgrade_steps
from conformance.runstate import RunState, new_run_dir
from conformance.topology import load_topology
from tests.conftest import run_meshconf


def _recorded_provider() -> tuple[KindProvider, Recorder]:
    run_dir = new_run_dir("kind")
    RunState(run_dir).update(provider="kind", ready=True, created=["cluster1", "cluster2"],
                                 kind_subnet="172.19.0.0/16",
                                 variables={"CLUSTER1_API_IP": "172.19.0.2", "CLUSTER2_API_IP": "172.19.0.3"})
    recorder = Recorder()
    config = RunConfig.build(provider="kind", topology="multi-network", istio_version="1.28.0")
    return KindProvider(config, load_topology("multi-network"), run_dir, runner=recorder), recorder


def test_latency_and_partition_touch_only_traffic_to_the_other_cluster() -> None:
    provider, recorder = _recorded_provider()
    provider.faults.add_latency("cluster1", "cluster2", 25)
    provider.faults.remove_latency("cluster1")
    provider.faults.partition("cluster1", "cluster2")
    provider.faults.heal("cluster1", "cluster2")
    calls = recorder.rendered()
    node = "docker exec cluster1-control-plane"
    assert calls[:5] == [
        f"{node} tc qdisc add dev eth0 root handle 1: prio",
        f"{node} tc qdisc add dev eth0 parent 1:3 handle 30: netem delay 25ms",
        f"{node} tc filter add dev eth0 protocol ip parent 1:0 prio 3 u32 match ip dst 172.19.0.3/32 flowid 1:3",
        f"{node} tc filter add dev eth0 protocol ip parent 1:0 prio 3 u32 match ip dst 172.19.255.32/27 flowid 1:3",
        f"{node} tc qdisc del dev eth0 root",
    ]
    drops = [c for c in calls if " -I " in c]
    assert f"{node} iptables -I FORWARD -d 172.19.0.3/32 -m comment --comment meshconf-partition -j DROP" in drops
    assert ("docker exec cluster2-control-plane iptables -I OUTPUT -d 172.19.255.0/27 -m comment --comment "
            "meshconf-partition -j DROP") in drops
    assert len(drops) == 8 and len([c for c in calls if " -D " in c]) == 8


def test_meshconf_down_deletes_only_the_clusters_a_run_created() -> None:
    provider, _ = _recorded_provider()
    assert provider.run_dir is not None
    recorder = Recorder()
    KindProvider.cleanup(provider.run_dir, recorder)
    assert recorder.rendered() == ["kind delete cluster --name cluster1", "kind delete cluster --name cluster2"]
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
    assert [s.key for s in steps] == ["canary", "gateways", "tag", "restart"]
    assert [s.number for s in steps] == [12, 13, 14, 15]
    for step in steps:
        for manifest in step.manifests:
            for doc in manifest.docs:
                assert validate_manifest(doc) == "install"
                assert doc["spec"]["revision"] == "1-28-0"
