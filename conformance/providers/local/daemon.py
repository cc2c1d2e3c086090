"""The local mesh process: owns every Envoy and probe, serves a small control API on 127.0.0.1.

Started by ``LocalProvider.up()`` as ``python -m conformance.providers.local.daemon RUN_DIR``. Every pytest
worker is a client of this API, as every worker is a client of the kube-apiserver with real clusters. The
API needs the bearer token from the run's state file (0600).

It stops (and stops everything it started) on ``POST /shutdown``, SIGTERM/SIGINT, or when the process that
owns the run exits (``owner_pid`` in the request), so a crashed test run cannot leak a mesh.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from conformance.certs import RootStep
from conformance.config import RunConfig
from conformance.errors import ConformanceError, UsageError
from conformance.provider import ProbeSpec
from conformance.providers.local.defects import parse_defects
from conformance.providers.local.dns import NameTable
from conformance.providers.local.envoy import envoy_version
from conformance.providers.local.lifecycle import Lifecycle
from conformance.providers.local.model import Workload
from conformance.providers.local.runtime import MeshRuntime
from conformance.providers.local.settings import LocalSettings
from conformance.runstate import RunState
from conformance.topology import load_topology

__all__ = ["main"]


class MeshServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, runtime: MeshRuntime, token: str, state: RunState) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.runtime = runtime
        self.lifecycle = Lifecycle(runtime)
        """Stop, start and restart control planes, remote secrets, the root migration."""
        self.token = token
        self.state = state
        self.stopping = threading.Event()
        self.names: dict[str, NameTable] = {}
        """Each cluster's DNS name table; replaced whole after every change, read without the lock."""

    def refresh_names(self) -> None:
        """istio-agent's name table comes from its control plane (pushed with the config): while that control
        plane is down, its proxies' table stays as it was."""
        names = dict(self.names)
        for cluster in self.runtime.topology.cluster_names:
            plane = self.runtime.control_planes[self.runtime.topology.cluster(cluster).config_cluster]
            if plane.up or cluster not in names:
                names[cluster] = NameTable.of(self.runtime.view(cluster))
        self.names = names


