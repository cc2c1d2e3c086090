"""Ingress gateway (Gateway + VirtualService), egress (ServiceEntry, REGISTRY_ONLY), certificate rotation."""

from __future__ import annotations

import json
import secrets
import threading

import pytest

from conformance.provider import ProbeSpec
from conformance.providers.local.provider import LocalProvider
from tests.integration.mesh import CLUSTERS, call, doc, eventually

pytestmark = pytest.mark.integration


def test_ingress_serves_only_declared_hosts_and_paths_over_mtls(local_mesh: LocalProvider) -> None:
    ns = f"ingress-{secrets.token_hex(3)}"
    local_mesh.deploy_probe(ProbeSpec("server", ns, "cluster1"))
    outsider = local_mesh.deploy_probe(ProbeSpec("outsider", ns, "cluster1", in_mesh=False))
    gateway = doc("Gateway", "web", ns, {"selector": {"istio": "ingressgateway"}, "servers": [
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["app.example.com"]}]})
    routes = doc("VirtualService", "web", ns, {"hosts": ["app.example.com"], "gateways": ["web"], "http": [
        {"match": [{"uri": {"prefix": "/app"}}], "route": [{"destination": {"host": "server"}}]}]})
    strict = doc("PeerAuthentication", "default", ns, {"mtls": {"mode": "STRICT"}})
    local_mesh.apply([gateway, routes, strict], CLUSTERS)
    base = f"http://{local_mesh.ingress_address('cluster1')}"
    declared = call(local_mesh, outsider, f"{base}/app/x", 5, headers={"Host": "app.example.com"})
    assert declared.statuses() == {200: 5}, declared.summary()
    assert {tuple(r.client_cert_uris) for r in declared.responses} == {
        ("spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",)}
    assert call(local_mesh, outsider, f"{base}/other", 3, headers={"Host": "app.example.com"}).statuses() == {404: 3}
    assert call(local_mesh, outsider, f"{base}/app", 3, headers={"Host": "evil.example.com"}).statuses() == {404: 3}
    local_mesh.delete_namespace(ns)


def test_registry_only_blocks_unknown_hosts_until_a_service_entry(local_mesh: LocalProvider) -> None:
    ns = f"egress-{secrets.token_hex(3)}"
    client = local_mesh.deploy_probe(ProbeSpec("client", ns, "cluster1"))
    external = local_mesh.deploy_probe(ProbeSpec("external", f"{ns}-outside", "cluster1", in_mesh=False))
    address = external.instances[0].address
    # ALLOW_ANY (Istio's default): an unknown destination is passed through
    assert call(local_mesh, client, f"http://{address}:8080/", 3).statuses() == {200: 3}
    registry_only = doc("Sidecar", "default", ns, {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})
    local_mesh.apply([registry_only], CLUSTERS)
    assert call(local_mesh, client, f"http://{address}:8080/", 3).statuses() == {502: 3}
    entry = doc("ServiceEntry", "external", ns, {
        "hosts": ["external.example.com"], "location": "MESH_EXTERNAL", "resolution": "STATIC",
        "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}], "endpoints": [{"address": address}]})
    local_mesh.apply([entry], CLUSTERS)
    known = call(local_mesh, client, "http://external.example.com:8080/", 3)
    assert known.statuses() == {200: 3} and {r.instance for r in known.responses} == {external.instances[0].name}
    local_mesh.delete_namespace(ns)
    local_mesh.delete_namespace(f"{ns}-outside")


def test_certificate_rotation_serves_a_new_serial_without_errors(local_mesh: LocalProvider) -> None:
    ns = f"rotate-{secrets.token_hex(3)}"
    server = local_mesh.deploy_probe(ProbeSpec("server", ns, "cluster1"))
    client = local_mesh.deploy_probe(ProbeSpec("client", ns, "cluster2"))
    local_mesh.apply([doc("PeerAuthentication", "default", ns, {"mtls": {"mode": "STRICT"}})], CLUSTERS)
    before = local_mesh.proxy_admin(server, "/certs")
    results = []
    worker = threading.Thread(target=lambda: results.append(call(local_mesh, client, server.url(), 300,
                                                                 concurrency=2, new_connection=True)))
    worker.start()
    serials = local_mesh.rotate_certificates(ns)
    worker.join(60)
    after = local_mesh.proxy_admin(server, "/certs")
    assert _leaf_serials(after) == {serials[server.instances[0].name]}
    assert _leaf_serials(before) != _leaf_serials(after)
    assert results and results[0].statuses() == {200: 300}, results[0].summary()
    local_mesh.delete_namespace(ns)


def _leaf_serials(certs: str) -> set[str]:
    """Serials of the workload certificates an Envoy serves (its /certs admin page)."""
    return {c["serial_number"].lstrip("0") for entry in json.loads(certs)["certificates"]
            for c in entry.get("cert_chain", [])[:1]}


def test_kill_leaves_a_stale_endpoint_that_outlier_detection_ejects(local_mesh: LocalProvider) -> None:
    ns = f"kill-{secrets.token_hex(3)}"
    client = local_mesh.deploy_probe(ProbeSpec("client", ns, "cluster1"))
    server = local_mesh.deploy_probe(ProbeSpec("server", ns, "cluster1", replicas=2))
    rule = doc("DestinationRule", "server", ns, {"host": "server", "trafficPolicy": {"outlierDetection": {
        "consecutiveGatewayErrors": 1, "interval": "0.2s", "baseEjectionTime": "30s", "maxEjectionPercent": 100}}})
    local_mesh.apply([rule], CLUSTERS)
    local_mesh.faults.kill(server, instance=0)
    survivor = server.instances[1].name
    healed = eventually(lambda: call(local_mesh, client, server.url(), 10),
                        lambda r: {x.instance for x in r.responses} == {survivor} and r.statuses() == {200: 10})
    assert {x.instance for x in healed.responses} == {survivor}, healed.summary()
    local_mesh.delete_namespace(ns)


def test_ingress_gateway_enforces_authorization_policy_that_selects_it(local_mesh: LocalProvider) -> None:
    ns = f"ingress-authz-{secrets.token_hex(3)}"
    local_mesh.deploy_probe(ProbeSpec("server", ns, "cluster1"))
    outsider = local_mesh.deploy_probe(ProbeSpec("outsider", ns, "cluster1", in_mesh=False))
    gateway = doc("Gateway", "web", ns, {"selector": {"istio": "ingressgateway"}, "servers": [
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["guarded.example.com"]}]})
    routes = doc("VirtualService", "web", ns, {"hosts": ["guarded.example.com"], "gateways": ["web"], "http": [
        {"route": [{"destination": {"host": "server"}}]}]})
    deny_admin = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                  "metadata": {"name": f"gateway-deny-admin-{ns}", "namespace": "istio-system"},
                  "spec": {"selector": {"matchLabels": {"istio": "ingressgateway"}}, "action": "DENY",
                           "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}}
    local_mesh.apply([gateway, routes, deny_admin], CLUSTERS)
    try:
        base = f"http://{local_mesh.ingress_address('cluster1')}"
        host = {"Host": "guarded.example.com"}
        assert call(local_mesh, outsider, f"{base}/public", 3, headers=host).statuses() == {200: 3}
        denied = call(local_mesh, outsider, f"{base}/admin/x", 3, headers=host)
        assert denied.statuses() == {403: 3} and denied.responses[0].body.strip() == "RBAC: access denied"
    finally:
        local_mesh.delete([deny_admin], CLUSTERS)
        local_mesh.delete_namespace(ns)
