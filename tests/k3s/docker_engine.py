"""A recording Docker engine: the Docker Engine API on 127.0.0.1, answering the calls testcontainers and docker-py
make for the k3s provider, and recording each one (method, path, query, JSON body).

It is the one seam of the k3s tests: everything above it is real (meshconf's k3s provider, testcontainers'
K3SContainer, Network and Ryuk reaper, docker-py's HTTP client). It keeps just enough state to answer
consistently: images present, networks and containers created (with the create request's own fields), execs.
A container of the Ryuk image publishes port 8080 on a listener of this engine, which records what the reaper
is told to reap. Nothing is ever run.
"""

from __future__ import annotations

import io
import json
import re
import socket
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API = "1.45"
K3S_READY = b"I1231 Node controller sync successful\n"


@dataclass
class Call:
    method: str
    path: str
    """Without the /v1.xx prefix."""
    query: dict[str, list[str]]
    body: Any


@dataclass
class Exec:
    container: str
    cmd: list[str]
    exit_code: int = 0
    output: bytes = b""


@dataclass
class Engine:
    """State and answers; :class:`Server` speaks HTTP for it."""

    images: set[str] = field(default_factory=set)
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    execs: dict[str, Exec] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    reaper_lines: list[str] = field(default_factory=list)
    ryuk_port: int = 0
    exec_answer: Callable[[str, list[str]], tuple[int, bytes]] = lambda _name, _cmd: (0, b"")
    operating_system: str = "Ubuntu 24.04.3 LTS"
    fail_start: set[str] = field(default_factory=set)
    """Container names whose start fails (the daemon's 500)."""
    _ids: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def new_id(self) -> str:
        with self._lock:
            self._ids += 1
            return f"{self._ids:064x}"

    def container(self, key: str) -> dict[str, Any] | None:
        return self.containers.get(key) or next((c for c in self.containers.values() if c["Name"] == f"/{key}"),
                                                None)

    def created(self, image: str | None = None) -> list[dict[str, Any]]:
        """Every container create request's body (with ``name``), in order; of ``image`` if given."""
        return [{**c.body, "name": c.query.get("name", [""])[0]} for c in self.calls
                if c.method == "POST" and c.path == "/containers/create"
                and (image is None or c.body.get("Image") == image)]

    def exec_commands(self) -> list[tuple[str, list[str]]]:
        return [(self.containers[e.container]["Name"].lstrip("/"), e.cmd) for e in self.execs.values()]


