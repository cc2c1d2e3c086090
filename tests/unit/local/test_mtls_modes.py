"""PeerAuthentication precedence, as Istio documents it (pure translator logic; no Envoy)."""

from typing import Any

import pytest

from conformance.errors import ManifestError
from conformance.provider import ProbeSpec
from conformance.providers.local.addresses import PodAddresses
from conformance.providers.local.defects import Defect
from conformance.providers.local.model import ConfigStore, Workload
from conformance.providers.local.translate.mtls import (
    MtlsMode,
    endpoint_uses_mtls,
    peer_mtls_mode,
    validate_peer_authentication,
)
from conformance.topology import Cluster

CLUSTER = Cluster("cluster1", "network1", "region1", ("zone1",))


def _workload(app: str = "server", in_mesh: bool = True) -> Workload:
    spec = ProbeSpec(service=app, namespace="ns", cluster="cluster1", in_mesh=in_mesh, ports=(8080, 9090))
    return Workload("w", spec, CLUSTER, "zone1", PodAddresses("127.11.0.2", "127.11.128.2"))


def _pa(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _store(*docs: dict[str, Any]) -> ConfigStore:
    store = ConfigStore()
    for doc in docs:
        store.put(doc)
    return store


NONE: frozenset[Defect] = frozenset()


@pytest.mark.parametrize(
    ("docs", "port", "expected"),
    [
        ((), 8080, MtlsMode.PERMISSIVE),
        ((_pa("istio-system", "default", {"mtls": {"mode": "STRICT"}}),), 8080, MtlsMode.STRICT),
        ((_pa("istio-system", "default", {"mtls": {"mode": "STRICT"}}),
          _pa("ns", "default", {"mtls": {"mode": "DISABLE"}})), 8080, MtlsMode.DISABLE),
        ((_pa("ns", "default", {"mtls": {"mode": "STRICT"}}),
          _pa("ns", "w", {"selector": {"matchLabels": {"app": "server"}}, "mtls": {"mode": "PERMISSIVE"}})),
         8080, MtlsMode.PERMISSIVE),
        ((_pa("ns", "default", {"mtls": {"mode": "STRICT"}}),
          _pa("ns", "w", {"selector": {"matchLabels": {"app": "server"}}, "mtls": {"mode": "UNSET"}})),
         8080, MtlsMode.STRICT),
        ((_pa("ns", "default", {"mtls": {"mode": "STRICT"}}),
          _pa("ns", "w", {"selector": {"matchLabels": {"app": "server"}},
                          "portLevelMtls": {"9090": {"mode": "DISABLE"}}})), 9090, MtlsMode.DISABLE),
        ((_pa("ns", "default", {"mtls": {"mode": "STRICT"}}),
          _pa("ns", "w", {"selector": {"matchLabels": {"app": "server"}},
                          "portLevelMtls": {"9090": {"mode": "DISABLE"}}})), 8080, MtlsMode.STRICT),
        ((_pa("ns", "w", {"selector": {"matchLabels": {"app": "other"}}, "mtls": {"mode": "STRICT"}}),),
         8080, MtlsMode.PERMISSIVE),
        ((_pa("other", "default", {"mtls": {"mode": "STRICT"}}),), 8080, MtlsMode.PERMISSIVE),
    ],
    ids=["default", "mesh-strict", "namespace-beats-mesh", "workload-beats-namespace", "unset-inherits",
         "port-level", "port-level-other-port", "selector-mismatch", "other-namespace"],
)
def test_precedence(docs: tuple[dict[str, Any], ...], port: int, expected: MtlsMode) -> None:
    assert peer_mtls_mode(_store(*docs), _workload(), port, NONE) is expected


def test_oldest_namespace_policy_wins() -> None:
    store = _store(_pa("ns", "b", {"mtls": {"mode": "STRICT"}}), _pa("ns", "a", {"mtls": {"mode": "DISABLE"}}))
    assert peer_mtls_mode(store, _workload(), 8080, NONE) is MtlsMode.STRICT


def test_defects_change_the_mode() -> None:
    strict = _store(_pa("ns", "default", {"mtls": {"mode": "STRICT"}}))
    assert peer_mtls_mode(strict, _workload(), 8080, frozenset({Defect.IGNORE_PEER_AUTHENTICATION})) \
        is MtlsMode.PERMISSIVE
    assert peer_mtls_mode(_store(), _workload(), 8080, frozenset({Defect.PERMISSIVE_AS_STRICT})) is MtlsMode.STRICT


SERVER = {"matchLabels": {"app": "server"}}


@pytest.mark.parametrize(
    ("docs", "expected"),
    [
        # policy_applier.go ComposePeerAuthentication: no labels in the selector = namespace level
        ((_pa("ns", "empty", {"selector": {"matchLabels": {}}, "mtls": {"mode": "DISABLE"}}),
          _pa("ns", "w", {"selector": SERVER, "mtls": {"mode": "STRICT"}})), MtlsMode.STRICT),
        ((_pa("ns", "empty", {"selector": {}, "mtls": {"mode": "STRICT"}}),), MtlsMode.STRICT),
        # ... and the oldest namespace-level policy wins, with or without an empty selector
        ((_pa("ns", "empty", {"selector": {"matchLabels": {}}, "mtls": {"mode": "DISABLE"}}),
          _pa("ns", "default", {"mtls": {"mode": "STRICT"}})), MtlsMode.DISABLE),
        # a root-namespace policy with a selector is ignored (it is neither mesh- nor workload-level)
        ((_pa("istio-system", "picky", {"selector": SERVER, "mtls": {"mode": "STRICT"}}),), MtlsMode.PERMISSIVE),
        ((_pa("istio-system", "picky", {"selector": SERVER, "mtls": {"mode": "DISABLE"}}),
          _pa("istio-system", "default", {"mtls": {"mode": "STRICT"}})), MtlsMode.STRICT),
    ],
    ids=["empty-match-labels-is-namespace-level", "empty-selector-is-namespace-level",
         "empty-match-labels-oldest-wins", "root-selector-ignored", "root-selector-ignored-mesh-applies"],
)
def test_selector_edge_cases(docs: tuple[dict[str, Any], ...], expected: MtlsMode) -> None:
    assert peer_mtls_mode(_store(*docs), _workload(), 8080, NONE) is expected


def test_port_level_mtls_ignored_defect() -> None:
    store = _store(_pa("ns", "w", {"selector": SERVER, "mtls": {"mode": "STRICT"},
                                   "portLevelMtls": {"9090": {"mode": "DISABLE"}}}))
    assert peer_mtls_mode(store, _workload(), 9090, NONE) is MtlsMode.DISABLE
    assert peer_mtls_mode(store, _workload(), 9090, frozenset({Defect.PORT_LEVEL_MTLS_IGNORED})) is MtlsMode.STRICT


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"mtls": {"mode": "STRICT"}, "portLevelMtls": {"9090": {"mode": "DISABLE"}}},
         "mesh/namespace peer authentication cannot have port level mTLS"),
        ({"selector": {"matchLabels": {}}, "portLevelMtls": {"9090": {"mode": "DISABLE"}}},
         "mesh/namespace peer authentication cannot have port level mTLS"),
        ({"selector": SERVER, "portLevelMtls": {}}, "port level mTLS, if defined, must have at least one element"),
        ({"selector": SERVER, "portLevelMtls": {"0": {"mode": "DISABLE"}}}, "port must be in range 1..65535"),
        ({"selector": {"matchLabels": {"app": "s*"}}}, "wildcard is not supported in selector"),
    ],
)
def test_validation_refuses_as_istio(spec: dict[str, Any], message: str) -> None:
    """pkg/config/validation/validation.go ValidatePeerAuthentication."""
    with pytest.raises(ManifestError, match=message):
        validate_peer_authentication(_pa("ns", "p", spec))


def test_validation_accepts_an_empty_selector_without_port_level() -> None:
    validate_peer_authentication(_pa("ns", "p", {"selector": {"matchLabels": {}}, "mtls": {"mode": "STRICT"}}))


def test_auto_mtls_follows_sidecar_and_disable() -> None:
    disabled = _store(_pa("ns", "default", {"mtls": {"mode": "DISABLE"}}))
    assert endpoint_uses_mtls(_store(), _workload(), 8080, NONE)
    assert not endpoint_uses_mtls(_store(), _workload(in_mesh=False), 8080, NONE)
    assert not endpoint_uses_mtls(disabled, _workload(), 8080, NONE)
    assert not endpoint_uses_mtls(_store(), _workload(), 8080, frozenset({Defect.ALWAYS_PLAINTEXT}))
