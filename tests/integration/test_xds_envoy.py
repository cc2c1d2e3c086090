"""The ADS server against one real Envoy, without a mesh around it: ACK, NACK with Envoy's own words, and
Envoy keeping its last good config when it rejects a new one or loses its control plane."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import ConfigNotApplied
from conformance.providers.local.addresses import AddressPlan, claim_slot
from conformance.providers.local.ads import ControlPlane, EventLoopThread
from conformance.providers.local.envoy import EnvoyProxy, XdsSnapshot, any_config, envoy_binary
from conformance.providers.local.xds import Converter, ProxyResources, split

pytestmark = pytest.mark.integration

_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
PORT = 8080


@dataclass
class Rig:
    plane: ControlPlane
    envoy: EnvoyProxy
    process: subprocess.Popen[bytes]
    address: str

    def get(self, host: str = "a.example") -> int:
        request = urllib.request.Request(f"http://{self.address}:{PORT}/", headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def push(self, resources: ProxyResources, reason: str = "config") -> None:
        self.plane.update({self.envoy.node_id: (self.envoy.name, resources)}, reason).wait(10)


def listener(address: str, *vhosts: tuple[str, int]) -> ProxyResources:
    """A listener whose route config answers each (domain, status) with a direct response."""
    route = {"name": "http.8080", "virtual_hosts": [
        {"name": f"vh{i}", "domains": [domain], "routes": [{"match": {"prefix": "/"},
                                                             "direct_response": {"status": status}}]}
        for i, (domain, status) in enumerate(vhosts)]}
    router = any_config("envoy.extensions.filters.http.router.v3.Router")
    hcm: dict[str, Any] = any_config(_HCM, stat_prefix="t", route_config=route, http_filters=[{
        "name": "envoy.filters.http.router", "typed_config": router}])
    return split(XdsSnapshot(listeners=[{
        "name": "0.0.0.0_8080", "address": {"socket_address": {"address": address, "port_value": PORT}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}]}]))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    slot, lock = claim_slot()
    plan = AddressPlan(["c1"], slot)
    loop = EventLoopThread()
    plane = ControlPlane("c1", plan.infrastructure("c1"), loop, Converter())
    address = plan.infrastructure("c1")
    node = {"id": f"router~{address}~gw.istio-system~istio-system.svc.cluster.local", "cluster": "gw.istio-system"}
    envoy = EnvoyProxy("gw", tmp_path / "envoy", (address, 15000), node, (plane.address, plane.port))
    envoy.prepare()
    process: subprocess.Popen[bytes] | None = None
    try:
        plane.start()
        first = listener(address, ("a.example", 200))
        push = plane.update({envoy.node_id: ("gw", first)}, "start", await_connect=True)
        with open(tmp_path / "envoy.log", "wb") as log:
            process = subprocess.Popen(envoy.argv(envoy_binary(None)), stdout=log, stderr=subprocess.STDOUT)
        push.wait(30, alive=lambda: process is not None and process.poll() is None)
        envoy.wait_listening(first.listen_addresses(), 10)
        yield Rig(plane, envoy, process, address)
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)
        plane.stop()
        loop.close()
        lock.close()


def test_an_acked_push_is_served_at_once(rig: Rig) -> None:
    assert rig.get() == 200
    rig.push(listener(rig.address, ("a.example", 200), ("b.example", 418)))
    assert rig.get("b.example") == 418  # apply has returned: the route is there already
    versions = rig.plane.status()["proxies"]["gw"]["versions"]
    dump = rig.envoy.admin_get("/config_dump?resource=dynamic_route_configs")
    assert f'"version_info": "{versions["RDS"]}"' in dump


def test_a_malformed_config_is_nacked_with_envoys_reason_word_for_word(rig: Rig, tmp_path: Path) -> None:
    malformed = listener(rig.address, ("a.example", 200), ("a.example", 503))  # one domain twice
    with pytest.raises(ConfigNotApplied) as raised:
        rig.push(malformed)
    logged = _rejection(tmp_path / "envoy.log")
    assert "Duplicate entry of domain a.example" in logged
    assert str(raised.value).endswith(f"(NACK): RDS: {logged}")
    assert rig.get() == 200  # Envoy keeps its last good config
    assert rig.plane.status()["proxies"]["gw"]["nacks"] == {"RDS": logged}
    rig.push(listener(rig.address, ("a.example", 200), ("b.example", 418)))  # fixed: ACKed, NACK cleared
    assert rig.get("b.example") == 418
    assert rig.plane.status()["proxies"]["gw"]["nacks"] == {}


def test_envoy_keeps_serving_without_its_control_plane_and_catches_up_after(rig: Rig) -> None:
    rig.plane.stop()
    assert rig.get() == 200
    rig.plane.update({rig.envoy.node_id: ("gw", listener(rig.address, ("a.example", 201)))}, "config").wait(1)
    assert rig.get() == 200  # nobody to push to
    rig.plane.start()
    deadline = time.monotonic() + 40  # Envoy's own reconnect backoff: 0.5 s doubling, jittered
    while rig.get() != 201 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rig.get() == 201
    assert rig.plane.status()["proxies"]["gw"]["connects"] == 2


def _rejection(log: Path) -> str:
    """What Envoy logged as the reason it rejected a route config update."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = re.search(r"RouteConfiguration rejected: (.*)$", log.read_text(errors="replace"), re.MULTILINE)
        if found:
            return found.group(1).strip()
        time.sleep(0.05)
    raise AssertionError(f"Envoy logged no rejection:\n{log.read_text(errors='replace')[-2000:]}")
