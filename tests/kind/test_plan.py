"""The kind plan: Istio's install order, remote secrets in every direction, nothing secret in the output."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from conformance.certs import MeshCA
from conformance.config import RunConfig
from conformance.providers.kind.provider import KindProvider
from conformance.providers.kind.steps import Step, render_plan
from conformance.topology import load_topology

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
    assert pos["remote-secrets"] < pos["wait"]
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
    assert "docker exec cluster1-control-plane ip route add 10.20.0.0/16 via ${CLUSTER2_API_IP}" in rendered
    assert "docker exec cluster2-control-plane ip route add 10.255.10.0/24 via ${CLUSTER1_API_IP}" in rendered
    assert len(rendered) == 4


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
    config = RunConfig.build(provider="kind", topology="multi-network", istio_version="1.28.0")
    text = KindProvider.plan(config, load_topology("multi-network"))
    assert text.startswith("meshconf plan: provider kind, topology multi-network, Istio 1.28.0")
    assert "$ kind create cluster --name cluster1 --config " in text
    assert "kind-configs/multi-network/cluster1.yaml" in text
    assert "Step 11. Deploy a probe workload in every cluster" in text
    assert "PRIVATE KEY" not in text
