"""PeerAuthentication precedence, as Istio documents it (pure translator logic; no Envoy)."""

from typing import Any

import pytest

from conformance.provider import ProbeSpec
from conformance.providers.local.addresses import PodAddresses
from conformance.providers.local.defects import Defect
from conformance.providers.local.model import ConfigStore, Workload
from conformance.providers.local.translate.mtls import MtlsMode, endpoint_uses_mtls, peer_mtls_mode
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


def test_auto_mtls_follows_sidecar_and_disable() -> None:
    disabled = _store(_pa("ns", "default", {"mtls": {"mode": "DISABLE"}}))
    assert endpoint_uses_mtls(_store(), _workload(), 8080, NONE)
    assert not endpoint_uses_mtls(_store(), _workload(in_mesh=False), 8080, NONE)
    assert not endpoint_uses_mtls(disabled, _workload(), 8080, NONE)
    assert not endpoint_uses_mtls(_store(), _workload(), 8080, frozenset({Defect.ALWAYS_PLAINTEXT}))
