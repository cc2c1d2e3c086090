"""The network between the local mesh's clusters: a user-space relay on every cross-cluster path.

``tc netem`` and iptables are not available everywhere (and need root), so the link is emulated here: every
connection from one cluster to another goes through a relay listening on an address of the *calling*
cluster, which forwards to the target and can

- delay every chunk in each direction by half the link's round-trip time (the topology's ``linkRttMs``, or
  what a fault sets), keeping order; Envoy's timers tick in 4 ms steps here, so measured delays run a few ms
  over the configured ones;
- cut the link, as a partition between real clusters does (on kind: iptables DROP in both directions). The
  cut is a blackhole, never a reset:

  * a new connection's SYN goes unanswered, so the caller's connect hangs until its own connect timeout
    (Envoy's ``connect_timeout``; Istio's default is 10 s, a DestinationRule's
    ``connectionPool.tcp.connectTimeout`` sets it). User space cannot drop a SYN, but the kernel does when a
    listening socket's accept queue is full: the relay stops accepting, shrinks the backlog to 0 and parks
    one filler connection of its own in the queue;
  * open connections stall: nothing is forwarded either way (data, FIN or reset) until the link heals, and
    then everything held is delivered in order, as TCP retransmissions would deliver it.

  What differs from a kernel DROP: bytes a caller sends on an open connection are still acknowledged by
  this host's kernel (the relay reads and holds them), so a sender never sees its own retransmission
  timeouts; and a connection left stalled long enough would give up on kind (``tcp_retries2``, about
  15 minutes) but waits here until the link heals or the mesh stops. A connection attempt that was already in
  the accept queue when the link was cut is stalled like an open one (its handshake had completed).

That is the network, not the mesh, so emulating it is honest; the mesh on both ends is real Envoy.
The relay runs an asyncio loop in a thread of the mesh process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["LinkState", "Links"]

T = TypeVar("T")

BACKLOG = 1024
"""A listening relay's accept backlog while the link is up."""


