"""The k3s plan: clusters in Docker first, then Istio's install steps (the kube layer's, as kind's), routes only
between clusters of one network, every address known before anything runs, nothing secret in the output."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import UsageError
from conformance.provider import Feature
from conformance.providers import build_config, provider_offers
from conformance.providers.k3s.addresses import cluster_addresses, free_subnet
from conformance.providers.k3s.plan import API_STEPS, EAST_WEST_STATUS_PORT
from conformance.providers.k3s.provider import K3sProvider
from conformance.providers.k3s.verification import VERIFICATION
from conformance.providers.kind.verification import VERIFICATION as KIND_VERIFICATION
from conformance.topology import load_topology
from tests.conftest import run_meshconf

from .conftest import TOPOLOGIES

REPO = Path(__file__).resolve().parents[2]


def _step(steps: list[Any], key: str) -> Any:
    return next(s for s in steps if s.key == key)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_clusters_come_up_before_istio_in_istios_order(topology: str, plan_for: Callable[[str], Any]) -> None:
    steps = plan_for(topology)
    keys = [s.key for s in steps]
    assert [s.number for s in steps] == list(range(1, len(steps) + 1))
    assert keys == ["images", "network", "clusters", "kubeconfig", "nodes", "preload", "routes", "ca", "install",
                    "east-west", "remotes", "remote-secrets", "wait", "probes"]
    # the Docker API steps come first and nothing after them is an API call: up() runs the rest as commands
    assert {s.key for s in steps if any(c.api for c in s.commands)} == API_STEPS
    assert all(c.api for s in steps if s.key in API_STEPS for c in s.commands)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_remote_secrets_in_every_direction_at_the_server_address(topology: str,
                                                                 plan_for: Callable[[str], Any]) -> None:
    mesh = load_topology(topology)
    servers = {name: a.server for name, a in cluster_addresses(mesh).items()}
    pairs = set()
    for command in _step(plan_for(topology), "remote-secrets").commands:
        source = command.argv[command.argv.index("--context") + 1].removeprefix("k3s-")
        reader = command.pipe_to[command.pipe_to.index("--context") + 1].removeprefix("k3s-")
        assert f"--server=https://{servers[source]}:6443" in command.argv
        assert command.pipe_to[-3:] == ("apply", "-f", "-")
        pairs.add((reader, source))
    assert pairs == {(p.name, c.name) for p in mesh.primaries for c in mesh.clusters if c.name != p.name}


def test_routes_only_between_clusters_on_one_network_from_every_node(plan_for: Callable[[str], Any]) -> None:
    assert _step(plan_for("multi-network"), "routes").commands == ()
    routes = {c.render() for c in _step(plan_for("multi-primary"), "routes").commands}
    assert routes == {
        "docker exec meshconf-cluster1 ip route add 10.20.0.0/16 via 172.30.0.20",
        "docker exec meshconf-cluster1 ip route add 10.255.20.0/24 via 172.30.0.20",
        "docker exec meshconf-cluster2 ip route add 10.10.0.0/16 via 172.30.0.10",
        "docker exec meshconf-cluster2 ip route add 10.255.10.0/24 via 172.30.0.10",
    }
    two_zones = {c.render() for c in _step(plan_for("two-zones"), "routes").commands}
    assert "docker exec meshconf-east-agent1 ip route add 10.20.0.0/16 via 172.30.0.20" in two_zones
    assert "docker exec meshconf-west ip route add 10.10.0.0/16 via 172.30.0.10" in two_zones
    assert len(two_zones) == 6  # east's two nodes and west's one, two subnets each


def test_a_further_zone_is_an_agent_that_joins_its_server(plan_for: Callable[[str], Any]) -> None:
    started = [c.render() for c in _step(plan_for("two-zones"), "clusters").commands]
    assert len(started) == 3
    agent = next(line for line in started if "--name meshconf-east-agent1 " in line)
    assert " --ip 172.30.0.11 " in agent and " -e K3S_URL=https://172.30.0.10:6443 " in agent
    assert " -e K3S_TOKEN=${K3S_TOKEN} " in agent
    assert agent.split("rancher/k3s:v1.34.11-k3s1 ")[1] == (
        "agent --node-ip=172.30.0.11 --node-name=meshconf-east-agent1 "
        "--node-label=topology.kubernetes.io/region=r1 --node-label=topology.kubernetes.io/zone=z2")
    imported = [c.render() for c in _step(plan_for("two-zones"), "preload").commands]
    assert sum("meshconf-east-agent1 k3s ctr images import" in line for line in imported) == 4


def test_servers_keep_servicelb_and_the_subnets_kind_uses(plan_for: Callable[[str], Any]) -> None:
    server = next(c for c in _step(plan_for("multi-network"), "clusters").commands if c.cluster == "cluster2")
    args = server.argv[server.argv.index("rancher/k3s:v1.34.11-k3s1") + 1:]
    assert args[0] == "server" and "--disable=traefik" in args
    assert not any("servicelb" in a for a in args)  # k3s's ServiceLB gives the gateways their addresses
    assert {"--cluster-cidr=10.20.0.0/16", "--service-cidr=10.255.20.0/24", "--cluster-dns=10.255.20.10",
            "--tls-san=172.30.0.20", "--node-label=topology.kubernetes.io/zone=zone2"} <= set(args)
    kind_config = (REPO / "kind-configs/multi-network/cluster2.yaml").read_text()
    assert "podSubnet: 10.20.0.0/16" in kind_config and "serviceSubnet: 10.255.20.0/24" in kind_config


def test_the_east_west_gateway_leaves_15021_on_the_node_to_the_ingress_gateway(
        plan_for: Callable[[str], Any]) -> None:
    docs = [d for m in _step(plan_for("multi-network"), "east-west").manifests for d in m.docs
            if d["kind"] == "IstioOperator"]
    assert len(docs) == 2
    for doc in docs:
        ports = doc["spec"]["components"]["ingressGateways"][0]["k8s"]["service"]["ports"]
        assert ports[0] == {"name": "status-port", "port": EAST_WEST_STATUS_PORT, "targetPort": 15021}
        assert [p["port"] for p in ports[1:]] == [15443, 15012, 15017]
        assert "serviceAnnotations" not in doc["spec"]["components"]["ingressGateways"][0]["k8s"]  # no MetalLB


def test_a_remote_finds_its_primary_at_the_primary_server(plan_for: Callable[[str], Any]) -> None:
    overlay = next(d for m in _step(plan_for("primary-remote"), "remotes").manifests for d in m.docs
                   if d["kind"] == "IstioOperator")
    assert overlay["spec"]["profile"] == "remote"
    assert overlay["spec"]["values"]["global"]["remotePilotAddress"] == "172.30.0.10"


def test_the_network_subnet_avoids_what_docker_already_uses() -> None:
    assert free_subnet([]) == "172.30.0.0/24"
    assert free_subnet(["172.17.0.0/16", "172.30.0.0/24", "fd00::/64"]) == "172.30.1.0/24"
    assert free_subnet(["172.30.0.0/16"]) == "172.29.0.0/24"
    addresses = cluster_addresses(load_topology("multi-network"), "172.29.0.0/24")
    assert [a.server for a in addresses.values()] == ["172.29.0.10", "172.29.0.20"]


def test_k3s_offers_no_link_features_since_it_applies_no_netem() -> None:
    offers = provider_offers("k3s")
    assert Feature.LINK_RTT not in offers and Feature.LINK_FAULTS not in offers
    assert {Feature.MULTI_NETWORK, Feature.EAST_WEST_GATEWAY, Feature.GATEWAY_FAULTS, Feature.INGRESS_GATEWAY} <= offers
    config = build_config(provider="k3s", topology="multi-network", istio_version="1.28.0")
    features = K3sProvider(config, load_topology("multi-network")).features()
    assert features <= offers and Feature.MULTI_NETWORK in features
    single = K3sProvider(config, load_topology("multi-primary")).features()
    assert Feature.EAST_WEST_GATEWAY not in single and Feature.GATEWAY_FAULTS not in single


def test_k3s_needs_an_istio_version() -> None:
    config = build_config(provider="k3s", topology="multi-network")
    with pytest.raises(UsageError, match="needs --istio-version"):
        K3sProvider.validate(config, load_topology("multi-network"))


@pytest.mark.parametrize(("flags", "says"), [
    ({"reuse": True}, "--reuse is for --provider kind, not k3s"),
    ({"kind_node_image": "kindest/node:v1.35.8"}, "--kind-node-image is for --provider kind, not k3s"),
])
def test_settings_k3s_cannot_use_are_refused(flags: dict[str, Any], says: str) -> None:
    """kind's own settings are not k3s's: refused when the config is built, before any provider code runs."""
    with pytest.raises(UsageError, match=says):
        build_config(provider="k3s", topology="multi-network", istio_version="1.28.0", **flags)


def test_every_step_says_what_is_verified_here() -> None:
    assert set(VERIFICATION) == {"images", "network", "clusters", "kubeconfig", "nodes", "preload", "routes", "ca",
                                 "install", "east-west", "remotes", "remote-secrets", "wait", "probes", "teardown"}
    shared = {"ca", "install", "probes", "wait"}  # the kube layer's steps, proven the same way for both
    assert all(VERIFICATION[key] == KIND_VERIFICATION[key] for key in shared)


def test_the_readme_shows_the_same_table() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### What the tests prove for k3s")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == [f"| `{key}` | {done} | {not_done} |" for key, (done, not_done) in VERIFICATION.items()]


def test_meshconf_plan_prints_the_whole_bring_up() -> None:
    done = run_meshconf("plan", "--provider", "k3s", "--topology", "multi-network", "--istio-version", "1.28.0")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    titles = re.findall(r"^Step (\d+)\. (.+?)(?:  \[clusters in parallel\])?$", text, flags=re.MULTILINE)
    assert [int(n) for n, _ in titles] == list(range(1, 16))
    assert titles[-1][1].startswith("At the end (or `meshconf down RUN`)")
    assert text.count("  verified here: ") == 15 and text.count("  not verified here: ") == 15
    assert "link between clusters: not emulated" in text
    assert "rancher/k3s:v1.34.11-k3s1" in text and "Ryuk" in text
    assert "-----BEGIN" not in text and "KEY-MATERIAL" not in text
    assert "K3S_TOKEN=${K3S_TOKEN}" in text
    for line in text.splitlines():
        assert "ca-key.pem" not in line or "<redacted:" in line


def test_doctor_for_k3s_checks_docker_and_kubectl_not_kind(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "conformance.cli", "doctor", "--provider", "k3s"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": str(tmp_path)})
    assert done.returncode == 3
    assert "MISSING docker daemon" in done.stdout and "MISSING kubectl " in done.stdout
    assert "ok      python: testcontainers" in done.stdout
    assert "MISSING kind " not in done.stdout and "absent  kind " in done.stdout  # kind's CLI is not k3s's business
    assert "NOT ready for --provider k3s" in done.stdout
