"""Name resolution in the local mesh, as istio-agent's DNS proxy answers it (DNS capture + auto-allocation).

Istio (``pkg/dns/server/name_table.go``, ``pkg/dns/client/dns.go``; istio.io "DNS Proxying"): Kubernetes
services of every cluster the control plane knows resolve (``name.ns.svc.cluster.local``, ``name.ns.svc``,
``name.ns``, and ``name`` from the same namespace); a ServiceEntry host resolves once it has an address
(auto-allocated for resolution STATIC or DNS); any other name goes upstream and, without internet, does not
resolve: the call fails before it is made. Out-of-mesh callers have kube-dns only: their own cluster's services.
"""

from __future__ import annotations

import secrets
import threading
import time

import pytest

from conformance.provider import ProbeSpec
from conformance.providers.local.provider import LocalProvider
from tests.integration.mesh import CLUSTERS, call, doc, eventually

pytestmark = pytest.mark.integration


def test_names_resolve_as_istio_agent_answers_them(local_mesh: LocalProvider) -> None:
    ns = f"dns-{secrets.token_hex(3)}"
    server = local_mesh.deploy_probe(ProbeSpec("server", ns, "cluster1"))
    remote = local_mesh.deploy_probe(ProbeSpec("remote", ns, "cluster2"))  # only in the other cluster
    client = local_mesh.deploy_probe(ProbeSpec("client", ns, "cluster1"))
    other = local_mesh.deploy_probe(ProbeSpec("client", f"{ns}-b", "cluster1"))
    try:
        for url in (server.url(), remote.url(), f"http://server.{ns}.svc:8080/", f"http://server.{ns}:8080/",
                    "http://server:8080/", f"http://SERVER.{ns}.svc.cluster.local.:8080/"):
            result = call(local_mesh, client, url, 1)
            assert result.errors() != {"unresolved host": 1}, f"{url}: {result.summary()}"
        assert call(local_mesh, client, server.url(), 2).statuses() == {200: 2}
        assert call(local_mesh, client, remote.url(), 2).statuses() == {200: 2}
        # a short name resolves only in its own namespace; unknown names and other domains never do
        for caller, url in ((other, "http://server:8080/"), (client, "http://nosuch:8080/"),
                            (client, f"http://nosuch.{ns}.svc.cluster.local:8080/"),
                            (client, "http://external.example.com/"), (client, f"http://server.{ns}.svc.other:8080/")):
            result = call(local_mesh, caller, url, 2)
            assert result.errors() == {"unresolved host": 2}, f"{url}: {result.summary()}"
        # an address needs no lookup: the sidecar sees the call (ALLOW_ANY passes it through)
        assert call(local_mesh, client, f"http://{server.instances[0].address}:8080/", 1).statuses() == {200: 1}
    finally:
        local_mesh.delete_namespace(ns)
        local_mesh.delete_namespace(f"{ns}-b")


def test_a_service_entry_host_resolves_once_it_has_an_address(local_mesh: LocalProvider) -> None:
    ns = f"dns-{secrets.token_hex(3)}"
    client = local_mesh.deploy_probe(ProbeSpec("client", ns, "cluster1"))
    external = local_mesh.deploy_probe(ProbeSpec("external", ns, "cluster1", in_mesh=False))
    host = f"api.{ns}.example"
    url = f"http://{host}:8080/"
    entry = {"hosts": [host, f"*.{ns}.example"], "location": "MESH_EXTERNAL", "resolution": "STATIC",
             "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
             "endpoints": [{"address": external.instances[0].address}]}
    try:
        assert call(local_mesh, client, url, 1).errors() == {"unresolved host": 1}
        local_mesh.apply([doc("ServiceEntry", "external", ns, entry)], CLUSTERS)
        answered = eventually(lambda: call(local_mesh, client, url, 2), lambda r: r.statuses() == {200: 2})
        assert [r.echo.get("service") for r in answered.responses] == ["external"] * 2, answered.summary()
        # a wildcard host gets no address: nothing to resolve to
        assert call(local_mesh, client, f"http://other.{ns}.example:8080/", 1).errors() == {"unresolved host": 1}
    finally:
        local_mesh.delete_namespace(ns)


def test_out_of_mesh_callers_resolve_only_their_own_cluster_services(local_mesh: LocalProvider) -> None:
    ns = f"dns-{secrets.token_hex(3)}"
    local = local_mesh.deploy_probe(ProbeSpec("server", ns, "cluster1"))
    remote = local_mesh.deploy_probe(ProbeSpec("remote", ns, "cluster2"))
    outsider = local_mesh.deploy_probe(ProbeSpec("outsider", ns, "cluster1", in_mesh=False))
    try:
        assert call(local_mesh, outsider, local.url(), 2).statuses() == {200: 2}
        for url in (remote.url(), "http://external.example.com/"):
            assert call(local_mesh, outsider, url, 1).errors() == {"unresolved host": 1}, url
    finally:
        local_mesh.delete_namespace(ns)


def test_lookups_do_not_wait_for_a_change_in_progress(local_mesh: LocalProvider) -> None:
    """istio-agent answers from the table it has; it never waits for istiod. Calls keep going while the mesh
    deploys a workload (which holds the mesh's lock for the whole start-up of its four pods)."""
    ns = f"dns-{secrets.token_hex(3)}"
    server = local_mesh.deploy_probe(ProbeSpec("server", ns, "cluster1"))
    client = local_mesh.deploy_probe(ProbeSpec("client", ns, "cluster1"))
    try:
        deploying = threading.Thread(target=local_mesh.deploy_probe, args=(ProbeSpec("late", ns, "cluster2",
                                                                                     replicas=4),))
        deploying.start()
        time.sleep(0.05)
        made = 0
        while deploying.is_alive():
            assert call(local_mesh, client, server.url(), 1).statuses() == {200: 1}
            made += 1
        deploying.join()
        assert made >= 5, f"only {made} calls finished while the deployment ran: lookups waited for it"
    finally:
        local_mesh.delete_namespace(ns)