@dataclass
class LinkState:
    rtt_ms: float = 0.0
    cut: bool = False
    connections: set[asyncio.StreamWriter] = field(default_factory=set)
    healed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while the link is up; everything that crosses it waits for it. Used on the links thread only."""

    def __post_init__(self) -> None:
        if not self.cut:
            self.healed.set()


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


class _Listener:
    """One relay address: accepts connections while its link is up, drops new SYNs while it is cut."""

    def __init__(self, sock: socket.socket, link: LinkState,
                 serve: Callable[[socket.socket], object]) -> None:
        self.sock = sock
        self.link = link
        self.serve = serve
        self.fillers: list[socket.socket] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        address = self.sock.getsockname()[0]
        while True:
            try:
                conn, peer = await loop.sock_accept(self.sock)
            except OSError:  # e.g. out of file descriptors: a real listener retries too
                await asyncio.sleep(0.05)
                continue
            if peer[0] == address:  # a filler: only fillers connect from the relay's own address
                conn.close()
                continue
            self.serve(conn)

    def block(self) -> None:
        """Stop accepting and fill the accept queue: the kernel now drops every new SYN unanswered."""
        if self.task is not None:
            self.task.cancel()  # a pending accept would take the filler out of the queue
            self.task = None
        self.sock.listen(0)  # Linux changes the backlog of a listening socket in place
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        filler.bind((self.sock.getsockname()[0], 0))  # from the relay's own address: see _accept
        filler.connect_ex(self.sock.getsockname())  # completes in the kernel: the relay never accepts it
        self.fillers.append(filler)

    def unblock(self) -> None:
        self.sock.listen(BACKLOG)
        for filler in self.fillers:
            filler.close()
        self.fillers.clear()
        self.start()  # fillers still in the queue are recognised by their address and closed

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        for filler in self.fillers:
            filler.close()
        self.sock.close()


class Links:
    """Relays between clusters. ``allocate(cluster)`` hands out an address in the calling cluster's block."""

    def __init__(self, allocate: Callable[[str], str], default_rtt_ms: float) -> None:
        self._allocate = allocate
        self._default_rtt_ms = default_rtt_ms
        self._links: dict[tuple[str, str], LinkState] = {}
        self._relays: dict[tuple[str, str, str], str] = {}  # (from, to, target address) -> relay address
        self._listeners: dict[tuple[str, int], _Listener] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="links", daemon=True)
        self._thread.start()

    def state(self, a: str, b: str) -> LinkState:
        with self._lock:
            return self._links.setdefault(_pair(a, b), LinkState(self._default_rtt_ms))

    def relay(self, from_cluster: str, to_cluster: str, address: str, port: int) -> tuple[str, int]:
        """The relay address a proxy in ``from_cluster`` uses to reach ``address:port`` in ``to_cluster``."""
        key = (from_cluster, to_cluster, address)
        link = self.state(from_cluster, to_cluster)
        with self._lock:
            relay = self._relays.get(key)
            if relay is None:
                relay = self._relays[key] = self._allocate(from_cluster)
            if (relay, port) not in self._listeners:
                self._listeners[(relay, port)] = self._run(self._listen(relay, port, link, address))
        return relay, port

    def set(self, a: str, b: str, rtt_ms: float | None = None, cut: bool | None = None) -> LinkState:
        """Change the link between two clusters (both directions). ``cut=True`` blackholes it (see above)."""
        link = self.state(a, b)
        if rtt_ms is not None:
            link.rtt_ms = max(0.0, rtt_ms)
        if cut is not None and cut != link.cut:
            self._run(self._set_cut(link, cut))
        return link

    def reset(self) -> None:
        """Every link back to the topology's defaults."""
        for a, b in list(self._links):
            self.set(a, b, rtt_ms=self._default_rtt_ms, cut=False)

    def describe(self) -> dict[str, dict[str, object]]:
        return {f"{a}<->{b}": {"rttMs": s.rtt_ms, "cut": s.cut, "connections": len(s.connections)}
                for (a, b), s in self._links.items()}

    def close(self) -> None:
        async def stop() -> None:
            for listener in self._listeners.values():
                listener.close()
            for link in self._links.values():
                for writer in list(link.connections):
                    _reset(writer)
                link.connections.clear()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._run(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    # -- the relay itself (runs on the links thread) ---------------------------------------------------------

    async def _listen(self, relay: str, port: int, link: LinkState, address: str) -> _Listener:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
        sock.bind((relay, port))
        sock.listen(BACKLOG)

        def serve(conn: socket.socket) -> None:
            asyncio.get_running_loop().create_task(self._serve(conn, link, address, port))

        listener = _Listener(sock, link, serve)
        if link.cut:
            listener.block()
        else:
            listener.start()
        return listener

    async def _set_cut(self, link: LinkState, cut: bool) -> None:
        link.cut = cut
        listeners = [listener for listener in self._listeners.values() if listener.link is link]
        if cut:
            link.healed.clear()
            for listener in listeners:
                listener.block()
        else:
            for listener in listeners:
                listener.unblock()
            link.healed.set()

    async def _serve(self, conn: socket.socket, link: LinkState, address: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(sock=conn)
        await link.healed.wait()  # accepted just as the link was cut: its handshake completed, so it stalls
        try:
            target_reader, target_writer = await asyncio.open_connection(address, port)
        except OSError:
            _reset(writer)
            return
        link.connections.update((writer, target_writer))
        try:
            await asyncio.gather(self._pump(reader, target_writer, link), self._pump(target_reader, writer, link))
        finally:
            for end in (writer, target_writer):
                link.connections.discard(end)
                with contextlib.suppress(Exception):
                    end.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: LinkState) -> None:
        """Copy one direction, each chunk delayed by half the round trip, in order; nothing crosses a cut."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - asyncio.get_running_loop().time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await link.healed.wait()
                if not data:
                    with contextlib.suppress(Exception):
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        delivery = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                queue.put_nowait((asyncio.get_running_loop().time() + link.rtt_ms / 2000.0, data))
                if not data:
                    break
            await delivery
        except (ConnectionError, OSError):
            delivery.cancel()
            await link.healed.wait()  # a reset crosses the link like anything else
            _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a dead peer would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