class Handler(BaseHTTPRequestHandler):
    server: MeshServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} api {format % args}\n")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self._send(401, {"error": "missing or wrong token (read it from the run's state file)"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        if (method, self.path) == ("POST", "/shutdown"):
            self.server.stopping.set()
            self._send(200, {})
            return
        if (method, self.path) == ("POST", "/dns"):  # istio-agent answers without waiting for istiod
            table = self.server.names.get(str(body.get("cluster")))
            if table is None:
                self._send(400, {"error": f"no cluster {body.get('cluster')!r}", "type": "UsageError"})
                return
            self._send(200, {"resolves": table.resolves(str(body["host"]), str(body["namespace"]))})
            return
        key = (method, self.path.split("?")[0])
        route, lifecycle_route = ROUTES.get(key), LIFECYCLE_ROUTES.get(key)
        if route is None and lifecycle_route is None:
            self._send(404, {"error": f"no such API: {method} {self.path}"})
            return
        try:
            runtime = self.server.runtime
            with runtime.lock:
                try:
                    if route is not None:
                        result = route(runtime, body)
                    else:
                        assert lifecycle_route is not None
                        result = lifecycle_route(self.server.lifecycle, body)
                finally:
                    self.server.refresh_names()
            self._send(200, result)
        except ConformanceError as exc:
            self._send(400 if exc.exit_code == 2 else 500, {"error": str(exc), "type": type(exc).__name__})
        except Exception as exc:
            traceback.print_exc()
            self._send(500, {"error": f"{type(exc).__name__}: {exc}", "type": "ProviderError"})

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _status(runtime: MeshRuntime, _: dict[str, Any]) -> Any:
    return {"ready": True, "clusters": list(runtime.topology.cluster_names)}


def _apply(runtime: MeshRuntime, body: dict[str, Any]) -> Any:
    runtime.apply(body["docs"], body["clusters"])
    return {}


def _delete(runtime: MeshRuntime, body: dict[str, Any]) -> Any:
    runtime.delete(body["docs"], body["clusters"])
    return {}


def _mesh_config(runtime: MeshRuntime, body: dict[str, Any]) -> Any:
    return {"undo": runtime.set_mesh_config(body["patch"], body["clusters"])}


def _spec(data: dict[str, Any]) -> ProbeSpec:
    return ProbeSpec(**{**data, "ports": tuple(data.get("ports") or (8080,))})


def _instances(runtime: MeshRuntime, workloads: list[Workload]) -> Any:
    return {"instances": [
        {"name": w.name, "address": w.addresses.pod_ip, "zone": w.zone, "extra": runtime.instance_details(w)}
        for w in workloads
    ]}


def _deploy(runtime: MeshRuntime, body: dict[str, Any]) -> Any:
    return _instances(runtime, runtime.deploy(_spec(body["spec"])))


def _scale(runtime: MeshRuntime, body: dict[str, Any]) -> Any:
    return _instances(runtime, runtime.scale(_spec(body["spec"]), int(body["replicas"])))


def _kill(runtime: MeshRuntime, body: dict[str, Any]) -> Any:
    runtime.kill(body["name"])
    return {}


def _gateway(runtime: MeshRuntime, body: dict[str, Any]) -> Any:
    if "up" in body:
        runtime.set_gateway(body["cluster"], body["kind"], bool(body["up"]))
    return {"address": runtime.gateway_address(body["cluster"], body["kind"])}


def _link(runtime: MeshRuntime, body: dict[str, Any]) -> Any:
    assert runtime.links is not None
    if body.get("reset"):
        runtime.links.reset()
    else:
        runtime.links.set(body["a"], body["b"], body.get("rtt_ms"), body.get("cut"))
    return {"links": runtime.links.describe()}


def _control_plane(lifecycle: Lifecycle, body: dict[str, Any]) -> Any:
    """``up``: stop or start the cluster's control plane; ``restart``: restart it; ``reset``: every control plane
    up and every broken remote secret restored; else: its status."""
    if body.get("reset"):
        lifecycle.reset()
        return {}
    if body.get("restart"):
        return lifecycle.restart_control_plane(body["cluster"])
    if "up" in body:
        return lifecycle.set_control_plane(body["cluster"], bool(body["up"]))
    return lifecycle.status(body["cluster"])


def _remote_secret(lifecycle: Lifecycle, body: dict[str, Any]) -> Any:
    """``action`` rotate, break (``how``: unreachable, rejected) or restore ``cluster``'s secret for ``remote``."""
    cluster, remote = str(body["cluster"]), str(body["remote"])
    action = body.get("action")
    if action == "rotate":
        return lifecycle.rotate_remote_secret(cluster, remote)
    if action == "break":
        return lifecycle.break_remote_secret(cluster, remote, str(body.get("how") or "unreachable"))
    if action == "restore":
        return lifecycle.restore_remote_secret(cluster, remote)
    raise UsageError(f"remote secret action must be rotate, break or restore, not {action!r}")


def _root_migration(lifecycle: Lifecycle, body: dict[str, Any]) -> Any:
    try:
        step = RootStep(str(body["step"]))
    except ValueError:
        raise UsageError(f"root migration step must be one of {', '.join(RootStep)}, not {body['step']!r}") from None
    roots = lifecycle.migrate_root(step)
    return {"oldRoot": roots.old_root.decode(), "newRoot": roots.new_root.decode(), "bundle": roots.bundle.decode()}


def _rotate(runtime: MeshRuntime, body: dict[str, Any]) -> Any:
    return {"serials": {k: f"{v:x}" for k, v in runtime.rotate_certificates(body.get("namespace")).items()}}


def _delete_namespace(runtime: MeshRuntime, body: dict[str, Any]) -> Any:
    runtime.delete_namespace(body["namespace"])
    return {}


def _resolve(runtime: MeshRuntime, body: dict[str, Any]) -> Any:
    return {"addresses": runtime.resolve(body["cluster"], body["host"], int(body["port"]))}


def _diagnostics(runtime: MeshRuntime, body: dict[str, Any]) -> Any:
    files = runtime.diagnostics(Path(body["dest"]), body["namespaces"])
    return {"files": [str(f) for f in files]}


def _health(runtime: MeshRuntime, body: dict[str, Any]) -> Any:
    """Processes that died without meshconf stopping or killing them (since ``since``, when given): those of
    ``namespaces``, and gateways (every check goes through them), each with its exit status, its last lines of
    output, and whether the mesh's kubelet started it again."""
    namespaces = set(body.get("namespaces") or ())
    where = {w.name: f"namespace {w.namespace}, cluster {w.cluster.name}" for w in runtime.registry.workloads()
             if w.namespace in namespaces}
    gateways = {p.envoy.name: f"{kind} gateway of cluster {cluster}" for (cluster, kind), p in runtime.gateways.items()}
    where.update(gateways)
    problems = []
    deaths = runtime.kubelet.deaths(body.get("since")) if runtime.kubelet is not None else []
    for death in deaths:
        workload, _, process = death.name.rpartition("/")
        if workload not in where:
            continue
        what = "its Envoy" if workload in gateways else "its sidecar Envoy" if process == "envoy" else "its probe"
        code = death.returncode
        how = (f"was killed by signal {-code} ({signal.Signals(-code).name})" if code is not None and code < 0
               else f"exited with code {code}")
        tail = " | ".join(line.strip() for line in death.tail.splitlines() if line.strip()) or "(no output)"
        problems.append(f"{workload} ({where[workload]}): {what} (pid {death.pid}) {how}, and meshconf did not stop "
                        f"it; its last output: {tail[:400]} ({death.restart})")
    return {"problems": problems}


ROUTES = {
    ("GET", "/status"): _status,
    ("POST", "/apply"): _apply,
    ("POST", "/delete"): _delete,
    ("POST", "/meshconfig"): _mesh_config,
    ("POST", "/probes"): _deploy,
    ("POST", "/probes/scale"): _scale,
    ("POST", "/probes/kill"): _kill,
    ("POST", "/gateways"): _gateway,
    ("POST", "/links"): _link,
    ("POST", "/certificates/rotate"): _rotate,
    ("POST", "/namespaces/delete"): _delete_namespace,
    ("POST", "/resolve"): _resolve,
    ("POST", "/diagnostics"): _diagnostics,
    ("POST", "/health"): _health,
}
LIFECYCLE_ROUTES = {
    ("POST", "/control-planes"): _control_plane,
    ("POST", "/remote-secrets"): _remote_secret,
    ("POST", "/root-migration"): _root_migration,
}


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    run_dir = Path(args[0])
    state = RunState(run_dir)
    request = json.loads((run_dir / "request.json").read_text())
    config = RunConfig.from_dict(request["config"], {"local": LocalSettings})  # as built: not re-validated
    topology = load_topology(request["topology"])
    runtime = MeshRuntime(run_dir, topology, config, parse_defects(config.settings_as(LocalSettings).defects),
                          on_processes=state.record_processes)
    server: MeshServer | None = None
    try:
        print(f"local mesh: Envoy {envoy_version(runtime.binary)} at {runtime.binary}", file=sys.stderr)
        runtime.up()
        server = MeshServer(runtime, request["token"], state)
        server.refresh_names()
        stop = server.stopping
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        threading.Thread(target=server.serve_forever, name="api", daemon=True).start()
        state.update(ready=True, url=f"http://127.0.0.1:{server.server_address[1]}", pid=os.getpid())
        owner = request.get("owner_pid")
        while not stop.wait(0.5):
            if owner and not _alive(owner):
                print(f"local mesh: owner process {owner} is gone; shutting down", file=sys.stderr)
                break
    except ConformanceError as exc:
        state.update(error=str(exc))
        return exc.exit_code
    except Exception as exc:
        traceback.print_exc()
        state.update(error=f"{type(exc).__name__}: {exc}")
        return 3
    finally:
        if server is not None:
            server.shutdown()
        with runtime.lock:
            runtime.down()
        state.update(stopped=True)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    sys.exit(main())
