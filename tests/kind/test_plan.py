"""The kind plan: Istio's install order, remote secrets in every direction, nothing secret in the output."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from conformance.certs import MeshCA
from conformance.probe import probe_source
from conformance.providers import build_config
from conformance.providers.kind.plan import PlanContext, build_plan
from conformance.providers.kind.provider import KindProvider
from conformance.providers.kind.steps import Step, Until, render_plan
from conformance.topology import load_topology, parse_topology

from .conftest import TOPOLOGIES


def _position(steps: list[Step], key: str) -> int:
    return next(i for i, s in enumerate(steps) if s.key == key)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_order_invariants(topology: str, plan_for: Callable[[str], list[Step]]) -> None:
    steps = plan_for(topology)
    assert [s.number for s in steps] == list(range(1, len(steps) + 1))
    pos = {s.key: i for i, s in enumerate(steps)}
    assert pos["clusters"] < pos["ca"] < pos["install"]
    assert pos["east-west"] < pos["remote-secrets"] and pos["remotes"] < pos["remote-secrets"]
    assert pos["remote-secrets"] < pos["wait"] < pos["links"]
    assert pos["clusters"] < pos["kernel"] < pos["images"] < pos["load-balancers"]  # fail early, pull before use
    assert steps[-1].key == "probes"
    # the expose Gateway is applied in the east-west step, before any remote secret
    if topology != "multi-primary":
        assert any("expose.yaml" in m.path for m in steps[pos["east-west"]].manifests)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_remote_secrets_in_every_direction(topology: str, plan_for: Callable[[str], list[Step]]) -> None:
    mesh = load_topology(topology)
    step = next(s for s in plan_for(topology) if s.key == "remote-secrets")
    pairs = set()
    for command in step.commands:
        assert command.pipe_to is not None and command.pipe_to[-3:] == ("apply", "-f", "-")
        source = command.argv[command.argv.index("--context") + 1].removeprefix("kind-")
        reader = command.pipe_to[command.pipe_to.index("--context") + 1].removeprefix("kind-")
        assert f"--name={source}" in command.argv
        pairs.add((reader, source))
    expected = {(p.name, c.name) for p in mesh.primaries for c in mesh.clusters if c.name != p.name}
    assert pairs == expected and pairs


def test_routes_only_between_clusters_on_one_network(plan_for: Callable[[str], list[Step]]) -> None:
    assert next(s for s in plan_for("multi-network") if s.key == "routes").commands == ()
    routes = next(s for s in plan_for("multi-primary") if s.key == "routes").commands
    rendered = {c.render() for c in routes}
    assert ("docker exec cluster1-control-plane ip route add 10.20.0.0/16 via ${CLUSTER2_CONTROL_PLANE_IP}"
            in rendered)
    assert ("docker exec cluster2-control-plane ip route add 10.255.10.0/24 via ${CLUSTER1_CONTROL_PLANE_IP}"
            in rendered)
    assert len(rendered) == 4


def _step(steps: list[Step], key: str) -> Step:
    return next(s for s in steps if s.key == key)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_links_delay_half_the_rtt_towards_everything_of_the_other_cluster(
        topology: str, plan_for: Callable[[str], list[Step]]) -> None:
    """Item 1 and 2: the topology's RTT is applied after the wait, half on each side, and matches the other
    cluster's nodes, pod subnet, service subnet and MetalLB slice (pod traffic on one network goes to pod IPs,
    replies to node IPs after kindnet's masquerade)."""
    steps = plan_for(topology)
    keys = [s.key for s in steps]
    assert keys.index("wait") < keys.index("links") < keys.index("probes")
    rendered = [c.render() for c in _step(steps, "links").commands]
    mesh = load_topology(topology)
    assert mesh.link_rtt_ms == 25
    for here, there, there_octet, pool in (("cluster1", "CLUSTER2", 20, "172.18.255.32/27"),
                                           ("cluster2", "CLUSTER1", 10, "172.18.255.0/27")):
        node = f"docker exec {here}-control-plane"
        assert f"{node} tc qdisc add dev eth0 parent 1:4 handle 40: netem delay 12.5ms limit 10000" in rendered
        for target in (f"${{{there}_CONTROL_PLANE_IP}}/32", f"10.{there_octet}.0.0/16", f"10.255.{there_octet}.0/24",
                       pool):
            assert (f"{node} tc filter add dev eth0 parent 1:0 protocol ip prio 1 u32 match ip dst {target} "
                    "flowid 1:4") in rendered


