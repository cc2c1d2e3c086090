"""PeerAuthentication and auto-mTLS on real Envoy: a request matrix per mode, as Istio documents it.

Each row applies a policy and then calls: the provider's ``apply`` returns only after every Envoy loaded the
new config. A connection that the client's sidecar kept alive from the previous row may carry one more
request on the old filter chain until the listener drain closes it (Istio drains too, for 45 s; the local
mesh drains within ``DRAIN_TIME_S``), so the row must hold within that time, not on the very first call.
"""

from __future__ import annotations

import json
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from conformance.errors import ManifestError, UnsupportedError
from conformance.expect import Outcome
from conformance.probe import CallResult, ProbeClient
from conformance.provider import ProbeHandle, ProbeSpec
from conformance.providers.local.envoy import DRAIN_TIME_S
from conformance.providers.local.provider import LocalProvider

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Row:
    name: str
    policy: dict[str, Any] | None
    """PeerAuthentication spec in the namespace (None: no policy)."""
    port: int
    caller: str
    """"mesh" (a sidecar, mTLS by auto-mTLS) or "plaintext" (out of the mesh)."""
    outcome: Outcome
    identity: bool
    """The server sees the caller's SPIFFE identity in XFCC."""


WORKLOAD = {"selector": {"matchLabels": {"app": "server"}}}
MATRIX = [
    Row("no-policy-mesh", None, 8080, "mesh", Outcome.OK, True),
    Row("no-policy-plaintext", None, 8080, "plaintext", Outcome.OK, False),
    Row("strict-mesh", {"mtls": {"mode": "STRICT"}}, 8080, "mesh", Outcome.OK, True),
    Row("strict-plaintext", {"mtls": {"mode": "STRICT"}}, 8080, "plaintext", Outcome.REFUSED, False),
    Row("permissive-mesh", {"mtls": {"mode": "PERMISSIVE"}}, 8080, "mesh", Outcome.OK, True),
    Row("permissive-plaintext", {"mtls": {"mode": "PERMISSIVE"}}, 8080, "plaintext", Outcome.OK, False),
    Row("disable-mesh", {"mtls": {"mode": "DISABLE"}}, 8080, "mesh", Outcome.OK, False),
    Row("disable-plaintext", {"mtls": {"mode": "DISABLE"}}, 8080, "plaintext", Outcome.OK, False),
    Row("port-level-disable-plaintext",
        {**WORKLOAD, "mtls": {"mode": "STRICT"}, "portLevelMtls": {"9090": {"mode": "DISABLE"}}},
        9090, "plaintext", Outcome.OK, False),
    Row("port-level-other-port-strict",
        {**WORKLOAD, "mtls": {"mode": "STRICT"}, "portLevelMtls": {"9090": {"mode": "DISABLE"}}},
        8080, "plaintext", Outcome.REFUSED, False),
    Row("port-level-disable-mesh-is-plaintext",
        {**WORKLOAD, "mtls": {"mode": "STRICT"}, "portLevelMtls": {"9090": {"mode": "DISABLE"}}},
        9090, "mesh", Outcome.OK, False),
]


@dataclass
class Workloads:
    namespace: str
    server: ProbeHandle
    mesh: ProbeHandle
    plaintext: ProbeHandle


@pytest.fixture(scope="module")
def workloads(local_mesh: LocalProvider) -> Iterator[Workloads]:
    namespace = f"pa-{secrets.token_hex(3)}"
    server = local_mesh.deploy_probe(ProbeSpec("server", namespace, "cluster1", ports=(8080, 9090)))
    mesh = local_mesh.deploy_probe(ProbeSpec("client", namespace, "cluster2", service_account="frontend"))
    plaintext = local_mesh.deploy_probe(ProbeSpec("outsider", namespace, "cluster1", in_mesh=False))
    yield Workloads(namespace, server, mesh, plaintext)
    local_mesh.delete_namespace(namespace)


def _policy(namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "policy", "namespace": namespace}, "spec": spec}


def _matches(result: CallResult, outcome: Outcome) -> bool:
    if outcome is Outcome.OK:
        return all(r.ok and r.echo for r in result.responses)
    return all(r.status == 0 for r in result.responses)


@pytest.mark.parametrize("row", MATRIX, ids=[r.name for r in MATRIX])
def test_matrix(local_mesh: LocalProvider, workloads: Workloads, row: Row) -> None:
    clusters = ["cluster1", "cluster2"]
    doc = _policy(workloads.namespace, row.policy) if row.policy else None
    if doc:
        local_mesh.apply([doc], clusters)
    try:
        caller = workloads.mesh if row.caller == "mesh" else workloads.plaintext
        expected = [f"spiffe://cluster.local/ns/{workloads.namespace}/sa/frontend"] if row.identity else []

        def holds(result: CallResult) -> bool:
            if not _matches(result, row.outcome):
                return False
            return row.outcome is not Outcome.OK or {tuple(r.client_cert_uris) for r in result.responses} == {
                tuple(expected)}

        deadline = time.monotonic() + DRAIN_TIME_S + 1.0
        result = ProbeClient(local_mesh, 2, 30).call(caller, workloads.server.url(port=row.port), count=4)
        while not holds(result) and time.monotonic() < deadline:
            time.sleep(0.1)
            result = ProbeClient(local_mesh, 2, 30).call(caller, workloads.server.url(port=row.port), count=4)
        assert holds(result), result.summary()
    finally:
        if doc:
            local_mesh.delete([doc], clusters)