def _frames(data: bytes, stream: int = 1) -> bytes:
    """Docker's multiplexed stream framing (non-TTY): 8-byte header per frame."""
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data if data else b""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    engine: Engine

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ------------------------------------------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any = None, raw: bytes | None = None,
              content_type: str = "application/json") -> None:
        data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, what: str) -> None:
        self._send(404, {"message": f"No such {what}"})

    def _handle(self, method: str) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parsed.path)
        path = re.sub(r"^/v1\.\d+", "", path)
        query = urllib.parse.parse_qs(parsed.query)
        raw = self._body()
        body: Any = None
        if raw and (self.headers.get("Content-Type") or "").startswith("application/json"):
            body = json.loads(raw)
        engine = self.engine
        engine.calls.append(Call(method, path, query, body))
        route = getattr(self, f"_{method.lower()}", None)
        if route is None or not route(path, query, body):
            self._send(404, {"message": f"page not found: {method} {path}"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    # -- routes (True when answered) -----------------------------------------------------------------------

    def _get(self, path: str, query: dict[str, list[str]], _body: Any) -> bool:
        engine = self.engine
        if path in ("/version", "/_ping"):
            self._send(200, {"ApiVersion": API, "Version": "27.5.1", "Os": "linux", "Arch": "amd64"})
        elif path == "/info":
            self._send(200, {"ServerVersion": "27.5.1", "OperatingSystem": engine.operating_system})
        elif path == "/networks":
            wanted = json.loads(query.get("filters", ["{}"])[0]).get("name", [])
            self._send(200, [n for n in engine.networks.values()
                             if not wanted or any(w in n["Name"] for w in wanted)])
        elif path.startswith("/networks/"):
            network = engine.networks.get(path.split("/")[2])
            self._send(200, network) if network else self._not_found("network")
        elif path.startswith("/images/") and path.endswith("/json"):
            name = path[len("/images/"):-len("/json")]
            if name in engine.images or re.fullmatch(r"(sha256:)?[0-9a-f]{12,64}", name):
                self._send(200, {"Id": f"sha256:{abs(hash(name)):064x}"[:71], "RepoTags": [name]})
            else:
                self._not_found(f"image: {name}")
        elif path.startswith("/images/") and path.endswith("/get"):
            self._send(200, raw=_image_archive(path[len("/images/"):-len("/get")]),
                       content_type="application/x-tar")
        elif path == "/containers/json":
            self._send(200, [{"Id": cid, "Names": [c["Name"]], "Image": c["Config"]["Image"],
                              "State": c["State"]["Status"], "Labels": c["Config"]["Labels"]}
                             for cid, c in engine.containers.items()])
        elif re.fullmatch(r"/containers/[^/]+/json", path):
            container = engine.container(path.split("/")[2])
            self._send(200, container) if container else self._not_found("container")
        elif re.fullmatch(r"/containers/[^/]+/logs", path):
            container = engine.container(path.split("/")[2])
            if container is None:
                return self._not_found("container") or True
            logs = K3S_READY if container["Config"]["Image"].endswith(("k3s:v1.34.11-k3s1",)) else b""
            self._send(200, raw=_frames(logs), content_type="application/vnd.docker.multiplexed-stream")
        elif re.fullmatch(r"/exec/[^/]+/json", path):
            run = engine.execs.get(path.split("/")[2])
            self._send(200, {"ExitCode": run.exit_code, "Running": False}) if run else self._not_found("exec")
        else:
            return False
        return True

    def _head(self, path: str, query: dict[str, list[str]], body: Any) -> bool:
        return self._get(path, query, body)

    def _post(self, path: str, query: dict[str, list[str]], body: Any) -> bool:
        engine = self.engine
        if path == "/networks/create":
            nid = engine.new_id()
            engine.networks[nid] = {"Id": nid, "Name": body["Name"], "Driver": body.get("Driver", "bridge"),
                                    "IPAM": body.get("IPAM") or {"Config": []}, "Labels": body.get("Labels") or {}}
            self._send(201, {"Id": nid, "Warning": ""})
        elif path == "/images/create":
            image = f"{query['fromImage'][0]}:{query.get('tag', ['latest'])[0]}"
            engine.images.add(image)
            self._send(200, raw=json.dumps({"status": f"Downloaded newer image for {image}"}).encode() + b"\n")
        elif path == "/build":
            engine.images.add(query["t"][0])
            self._send(200, raw=json.dumps({"aux": {"ID": "sha256:" + "b" * 64}}).encode() + b"\n"
                       + json.dumps({"stream": "Successfully built " + "b" * 12 + "\n"}).encode() + b"\n")
        elif path == "/containers/create":
            return self._create(query, body)
        elif re.fullmatch(r"/containers/[^/]+/start", path):
            container = engine.container(path.split("/")[2])
            if container is None:
                return self._not_found("container") or True
            if container["Name"].lstrip("/") in engine.fail_start:
                self._send(500, {"message": "failed to create task for container: cgroup mountpoint does not exist"})
                return True
            container["State"] = {"Status": "running", "Running": True}
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif re.fullmatch(r"/containers/[^/]+/exec", path):
            container = engine.container(path.split("/")[2])
            if container is None:
                return self._not_found("container") or True
            eid = engine.new_id()
            engine.execs[eid] = Exec(container["Id"], list(body["Cmd"]))
            self._send(201, {"Id": eid})
        elif re.fullmatch(r"/exec/[^/]+/start", path):
            run = engine.execs[path.split("/")[2]]
            run.exit_code, run.output = engine.exec_answer(engine.containers[run.container]["Name"].lstrip("/"),
                                                           run.cmd)
            # docker-py reads the frames from the raw socket after the headers: let the headers arrive alone
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.docker.raw-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.flush()
            time.sleep(0.05)
            self.wfile.write(_frames(run.output))
            self.wfile.flush()
            self.close_connection = True
        else:
            return False
        return True

    def _create(self, query: dict[str, list[str]], body: dict[str, Any]) -> bool:
        engine = self.engine
        name = query.get("name", [f"auto-{len(engine.containers)}"])[0]
        if engine.container(name) is not None:
            self._send(409, {"message": f'Conflict. The container name "/{name}" is already in use'})
            return True
        if body["Image"] not in engine.images:
            self._not_found(f"image: {body['Image']}")
            return True
        cid = engine.new_id()
        networks = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
        ports = {}
        for port in body.get("ExposedPorts") or {}:
            host_port = engine.ryuk_port if "ryuk" in body["Image"] and port == "8080/tcp" else 0
            ports[port] = [{"HostIp": "0.0.0.0", "HostPort": str(host_port)}]
        engine.containers[cid] = {
            "Id": cid, "Name": f"/{name}", "State": {"Status": "created", "Running": False},
            "Config": {"Image": body["Image"], "Cmd": body.get("Cmd"), "Env": body.get("Env") or [], "Tty": False,
                       "Labels": body.get("Labels") or {}, "Hostname": body.get("Hostname")},
            "HostConfig": body.get("HostConfig") or {},
            "NetworkSettings": {"Ports": ports, "Networks": {
                net: {"IPAddress": (cfg.get("IPAMConfig") or {}).get("IPv4Address", ""), "Gateway": ""}
                for net, cfg in networks.items()}},
        }
        self._send(201, {"Id": cid, "Warnings": []})
        return True

    def _delete(self, path: str, query: dict[str, list[str]], _body: Any) -> bool:
        engine = self.engine
        if path.startswith("/containers/"):
            container = engine.container(path.split("/")[2])
            if container is None:
                return self._not_found("container") or True
            del engine.containers[container["Id"]]
        elif path.startswith("/networks/"):
            key = path.split("/")[2]
            network = engine.networks.get(key) or next((n for n in engine.networks.values() if n["Name"] == key),
                                                        None)
            if network is None:
                return self._not_found("network") or True
            del engine.networks[network["Id"]]
        else:
            return False
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True


def _image_archive(name: str) -> bytes:
    """A small `docker save` archive (a manifest naming the image), enough to be written to a file."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = json.dumps([{"RepoTags": [name]}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class Server:
    """The engine on 127.0.0.1 (``url`` is a DOCKER_HOST), and Ryuk's port beside it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        handler = type("BoundHandler", (Handler,), {"engine": engine})
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.ryuk = socket.socket()
        self.ryuk.bind(("127.0.0.1", 0))
        self.ryuk.listen(4)
        engine.ryuk_port = self.ryuk.getsockname()[1]
        self._threads = [threading.Thread(target=self.http.serve_forever, daemon=True),
                         threading.Thread(target=self._reaper, daemon=True)]

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.http.server_address[1]}"

    def _reaper(self) -> None:
        while True:
            try:
                connection, _ = self.ryuk.accept()
            except OSError:
                return
            with connection:
                data = b""
                connection.settimeout(5)
                try:
                    while not data.endswith(b"\n"):
                        chunk = connection.recv(1024)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass
                self.engine.reaper_lines += [line for line in data.decode().splitlines() if line]
                connection.sendall(b"ACK\n")

    def __enter__(self) -> Server:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.ryuk.close()


def iter_calls(engine: Engine, method: str, pattern: str) -> Iterator[Call]:
    return (c for c in engine.calls if c.method == method and re.fullmatch(pattern, c.path))
