"""MeshConfig patches (RFC 7386 merge patches), the patches that undo them, and the local mesh's MeshConfig."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.check import Area, CheckInfo
from conformance.errors import UnsupportedError, UsageError
from conformance.meshconfig import merge_patch, mesh_config_map, undo_patch, validate_mesh_config
from conformance.provider import Feature
from conformance.providers import build_config
from conformance.providers.local.meshconfig import MeshConfigs
from conformance.scenario import Scenario
from conformance.topology import load_topology

BASE: dict[str, Any] = {"trustDomain": "cluster.local", "defaultConfig": {"discoveryAddress": "istiod:15012",
                                                                         "gatewayTopology": {"numTrustedProxies": 1}},
                        "trustDomainAliases": ["old"]}


@pytest.mark.parametrize(
    ("patch", "merged"),
    [
        ({"trustDomainAliases": ["td1"]}, {**BASE, "trustDomainAliases": ["td1"]}),  # a list is replaced whole
        ({"trustDomainAliases": None}, {k: v for k, v in BASE.items() if k != "trustDomainAliases"}),
        ({"defaultConfig": {"gatewayTopology": {"numTrustedProxies": 2}}},
         {**BASE, "defaultConfig": {"discoveryAddress": "istiod:15012", "gatewayTopology": {"numTrustedProxies": 2}}}),
        ({"serviceSettings": [{"settings": {"clusterLocal": True}, "hosts": ["a.b"]}]},
         {**BASE, "serviceSettings": [{"settings": {"clusterLocal": True}, "hosts": ["a.b"]}]}),
        ({"absent": None}, BASE),
        ({"defaultConfig": {"new": {"x": 1}}},
         {**BASE, "defaultConfig": {**BASE["defaultConfig"], "new": {"x": 1}}}),
    ],
    ids=["list-replaced", "null-removes", "nested-merge", "new-key", "null-absent", "new-nested"],
)
def test_merge_and_undo(patch: dict[str, Any], merged: dict[str, Any]) -> None:
    assert merge_patch(BASE, patch) == merged
    assert merge_patch(merged, undo_patch(BASE, patch)) == BASE


def test_merge_never_changes_its_arguments() -> None:
    base = {"a": {"b": [1]}}
    patch = {"a": {"c": 2}}
    merge_patch(base, patch)["a"]["b"].append(9)
    assert base == {"a": {"b": [1]}} and patch == {"a": {"c": 2}}


def test_config_map_follows_the_revision() -> None:
    """pilot/pkg/bootstrap/mesh.go getMeshConfigMapName."""
    assert [mesh_config_map(r) for r in (None, "default", "1-28-0")] == ["istio", "istio", "istio-1-28-0"]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"trustDomainAliases": "td1"}, "must be a list"),
        ({"trustDomainAliases": ["td_1"]}, r"trustDomainAliases\[0\]: trust domain 'td_1' is invalid"),
        ({"trustDomainAliases": [""]}, r"trustDomainAliases\[0\]"),
        ({"defaultConfig": {"gatewayTopology": {"numTrustedProxies": -1}}}, "numTrustedProxies must be"),
        ([("a", 1)], "must be a mapping"),
    ],
)
def test_what_istiod_refuses_is_refused(patch: Any, message: str) -> None:
    """pkg/config/validation/agent: validateTrustDomainConfig (ValidateTrustDomain: DNS-1123 labels)."""
    with pytest.raises(UsageError, match=message):
        validate_mesh_config(patch) if isinstance(patch, dict) else merge_patch({}, patch)


def test_valid_trust_domains_pass() -> None:
    validate_mesh_config({"trustDomainAliases": ["td1", "example.com", "istio.io."]})


# -- the local mesh's control planes ------------------------------------------------------------------------


def test_a_remote_cluster_follows_its_primarys_mesh_config() -> None:
    configs = MeshConfigs(load_topology("primary-remote"))
    undo = configs.patch({"trustDomainAliases": ["td1"]}, ["cluster2"])
    assert undo == {"cluster1": {"trustDomainAliases": None}}
    assert configs.of("cluster1") == {"trustDomainAliases": ["td1"]}
    configs.patch(undo["cluster1"], ["cluster1"])
    assert configs.of("cluster1") == {}


def test_each_primary_has_its_own_mesh_config() -> None:
    configs = MeshConfigs(load_topology("multi-primary"))
    configs.patch({"trustDomainAliases": ["td1"]}, ["cluster2"])
    assert configs.of("cluster1") == {} and configs.of("cluster2") == {"trustDomainAliases": ["td1"]}


def test_fields_the_local_mesh_does_not_implement_are_refused_and_change_nothing() -> None:
    configs = MeshConfigs(load_topology("multi-primary"))
    with pytest.raises(UnsupportedError, match=r"field meshConfig.enableTracing is supported by Istio, not by the "):
        configs.patch({"trustDomainAliases": ["td1"], "enableTracing": True}, ["cluster1"])
    assert configs.of("cluster1") == {}


# -- Scenario.mesh_config: the change is undone when the check ends ----------------------------------------


class _Provider:
    """The provider calls Scenario makes around a MeshConfig change."""

    def __init__(self, features: frozenset[Feature]) -> None:
        self.topology = load_topology("primary-remote")
        self._features = features
        self.calls: list[tuple[dict[str, Any], list[str]]] = []

    def features(self) -> frozenset[Feature]:
        return self._features

    def clusters(self) -> Any:
        return self.topology.clusters

    def mesh_config(self, patch: dict[str, Any], clusters: list[str]) -> dict[str, dict[str, Any]]:
        self.calls.append((dict(patch), list(clusters)))
        return {"cluster1": {key: None for key in patch}}

    def delete_namespace(self, namespace: str) -> None:
        pass


def _scenario(provider: _Provider, tmp_path: Any) -> Scenario:
    info = CheckInfo("authz-x-y", Area.AUTHZ, "d", frozenset())
    return Scenario(provider, info, build_config(), tmp_path)  # type: ignore[arg-type]


def test_a_scenarios_mesh_config_change_is_undone_at_cleanup(tmp_path: Any) -> None:
    provider = _Provider(frozenset({Feature.MESH_WIDE_CONFIG}))
    scenario = _scenario(provider, tmp_path)
    scenario.mesh_config({"trustDomainAliases": ["td1"]})
    scenario.mesh_config({"defaultConfig": {"gatewayTopology": {"numTrustedProxies": 1}}})
    assert provider.calls == [({"trustDomainAliases": ["td1"]}, ["cluster1"]),
                              ({"defaultConfig": {"gatewayTopology": {"numTrustedProxies": 1}}}, ["cluster1"])]
    scenario.cleanup()
    assert provider.calls[2:] == [({"defaultConfig": None}, ["cluster1"]), ({"trustDomainAliases": None}, ["cluster1"])]


def test_a_check_without_the_feature_is_told_to_declare_it(tmp_path: Any) -> None:
    scenario = _scenario(_Provider(frozenset()), tmp_path)
    with pytest.raises(UsageError, match=r"declare features=\[Feature.MESH_WIDE_CONFIG\]"):
        scenario.mesh_config({"trustDomainAliases": ["td1"]})