def test_invalid_and_unsupported_config_is_refused_by_name(local_mesh: LocalProvider, workloads: Workloads) -> None:
    typo = _policy(workloads.namespace, {"mtls": {"mdoe": "STRICT"}})
    with pytest.raises(ManifestError, match=r"unknown field 'spec.mtls.mdoe'"):
        local_mesh.apply([typo], ["cluster1"])
    unsupported = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                   "metadata": {"name": "d", "namespace": workloads.namespace},
                   "spec": {"host": "server", "trafficPolicy": {"tls": {"mode": "SIMPLE"}}}}
    with pytest.raises(UnsupportedError, match="supported by Istio, not by the local mesh"):
        local_mesh.apply([unsupported], ["cluster1"])


def test_destination_rule_tls_overrides_auto_mtls(local_mesh: LocalProvider, workloads: Workloads) -> None:
    """DestinationRule DISABLE sends plaintext to a STRICT server: refused (Istio: the DR wins on the client)."""
    strict = _policy(workloads.namespace, {"mtls": {"mode": "STRICT"}})
    plain = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
             "metadata": {"name": "server", "namespace": workloads.namespace},
             "spec": {"host": "server", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}}
    local_mesh.apply([strict, plain], ["cluster1", "cluster2"])
    try:
        deadline = time.monotonic() + DRAIN_TIME_S + 1.0
        result = ProbeClient(local_mesh, 2, 30).call(workloads.mesh, workloads.server.url(), count=3)
        while any(r.status != 503 for r in result.responses) and time.monotonic() < deadline:
            result = ProbeClient(local_mesh, 2, 30).call(workloads.mesh, workloads.server.url(), count=3)
        assert all(r.status == 503 for r in result.responses), result.summary()
    finally:
        local_mesh.delete([strict, plain], ["cluster1", "cluster2"])


# -- what Istio's inbound listener does with XFCC and with TLS that is not a sidecar's ---------------------


def _apply_and_settle(mesh: LocalProvider, docs: list[dict[str, Any]]) -> None:
    mesh.apply(docs, ["cluster1", "cluster2"])
    time.sleep(DRAIN_TIME_S + 0.5)  # connections kept alive from an earlier test drain to the new chains


def _inbound_chains(mesh: LocalProvider, server: ProbeHandle) -> dict[str, dict[str, Any]]:
    dump = json.loads(mesh.proxy_admin(server, "/config_dump?resource=dynamic_listeners"))
    for entry in dump["configs"]:
        listener = entry["active_state"]["listener"]
        if listener["name"] == "virtualInbound":
            return {chain["name"]: chain for chain in listener["filter_chains"]}
    raise AssertionError("the sidecar has no virtualInbound listener")


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE", "DISABLE"])
def test_every_inbound_chain_handles_xfcc_as_istio(local_mesh: LocalProvider, workloads: Workloads,
                                                   mode: str) -> None:
    """listener_inbound.go buildSidecarInboundHTTPOpts: APPEND_FORWARD and subject/URI/DNS, on every chain."""
    policy = _policy(workloads.namespace, {"mtls": {"mode": mode}})
    _apply_and_settle(local_mesh, [policy])
    try:
        chains = _inbound_chains(local_mesh, workloads.server)
        assert chains, "no inbound filter chains"
        for name, chain in chains.items():
            hcm = chain["filters"][0]["typed_config"]
            assert hcm["forward_client_cert_details"] == "APPEND_FORWARD", name
            assert hcm["set_current_client_cert_details"] == {"subject": True, "uri": True, "dns": True}, name
    finally:
        local_mesh.delete([policy], ["cluster1", "cluster2"])


def test_a_plaintext_caller_cannot_forge_an_identity(local_mesh: LocalProvider, workloads: Workloads) -> None:
    """On a plaintext connection Envoy removes the caller's XFCC (APPEND_FORWARD only appends over mTLS)."""
    forged = {"x-forwarded-client-cert": "By=spiffe://cluster.local/ns/x/sa/y;URI=spiffe://cluster.local/ns/x/sa/admin"}
    result = ProbeClient(local_mesh, 2, 30).call(workloads.plaintext, workloads.server.url(), 3, headers=forged)
    assert result.statuses() == {200: 3}, result.summary()
    assert all("x-forwarded-client-cert" not in r.request_headers for r in result.responses), result.summary()


