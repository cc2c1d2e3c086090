"""The probe workload (workloads/probe/probe.py), run as real processes on 127.0.0.1.

Every process a test starts is stopped by PID in a fixture finalizer, also when the test fails.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PROBE = Path(__file__).resolve().parents[2] / "workloads" / "probe" / "probe.py"
HOST = "server.ns1.svc.cluster.local:8080"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Probe:
    process: subprocess.Popen[bytes]
    instance: str
    ports: list[int]
    control_port: int
    log: Path

    @property
    def data(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             port: int | None = None) -> tuple[int, Any, float]:
        """One request on a fresh connection: (status, JSON answer, seconds taken)."""
        connection = http.client.HTTPConnection("127.0.0.1", port or self.ports[0], timeout=30)
        try:
            began = time.perf_counter()
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None, time.perf_counter() - began
        finally:
            connection.close()

    def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        status, answer, _ = self.call(method, path, payload, port=self.control_port)
        return status, answer

    def forward(self, **request: Any) -> Any:
        status, answer = self.control("POST", "/forward", request)
        assert status == 200, answer
        return answer


StartProbe = Callable[..., Probe]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every process a test starts goes here; each is killed by PID afterwards if still running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


@pytest.fixture
def start_probe(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> StartProbe:
    def start(instance: str = "server-v1-abc12", ports: int = 1, extra: list[str] | None = None) -> Probe:
        folder = tmp_path / instance
        folder.mkdir()
        data_ports = [free_port() for _ in range(ports)]
        control_port = free_port()
        ready = folder / "ready"
        log = folder / "probe.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, str(PROBE), "--cluster", "cluster1", "--network", "network1",
                 "--region", "region1", "--zone", "zone1", "--namespace", "ns1", "--service", "server",
                 "--version", "v1", "--instance", instance, "--service-account", "server-sa",
                 "--address", "127.0.0.1", "--ports", ",".join(map(str, data_ports)),
                 "--control-address", "127.0.0.1", "--control-port", str(control_port),
                 "--ready-file", str(ready), *(extra or [])],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            )
        processes.append(process)
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert process.poll() is None, f"probe exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"probe not ready: {log.read_text()}"
            time.sleep(0.01)
        assert ready.read_text() == "ready\n"
        return Probe(process, instance, data_ports, control_port, log)

    return start


@pytest.fixture
def probe(start_probe: StartProbe) -> Probe:
    return start_probe()


# ------------------------------------------------------------------------------------------ data ports


def test_echo_reports_identity_and_request(start_probe: StartProbe) -> None:
    probe = start_probe(ports=2)
    status, echo, _ = probe.call("POST", "/some/path?a=1&b=2", body=b"hello", headers={"X-Test": "one"},
                                 port=probe.ports[1])
    assert status == 200
    assert {k: echo[k] for k in ("cluster", "network", "region", "zone", "namespace", "service", "version",
                                 "instance", "serviceAccount")} == {
        "cluster": "cluster1", "network": "network1", "region": "region1", "zone": "zone1",
        "namespace": "ns1", "service": "server", "version": "v1", "instance": "server-v1-abc12",
        "serviceAccount": "server-sa"}
    assert echo["address"] == f"127.0.0.1:{probe.ports[1]}"
    assert echo["port"] == probe.ports[1]
    assert (echo["method"], echo["path"], echo["query"]) == ("POST", "/some/path", "a=1&b=2")
    assert echo["protocol"] == "HTTP/1.1"
    assert echo["headers"]["x-test"] == "one"
    assert echo["headers"]["host"] == f"127.0.0.1:{probe.ports[1]}"
    assert echo["bodyBytes"] == 5
    assert echo["remoteAddress"].startswith("127.0.0.1:")


def test_raw_keep_alive_chunked_body_repeated_headers_and_connection_close(probe: Probe) -> None:
    chunked = (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Rep: 1\r\nX-Rep: 2\r\n\r\n"
               b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n")
    closing = b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", probe.ports[0]), timeout=5) as sock:
        sock.sendall(chunked + closing)  # pipelined on one connection
        received = b""
        while chunk := sock.recv(65536):  # the probe closes after the second answer
            received += chunk
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 2
    first = json.loads(answers[0].split(b"\r\n\r\n", 1)[1])
    second_head, second_body = answers[1].split(b"\r\n\r\n", 1)
    assert (first["path"], first["bodyBytes"], first["headers"]["x-rep"]) == ("/a", 8, "1,2")
    assert b"Connection: close" in second_head
    assert json.loads(second_body)["path"] == "/b"
    assert json.loads(second_body)["remoteAddress"] == first["remoteAddress"]


def test_query_parameters_shape_the_answer(probe: Probe) -> None:
    status, echo, _ = probe.call("GET", "/?status=418&size=100")
    assert status == 418
    assert echo["padding"] == "x" * 100
    _, _, took = probe.call("GET", "/?delay_ms=200")
    assert took >= 0.19
    status, answer, _ = probe.call("GET", "/?size=lots")
    assert status == 400
    assert "size" in answer["error"]


def test_mode_overrides_status_and_adds_delay(probe: Probe) -> None:
    assert probe.control("POST", "/mode", {"status": 503, "delay_ms": 400}) == (
        200, {"status": 503, "delay_ms": 400})
    assert probe.control("GET", "/mode") == (200, {"status": 503, "delay_ms": 400})
    status, echo, took = probe.call("GET", "/?status=200")
    assert status == 503
    assert echo["instance"] == "server-v1-abc12"  # the JSON body is still sent
    assert took >= 0.39
    probe.control("POST", "/mode", {"status": None, "delay_ms": 0})
    status, _, took = probe.call("GET", "/")
    assert status == 200
    assert took < 0.39


def test_control_health_info_and_log(probe: Probe) -> None:
    assert probe.control("GET", "/healthz") == (200, {"status": "ok"})
    status, info = probe.control("GET", "/info")
    assert (status, info["instance"], info["serviceAccount"], info["ports"]) == (
        200, "server-v1-abc12", "server-sa", probe.ports)
    assert probe.control("GET", "/nowhere")[0] == 404
    assert probe.control("GET", "/forward")[0] == 405
    probe.call("GET", "/data-requests-are-not-logged")
    log = probe.log.read_text()
    assert "control GET /info" in log
    assert "data-requests-are-not-logged" not in log


# ---------------------------------------------------------------------------------------------- forward


def test_forward_reuses_keep_alive_connections_per_slot(start_probe: StartProbe) -> None:
    client, server = start_probe("client"), start_probe("server")
    answer = client.forward(url=f"http://{server.data}/x", count=20, concurrency=4)
    calls = answer["calls"]
    assert [c["index"] for c in calls] == list(range(20))
    assert {c["status"] for c in calls} == {200}
    assert {c["error"] for c in calls} == {None}
    assert len({c["connection"] for c in calls}) == 4
    assert len({json.loads(c["body"])["remoteAddress"] for c in calls}) == 4
    assert all(c["latencyUs"] > 0 for c in calls)
    assert calls[0]["headers"]["content-type"] == "application/json"

    fresh = client.forward(url=f"http://{server.data}/x", count=10, concurrency=2, new_connection=True)
    fresh = fresh["calls"]
    assert len({c["connection"] for c in fresh}) == 10
    assert len({json.loads(c["body"])["remoteAddress"] for c in fresh}) == 10


def test_forward_sends_method_headers_and_body(start_probe: StartProbe) -> None:
    client, server = start_probe("client"), start_probe("server")
    call = client.forward(url=f"http://{server.data}/p?q=1", method="PUT", headers={"X-Who": "me"},
                          body="12345")["calls"][0]
    echo = json.loads(call["body"])
    assert (echo["method"], echo["path"], echo["query"], echo["bodyBytes"]) == ("PUT", "/p", "q=1", 5)
    assert echo["headers"]["x-who"] == "me"
    assert echo["headers"]["host"] == server.data


def test_forward_through_proxy_keeps_host_and_origin_form(start_probe: StartProbe) -> None:
    client, sidecar = start_probe("client"), start_probe("sidecar")
    call = client.forward(url=f"http://{HOST}/hello?x=1", proxy=sidecar.data)["calls"][0]
    assert call["status"] == 200, call
    echo = json.loads(call["body"])
    assert echo["instance"] == "sidecar"
    assert echo["headers"]["host"] == HOST
    assert (echo["path"], echo["query"]) == ("/hello", "x=1")


def test_forward_resolve_round_robins_per_connection(start_probe: StartProbe) -> None:
    client, one, two = start_probe("client"), start_probe("one"), start_probe("two")
    calls = client.forward(url=f"http://{HOST}/", count=6, new_connection=True,
                           resolve={HOST: [one.data, two.data]})["calls"]
    echoes = [json.loads(c["body"]) for c in calls]
    assert [e["instance"] for e in echoes] == ["one", "two"] * 3
    assert {e["headers"]["host"] for e in echoes} == {HOST}


def test_forward_resolve_to_nothing_is_an_unresolved_host(start_probe: StartProbe) -> None:
    client = start_probe("client")
    calls = client.forward(url=f"http://{HOST}/", count=2, resolve={HOST: []})["calls"]
    assert [(c["status"], c["error"]) for c in calls] == [(0, "unresolved host")] * 2


def test_forward_records_timeout_and_refused(start_probe: StartProbe) -> None:
    client, server = start_probe("client"), start_probe("server")
    slow = client.forward(url=f"http://{server.data}/?delay_ms=2000", timeout_ms=200)["calls"][0]
    assert (slow["status"], slow["error"]) == (0, "timeout")
    assert 150_000 <= slow["latencyUs"] < 1_500_000
    refused = client.forward(url=f"http://127.0.0.1:{free_port()}/", count=2)["calls"]
    assert [(c["status"], c["error"], c["connection"]) for c in refused] == [(0, "connection refused", 0)] * 2


def test_forward_rate_paces_call_starts(start_probe: StartProbe) -> None:
    client, server = start_probe("client"), start_probe("server")
    answer = client.forward(url=f"http://{server.data}/", count=50, concurrency=4, rate=100)
    starts = sorted(c["startedUs"] for c in answer["calls"])
    assert answer["durationUs"] >= 450_000
    assert starts[-1] >= 450_000
    assert answer["durationUs"] < 3_000_000
    assert starts[25] >= 200_000  # even, not front-loaded


def test_forward_duration_and_max_duration(start_probe: StartProbe) -> None:
    client, server = start_probe("client"), start_probe("server")
    timed = client.forward(url=f"http://{server.data}/", rate=100, duration_ms=300)
    assert 10 <= len(timed["calls"]) <= 31  # 30 when the machine keeps up
    assert timed["truncated"] is False
    bounded = client.forward(url=f"http://{server.data}/", count=1000, rate=50, max_duration_ms=300)
    assert bounded["truncated"] is True
    assert 3 <= len(bounded["calls"]) <= 16  # 15 when the machine keeps up
    assert bounded["durationUs"] < 1_000_000


def test_a_named_forward_stops_early_on_request(start_probe: StartProbe) -> None:
    client, server = start_probe("client"), start_probe("server")
    answers: list[Any] = []
    holding = threading.Thread(target=lambda: answers.append(client.forward(
        url=f"http://{server.data}/", concurrency=2, rate=20, duration_ms=20_000, name="hold")))
    holding.start()
    time.sleep(0.5)
    assert client.control("POST", "/forward/stop", {"name": "hold"}) == (200, {"stopped": True})
    holding.join(5)
    assert not holding.is_alive() and answers
    calls = answers[0]["calls"]
    assert 3 <= len(calls) <= 15 and answers[0]["durationUs"] < 2_000_000  # far short of its 20 s
    assert {c["connection"] for c in calls} == {1, 2}  # each slot kept its connection to the end
    assert client.control("POST", "/forward/stop", {"name": "hold"}) == (200, {"stopped": False})
    assert client.control("POST", "/forward/stop", {"nom": "x"})[0] == 400


def test_forward_summary(start_probe: StartProbe) -> None:
    client, server = start_probe("client"), start_probe("server")
    server.control("POST", "/mode", {"status": 503})
    answer = client.forward(url=f"http://{server.data}/", count=30, concurrency=3, summary=True)
    assert "calls" not in answer
    assert answer["statuses"] == {"503": 30}
    assert answer["errors"] == {}
    assert len(answer["latenciesUs"]) == len(answer["startedUs"]) == 30
    assert answer["callStatuses"] == [503] * 30
    assert isinstance(answer["cpuUs"], int) and 0 <= answer["cpuUs"] <= 2 * answer["durationUs"]
    assert 1 <= len(answer["sample"]) <= 5
    assert json.loads(answer["sample"][0]["body"])["instance"] == "server"
    refused = client.forward(url=f"http://127.0.0.1:{free_port()}/", count=4, summary=True)
    assert (refused["statuses"], refused["errors"]) == ({"0": 4}, {"connection refused": 4})
    assert refused["callStatuses"] == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        ({"count": 2}, "url must be an http:// URL"),
        ({"url": "https://a:1/"}, "url must be an http:// URL"),
        ({"url": "http://a:1/", "count": 0}, "count must be between 1 and 100000"),
        ({"url": "http://a:1/", "concurrency": 1000}, "concurrency must be between 1 and 256"),
        ({"url": "http://a:1/", "count": "3"}, "count must be an integer"),
        ({"url": "http://a:1/", "colour": "red"}, "unknown field 'colour'"),
        ({"url": "http://a:1/", "proxy": "nohost"}, "proxy must be 'host:port'"),
        ({"url": "http://a:1/", "resolve": {"a:1": "1.2.3.4:5"}}, "resolve must look like"),
        ({"url": "http://a:1/", "duration_ms": 100}, "duration_ms needs rate"),
        ({"url": "http://a:1/", "headers": {"x": "a\r\nb: c"}}, "headers must be"),
    ],
)
def test_forward_rejects_bad_requests(probe: Probe, body: Any, message: str) -> None:
    status, answer = probe.control("POST", "/forward", body)
    assert status == 400
    assert message in answer["error"]
    assert "\n" not in answer["error"]


def test_mode_rejects_bad_requests(probe: Probe) -> None:
    status, answer = probe.control("POST", "/mode", {"status": "503"})
    assert (status, answer) == (400, {"error": "status must be an integer, got '503'"})
    assert probe.control("GET", "/mode") == (200, {"status": None, "delay_ms": 0})


class _Canned(socketserver.BaseRequestHandler):
    """Answers every request on a connection with the response its path names."""

    answers = {
        "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        "/close": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        "/eof": b"HTTP/1.1 200 OK\r\n\r\nuntil-close",
        "/partial": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        "/garbage": b"SPDY/3 oops\r\n\r\n",
    }

    def handle(self) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = self.request.recv(65536)
                if not data:
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            path = head.split(b" ")[1].decode()
            self.request.sendall(self.answers[path])
            if path != "/chunked":
                return


@pytest.fixture
def canned() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Canned)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.mark.parametrize(
    ("path", "body", "error", "reused"),
    [
        ("/chunked", "abcde", None, True),
        ("/close", "ok", None, False),
        ("/eof", "until-close", None, False),
        ("/partial", "", "connection closed", False),
        ("/garbage", "", "bad response: malformed status line 'SPDY/3 oops'", False),
    ],
)
def test_forward_parses_every_response_framing(probe: Probe, canned: str, path: str, body: str,
                                               error: str | None, reused: bool) -> None:
    calls = probe.forward(url=f"http://{canned}{path}", count=3)["calls"]
    assert [(c["body"], c["error"]) for c in calls] == [(body, error)] * 3
    assert (len({c["connection"] for c in calls}) == 1) is reused


# ------------------------------------------------------------------------------------------- lifecycle


def test_sigterm_closes_listeners_and_exits_zero(probe: Probe) -> None:
    idle = socket.create_connection(("127.0.0.1", probe.ports[0]))  # an open keep-alive connection
    try:
        began = time.monotonic()
        probe.process.send_signal(signal.SIGTERM)
        assert probe.process.wait(timeout=5) == 0
        assert time.monotonic() - began < 2
    finally:
        idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", probe.ports[0]), timeout=1).close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ports", "80x"], "not a port number: '80x'"),
        (["--cluster", "c1"], "--network is required (or set PROBE_NETWORK)"),
    ],
)
def test_bad_flags_exit_2_with_one_line(processes: list[subprocess.Popen[bytes]], args: list[str],
                                        message: str) -> None:
    base = [] if "--cluster" in args else ["--cluster", "c", "--network", "n", "--region", "r", "--zone", "z",
                                           "--namespace", "n", "--service", "s", "--version", "v",
                                           "--service-account", "a"]
    process = subprocess.Popen([sys.executable, str(PROBE), *base, *args], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
    processes.append(process)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 2
    assert stderr.decode().count("\n") == 1
    assert message in stderr.decode()
