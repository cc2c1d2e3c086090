import pytest

from conformance.errors import UsageError
from conformance.topology import Role, available_topologies, load_topology, parse_topology


def test_multi_primary_ships() -> None:
    topology = load_topology("multi-primary")
    assert topology.cluster_names == ("cluster1", "cluster2")
    assert [c.region for c in topology.clusters] == ["region1", "region2"]
    assert topology.networks == ("network1",)
    assert not topology.multi_network
    assert all(c.role is Role.PRIMARY for c in topology.clusters)
    assert "multi-primary" in available_topologies()


def test_three_cluster_is_istios_ci_multicluster_topology() -> None:
    """prow/config/topology/multicluster.json: a primary, its remote on the same network, a primary on another."""
    topology = load_topology("three-cluster")
    assert [(c.name, c.role, c.primary, c.network, c.region) for c in topology.clusters] == [
        ("cluster1", Role.PRIMARY, None, "network1", "region1"),
        ("cluster2", Role.REMOTE, "cluster1", "network1", "region2"),
        ("cluster3", Role.PRIMARY, None, "network2", "region3"),
    ]
    assert topology.multi_network and [c.name for c in topology.primaries] == ["cluster1", "cluster3"]
    assert "three-cluster" in available_topologies()


def test_unknown_topology_lists_known_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown topology 'triangle'.*multi-primary"):
        load_topology("triangle")


def _cluster(**overrides: object) -> dict[str, object]:
    return {"name": "c1", "network": "n1", "region": "r1", "zones": ["z1"], **overrides}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"clusters": []}, "non-empty 'clusters'"),
        ({"clusters": [_cluster(name="C_1")]}, "lower-case DNS label"),
        ({"clusters": [_cluster(), _cluster()]}, "must be unique"),
        ({"clusters": [_cluster(role="remote")]}, "needs 'primary:'"),
        ({"clusters": [_cluster(zones="z1")]}, "must be a list"),
        ({"clusters": [_cluster(colour="red")]}, "cluster field 'colour' is unknown"),
        ({"clusters": [_cluster()], "linkRttMs": "fast"}, "linkRttMs must be a number"),
    ],
)
def test_invalid_topologies(data: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_topology(data)


def test_remote_cluster_is_configured_by_its_primary() -> None:
    topology = parse_topology({"clusters": [_cluster(), _cluster(name="c2", role="remote", primary="c1")]})
    assert topology.cluster("c2").config_cluster == "c1"
    assert [c.name for c in topology.primaries] == ["c1"]
