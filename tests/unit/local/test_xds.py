"""The xDS layer's pure part: a translated snapshot split into CDS/EDS/LDS/RDS/SDS as istiod serves them,
and each resource encoded as Envoy's protobuf type."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.errors import ProviderError
from conformance.providers.local.envoy import XdsSnapshot, any_config
from conformance.providers.local.xds import (
    ADS_SOURCE,
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    SECRET,
    Converter,
    Resource,
    split,
)

_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_SDS = {"name": "default", "sds_config": ADS_SOURCE}


def _hcm(route_name: str, vhost: str = "a") -> dict[str, Any]:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": any_config(
        _HCM, stat_prefix="x", route_config={"name": route_name, "virtual_hosts": [
            {"name": vhost, "domains": [vhost], "routes": [{"match": {"prefix": "/"}, "direct_response": {
                "status": 200}}]}]},
        http_filters=[{"name": "envoy.filters.http.router",
                       "typed_config": any_config("envoy.extensions.filters.http.router.v3.Router")}])}


def _listener(name: str, route_name: str, direction: str | None = None, port: int = 15001) -> dict[str, Any]:
    listener: dict[str, Any] = {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [_hcm(route_name)]}],
    }
    if direction:
        listener["traffic_direction"] = direction
    return listener


def _cluster(name: str, tls: bool = False) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name, "type": "STATIC", "connect_timeout": "10s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.2", "port_value": 8080}}}}]}]},
    }
    if tls:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": any_config(
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            common_tls_context={"tls_certificate_sds_secret_configs": [_SDS]})}
    return cluster


SNAPSHOT = XdsSnapshot(
    listeners=[_listener("virtualInbound", "inbound|8080||", "INBOUND", 15006),
               _listener("virtualOutbound", "outbound", "OUTBOUND")],
    clusters=[_cluster("inbound|8080||"), _cluster("outbound|8080||server.ns.svc.cluster.local", tls=True),
              {"name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
               "connect_timeout": "10s"}],
    secrets={"default": {"name": "default", "tls_certificate": {"certificate_chain": {"inline_bytes": "eA=="},
                                                                  "private_key": {"inline_bytes": "eA=="}}}},
)


def test_outbound_route_configs_become_rds_and_inbound_stays_inline() -> None:
    resources = split(SNAPSHOT)
    assert set(resources.by_type[ROUTE]) == {"outbound"}
    outbound = resources.by_type[LISTENER]["virtualOutbound"].body
    hcm = outbound["filter_chains"][0]["filters"][0]["typed_config"]
    assert "route_config" not in hcm
    assert hcm["rds"] == {"route_config_name": "outbound", "config_source": ADS_SOURCE}
    inbound = resources.by_type[LISTENER]["virtualInbound"].body
    assert inbound["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["name"] == "inbound|8080||"
    assert resources.references[ROUTE] == {"outbound"}


def test_outbound_clusters_become_eds_and_inbound_and_original_dst_stay() -> None:
    resources = split(SNAPSHOT)
    name = "outbound|8080||server.ns.svc.cluster.local"
    eds = resources.by_type[CLUSTER][name].body
    assert eds["type"] == "EDS" and "load_assignment" not in eds
    assert eds["eds_cluster_config"] == {"eds_config": ADS_SOURCE, "service_name": name}
    assert resources.by_type[ENDPOINT][name].body["cluster_name"] == name
    assert resources.by_type[CLUSTER]["inbound|8080||"].body["type"] == "STATIC"
    assert "load_assignment" in resources.by_type[CLUSTER]["inbound|8080||"].body
    assert resources.by_type[CLUSTER]["PassthroughCluster"].body["type"] == "ORIGINAL_DST"
    assert set(resources.by_type[ENDPOINT]) == resources.references[ENDPOINT] == {name}


def test_the_translators_output_is_not_changed() -> None:
    before = repr(SNAPSHOT)
    split(SNAPSHOT)
    assert repr(SNAPSHOT) == before


def test_secrets_and_their_references() -> None:
    resources = split(SNAPSHOT)
    assert set(resources.by_type[SECRET]) == {"default"}
    assert resources.references[SECRET] == {"default"}


def test_digests_change_only_with_content() -> None:
    first, again = split(SNAPSHOT), split(SNAPSHOT)
    assert all(first.digests(t) == again.digests(t) for t in PUSH_ORDER)
    changed = XdsSnapshot(SNAPSHOT.listeners, [*SNAPSHOT.clusters[:1], _cluster("outbound|8080||server.ns.svc"
                                                                                  ".cluster.local"),
                                               *SNAPSHOT.clusters[2:]], SNAPSHOT.secrets)
    after = split(changed)
    differs = {t for t in PUSH_ORDER if first.digests(t) != after.digests(t)}
    assert differs == {CLUSTER}  # the TLS socket went; the endpoints did not change


def test_two_different_route_configs_with_one_name_are_refused() -> None:
    clash = XdsSnapshot(listeners=[_listener("a", "same"), {**_listener("b", "same", port=15002),
                                                            "filter_chains": [{"filters": [_hcm("same", "b")]}]}])
    with pytest.raises(ProviderError, match="two different route configs named 'same'"):
        split(clash)


def test_push_order_is_istios() -> None:
    # pilot/pkg/xds/ads.go PushOrder
    assert PUSH_ORDER == (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)


def test_listen_addresses_include_additional_addresses() -> None:
    listener = {**_listener("virtualInbound", "r", "INBOUND", 15006),
                "additional_addresses": [{"address": {"socket_address": {"address": "127.0.0.1", "port_value": 80}}}]}
    assert split(XdsSnapshot(listeners=[listener])).listen_addresses() == [("127.0.0.1", 15006), ("127.0.0.1", 80)]


def test_every_resource_encodes_as_its_envoy_type() -> None:
    converter = Converter()
    resources = split(SNAPSHOT)
    for type_url in PUSH_ORDER:
        for resource in resources.by_type[type_url].values():
            packed = converter.to_any(type_url, resource)
            assert packed.type_url == type_url
            message = converter.message_class(type_url.rpartition("/")[2])()
            assert packed.Unpack(message)
            assert (message.cluster_name if type_url == ENDPOINT else message.name) == resource.name


def test_encoding_is_cached_by_digest() -> None:
    converter = Converter()
    resource = split(SNAPSHOT).by_type[CLUSTER]["inbound|8080||"]
    assert converter.to_any(CLUSTER, resource) is converter.to_any(CLUSTER, resource)


def test_a_field_envoy_does_not_have_is_a_clear_error() -> None:
    resource = Resource("bad", {"name": "bad", "no_such_field": 1}, "d")
    with pytest.raises(ProviderError, match=r"cannot encode CDS resource 'bad'.*no_such_field"):
        Converter().to_any(CLUSTER, resource)


def test_an_unknown_extension_type_is_a_clear_error() -> None:
    body = {"name": "x", "transport_socket": {"name": "t", "typed_config": any_config("envoy.nothing.v3.Nope")}}
    with pytest.raises(ProviderError, match=r"envoy\.nothing\.v3"):
        Converter().to_any(CLUSTER, Resource("x", body, "d"))
