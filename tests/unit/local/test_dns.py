"""The local mesh's DNS model: which names istio-agent's name table answers (``pkg/dns/server/name_table.go``)."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.providers.local.dns import NameTable, needs_lookup
from conformance.providers.local.model import ConfigStore, Registry
from conformance.providers.local.translate.context import MeshView
from conformance.topology import load_topology


def _table(*entries: dict[str, Any]) -> NameTable:
    topology = load_topology("multi-primary")
    registry = Registry()
    registry.add_service("cluster2", "shop", "cart", (8080,))
    store = ConfigStore()
    for index, spec in enumerate(entries):
        store.put({"kind": "ServiceEntry", "metadata": {"name": f"e{index}", "namespace": "shop"}, "spec": spec})
    view = MeshView(cluster=topology.clusters[0], store=store, registry=registry,
                    visible=frozenset(topology.cluster_names), trust_domain="cluster.local", defects=frozenset())
    return NameTable.of(view)


@pytest.mark.parametrize(("host", "namespace", "resolves"), [
    ("cart.shop.svc.cluster.local", "web", True),  # a service of another cluster the control plane discovers
    ("cart.shop.svc", "web", True),
    ("cart.shop", "web", True),
    ("cart", "shop", True),
    ("cart", "web", False),  # a short name only from its own namespace
    ("Cart.Shop.svc.cluster.local.", "web", True),
    ("cart.shop.svc.cluster", "web", False),
    ("nosuch.shop.svc.cluster.local", "web", False),
    ("10.1.2.3", "web", True),
])
def test_kubernetes_services(host: str, namespace: str, resolves: bool) -> None:
    assert _table().resolves(host, namespace) is resolves


def test_service_entry_hosts_resolve_with_an_address() -> None:
    ports = [{"number": 80, "name": "http", "protocol": "HTTP"}]
    table = _table({"hosts": ["static.example", "*.wild.example"], "resolution": "STATIC", "ports": ports},
                   {"hosts": ["dns.example"], "resolution": "DNS", "ports": ports},
                   {"hosts": ["none.example"], "ports": ports},  # resolution NONE (the default): no auto-allocation
                   {"hosts": ["declared.example"], "addresses": ["240.0.0.1"], "ports": ports})
    assert [h for h in ("static.example", "dns.example", "none.example", "declared.example", "a.wild.example")
            if table.resolves(h, "web")] == ["static.example", "dns.example", "declared.example"]


def test_addresses_need_no_lookup() -> None:
    assert not needs_lookup("127.0.0.1") and not needs_lookup("[::1]") and needs_lookup("example.com")