def test_worker_nodes_get_routes_and_link_delays(mesh_ca: MeshCA) -> None:
    """Item 12: a cluster with a second zone has a worker node; routes and link delays cover it too."""
    topology = parse_topology({"name": "zones", "linkRttMs": 40, "clusters": [
        {"name": "cluster1", "network": "network1", "region": "region1", "zones": ["zone1", "zone2"]},
        {"name": "cluster2", "network": "network1", "region": "region2", "zones": ["zone3"]}]})
    steps = build_plan(PlanContext(topology, "1.28.0", mesh_ca, probe_source().read_text()))
    addresses = [c.render() for c in _step(steps, "addresses").commands]
    assert addresses[0] == "kind get nodes --name cluster1"
    assert _step(steps, "addresses").commands[0].until == Until("nodes", ("cluster1-control-plane", "cluster1-worker"))
    assert "docker inspect -f '{{.NetworkSettings.Networks.kind.IPAddress}}' cluster1-worker" in addresses
    routes = {c.render() for c in _step(steps, "routes").commands}
    assert "docker exec cluster1-worker ip route add 10.20.0.0/16 via ${CLUSTER2_CONTROL_PLANE_IP}" in routes
    links = [c.render() for c in _step(steps, "links").commands]
    assert "docker exec cluster1-worker tc qdisc add dev eth0 parent 1:4 handle 40: netem delay 20ms limit 10000" \
        in links
    # cluster2 delays traffic to both of cluster1's nodes (replies to a masqueraded worker go to its address)
    assert ("docker exec cluster2-control-plane tc filter add dev eth0 parent 1:0 protocol ip prio 1 u32 match ip "
            "dst ${CLUSTER1_WORKER_IP}/32 flowid 1:4") in links


