"""The link relay between the local mesh's clusters, on real sockets (127.0.0.0/8 only, no Envoy).

A cut link must behave as iptables DROP does between kind clusters: new connections get no answer (the
caller's own connect timeout decides), open connections stall and carry on once the link heals; nothing is
reset.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from conformance.providers.local.links import Links


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """An echo server on 127.0.0.1, standing in for a workload in the other cluster."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()
    stop.set()
    thread.join(2)
    server.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := _recv(conn):
            conn.sendall(data)


def _recv(conn: socket.socket) -> bytes:
    try:
        return conn.recv(1024)
    except OSError:
        return b""


@pytest.fixture
def links() -> Iterator[Links]:
    hosts = itertools.count(10)
    relays = Links(lambda cluster: f"127.250.0.{next(hosts)}", default_rtt_ms=0.0)
    yield relays
    relays.close()


def test_a_cut_link_drops_new_connections_unanswered(links: Links, echo: tuple[str, int]) -> None:
    relay = links.relay("cluster1", "cluster2", *echo)
    links.set("cluster1", "cluster2", cut=True)
    started = time.monotonic()
    with pytest.raises(TimeoutError):  # no reset, no refusal: only the caller's own timeout ends the attempt
        socket.create_connection(relay, timeout=0.5)
    assert time.monotonic() - started >= 0.45


def test_open_connections_stall_across_a_cut_and_resume_when_it_heals(links: Links, echo: tuple[str, int]) -> None:
    relay = links.relay("cluster1", "cluster2", *echo)
    with socket.create_connection(relay, timeout=2) as conn:
        conn.sendall(b"before")
        assert conn.recv(100) == b"before"
        links.set("cluster1", "cluster2", cut=True)
        conn.sendall(b"during")
        conn.settimeout(0.3)
        with pytest.raises(TimeoutError):  # held, not delivered and not reset
            conn.recv(100)
        links.set("cluster1", "cluster2", cut=False)
        conn.settimeout(2)
        assert conn.recv(100) == b"during"  # delivered once the link is back, as retransmission would
    with socket.create_connection(relay, timeout=1) as fresh:
        fresh.sendall(b"after")
        assert fresh.recv(100) == b"after"


def test_a_cut_changes_only_its_own_link(links: Links, echo: tuple[str, int]) -> None:
    cut = links.relay("cluster1", "cluster2", *echo)
    other = links.relay("cluster1", "cluster3", *echo)
    links.set("cluster1", "cluster2", cut=True)
    with socket.create_connection(other, timeout=1) as conn:
        conn.sendall(b"x")
        assert conn.recv(10) == b"x"
    assert links.describe()["cluster1<->cluster2"]["cut"] is True
    links.reset()
    with socket.create_connection(cut, timeout=1) as conn:
        conn.sendall(b"y")
        assert conn.recv(10) == b"y"