def _tls_hello(address: str, alpn: list[str]) -> str:
    """Open TLS 1.3 (no client certificate) to ``address``: "handshake" when the server completed a handshake
    (it presented its certificate; without a client certificate it refuses the request afterwards), "closed"
    when the server closed the connection without one (no filter chain matched)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(alpn)
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                return "handshake" if tls.getpeercert(binary_form=True) else "closed"
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return "closed"


@pytest.mark.parametrize(
    ("mode", "alpn", "expected"),
    [
        ("PERMISSIVE", ["istio-peer-exchange", "istio"], "handshake"),
        ("PERMISSIVE", ["istio-http/1.1"], "handshake"),
        ("PERMISSIVE", ["h2", "http/1.1"], "closed"),
        ("PERMISSIVE", [], "closed"),
        ("STRICT", ["h2", "http/1.1"], "handshake"),
        ("DISABLE", ["istio-peer-exchange", "istio"], "closed"),
    ],
    ids=["permissive-sidecar-alpn", "permissive-istio-http", "permissive-plain-https", "permissive-no-alpn",
         "strict-any-tls", "disable-no-tls"],
)
def test_which_tls_reaches_the_mtls_chain(local_mesh: LocalProvider, workloads: Workloads, mode: str,
                                          alpn: list[str], expected: str) -> None:
    """filterchain_options.go, for an HTTP port (every probe port is named http*): PERMISSIVE terminates only TLS
    that offers one of Istio's ALPN values (allIstioMtlsALPNs); other TLS matches no chain, so the connection
    is closed (Istio passes such TLS through to the app only on ports of protocol TCP or unnamed); STRICT
    terminates any TLS; DISABLE has only a plaintext chain."""
    policy = _policy(workloads.namespace, {"mtls": {"mode": mode}})
    _apply_and_settle(local_mesh, [policy])
    try:
        address = f"{workloads.server.instances[0].address}:8080"
        assert _tls_hello(address, alpn) == expected
    finally:
        local_mesh.delete([policy], ["cluster1", "cluster2"])


# -- PeerAuthentication edge cases, as Istio reads them --------------------------------------------------


def test_namespace_wide_port_level_mtls_is_refused(local_mesh: LocalProvider, workloads: Workloads) -> None:
    """The CRD's CEL rule "portLevelMtls requires selector" (a selector with at least one label) refuses both,
    as the API server does before any webhook; pkg/config/validation ValidatePeerAuthentication says the same
    ("mesh/namespace peer authentication cannot have port level mTLS") when the rule is not there."""
    for selector in ({}, {"selector": {"matchLabels": {}}}):
        message = "portLevelMtls requires selector"
        policy = _policy(workloads.namespace, {**selector, "mtls": {"mode": "STRICT"},
                                               "portLevelMtls": {"9090": {"mode": "DISABLE"}}})
        try:
            with pytest.raises(ManifestError, match=message):
                local_mesh.apply([policy], ["cluster1"])
        finally:
            local_mesh.delete([policy], ["cluster1"])  # in case it was accepted


def test_empty_match_labels_is_a_namespace_policy(local_mesh: LocalProvider, workloads: Workloads) -> None:
    """policy_applier.go ComposePeerAuthentication: a selector without labels is namespace-level, so the
    workload policy still wins over it even though it is older."""
    empty = {**_policy(workloads.namespace, {"selector": {"matchLabels": {}}, "mtls": {"mode": "DISABLE"}}),
             "metadata": {"name": "empty", "namespace": workloads.namespace}}
    strict = _policy(workloads.namespace, {**WORKLOAD, "mtls": {"mode": "STRICT"}})
    local_mesh.apply([empty], ["cluster1", "cluster2"])
    _apply_and_settle(local_mesh, [strict])
    try:
        refused = ProbeClient(local_mesh, 2, 30).call(workloads.plaintext, workloads.server.url(), 3)
        assert refused.statuses() == {0: 3}, refused.summary()
    finally:
        local_mesh.delete([empty, strict], ["cluster1", "cluster2"])


def test_a_selector_in_the_root_namespace_is_ignored(local_mesh: LocalProvider) -> None:
    """ComposePeerAuthentication takes a root-namespace policy with a selector neither as mesh- nor as
    workload-level: it changes nothing."""
    namespace = f"pa-root-{secrets.token_hex(3)}"
    marker = {"pa-root": secrets.token_hex(3)}
    server = local_mesh.deploy_probe(ProbeSpec("server", namespace, "cluster1", labels=marker))
    outsider = local_mesh.deploy_probe(ProbeSpec("outsider", namespace, "cluster1", in_mesh=False))
    policy = {**_policy("istio-system", {"selector": {"matchLabels": marker}, "mtls": {"mode": "STRICT"}}),
              "metadata": {"name": f"root-{marker['pa-root']}", "namespace": "istio-system"}}
    local_mesh.apply([policy], ["cluster1", "cluster2"])
    try:
        served = ProbeClient(local_mesh, 2, 30).call(outsider, server.url(), 3)
        assert served.statuses() == {200: 3}, served.summary()
    finally:
        local_mesh.delete([policy], ["cluster1", "cluster2"])
        local_mesh.delete_namespace(namespace)