@pytest.mark.parametrize("hub", [None, "mirror.gcr.io"])
def test_every_image_the_clusters_run_is_preloaded(hub: str | None, mesh_ca: MeshCA) -> None:
    """Item 6: what the IstioOperators (hub/tag) and probe Deployments name is pulled once and loaded into every
    cluster; --image-hub swaps Docker Hub for a mirror everywhere."""
    ctx = PlanContext(load_topology("multi-network"), "1.28.0", mesh_ca, probe_source().read_text(), image_hub=hub)
    steps = build_plan(ctx)
    images = _step(steps, "images").commands
    loads = {c.argv[-1]: set(c.argv[3:-2]) for c in images if c.argv[:3] == ("kind", "load", "docker-image")}
    assert set(loads) == {"cluster1", "cluster2"}
    pulled = {c.argv[2] for c in images if c.argv[:2] == ("docker", "pull")}
    built = {c.argv[3] for c in images if c.argv[:2] == ("docker", "build")}
    assert loads["cluster1"] == loads["cluster2"] == pulled | built
    assert all(c.skip_if == ("docker", "image", "inspect", c.argv[2 if c.argv[1] == "pull" else 3])
               for c in images if c.argv[0] == "docker")  # pulled once: never when the host has it
    istio_hub = f"{hub}/istio" if hub else "docker.io/istio"
    assert {f"{istio_hub}/pilot:1.28.0", f"{istio_hub}/proxyv2:1.28.0"} <= pulled
    used = set()
    for manifest in (m for s in steps for m in s.manifests):
        for doc in manifest.docs:
            if doc["kind"] == "IstioOperator":
                assert (doc["spec"]["hub"], doc["spec"]["tag"]) == (istio_hub, "1.28.0")
            if doc["kind"] == "Deployment":
                used |= {c["image"] for c in doc["spec"]["template"]["spec"]["containers"]}
    assert used == {f"{hub}/library/python:3.12-alpine" if hub else "python:3.12-alpine"} and used <= pulled
    if hub:
        assert any("LOCUST_IMAGE=mirror.gcr.io/locustio/locust:2.47.0" in c.argv for c in images)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_remote_secrets_name_the_api_server_on_the_kind_network(topology: str,
                                                                plan_for: Callable[[str], list[Step]]) -> None:
    """Item 4: the run's kubeconfig stays on 127.0.0.1; the secret carries the address other clusters reach."""
    for command in _step(plan_for(topology), "remote-secrets").commands:
        name = next(a for a in command.argv if a.startswith("--name=")).removeprefix("--name=")
        assert f"--server=https://${{{name.upper()}_CONTROL_PLANE_IP}}:6443" in command.argv
    assert not any(c.argv[:3] == ("kubectl", "config", "set-cluster") for s in plan_for(topology) for c in s.commands)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_the_sync_wait_names_every_cluster(topology: str, plan_for: Callable[[str], list[Step]]) -> None:
    """Item 3."""
    polls = [c for c in _step(plan_for(topology), "wait").commands if c.until is not None]
    names = load_topology(topology).cluster_names
    assert polls and all(c.until == Until("synced", names) for c in polls)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_printed_plan_has_no_key_material(topology: str, plan_for: Callable[[str], list[Step]],
                                          mesh_ca: MeshCA) -> None:
    text = render_plan(["header"], plan_for(topology))
    assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text
    for cluster in load_topology(topology).cluster_names:
        files = mesh_ca.intermediate(cluster).plugin_files()
        key_b64 = base64.b64encode(files["ca-key.pem"]).decode()
        assert key_b64 not in text and key_b64[:40] not in text
        assert f"ca-key.pem: '<redacted: {len(files['ca-key.pem'])} bytes>'" in text
    assert "probe.py: <workloads/probe/probe.py," in text


def test_provider_plan_text_for_multi_network() -> None:
    config = build_config(provider="kind", topology="multi-network", istio_version="1.28.0")
    text = KindProvider.plan(config, load_topology("multi-network"))
    assert text.startswith("meshconf plan: provider kind, topology multi-network, Istio 1.28.0")
    assert "$ kind create cluster --name cluster1 --config " in text
    assert "kind-configs/multi-network/cluster1.yaml" in text
    assert "Step 14. Deploy a probe workload in every cluster" in text
    assert "PRIVATE KEY" not in text


def test_every_step_has_a_verification_row_and_the_readme_shows_the_same_table(
        plan_for: Callable[[str], list[Step]], mesh_ca: MeshCA) -> None:
    """`meshconf plan` prints "verified here / not verified here" under every step from one table; the README's
    "What is verified here" section lists exactly those rows."""
    from pathlib import Path

    from conformance.providers.kind.lifecycle import fault_steps
    from conformance.providers.kind.plan import teardown
    from conformance.providers.kind.upgrade import upgrade_steps
    from conformance.providers.kind.verification import VERIFICATION

    ctx = PlanContext(load_topology("multi-network"), "1.27.3", mesh_ca, probe_source().read_text())
    keys = {s.key for t in TOPOLOGIES for s in plan_for(t)} | {teardown(ctx).key}
    keys |= {s.key for s in upgrade_steps(ctx, "1.28.0", "istioctl", 1)}
    keys |= {s.key for s in fault_steps(ctx, 300)}
    assert keys == set(VERIFICATION)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### What is verified here")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == [f"| `{key}` | {done} | {not_done} |" for key, (done, not_done) in VERIFICATION.items()]
