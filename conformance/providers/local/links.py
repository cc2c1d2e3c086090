"""The network between the local mesh's clusters: a user-space relay on every cross-cluster path.

``tc netem`` is not available everywhere (and needs root), so the link is emulated here: every connection
from one cluster to another goes through a relay listening on an address of the *calling* cluster, which
forwards to the target and can

- delay every chunk in each direction by half the link's round-trip time (the topology's ``linkRttMs``, or
  what a fault sets), keeping order; Envoy's timers tick in 4 ms steps here, so measured delays run a few ms
  over the configured ones;
- cut the link: existing connections are reset and new ones are accepted and reset at once (like a firewall
  REJECT), so callers fail fast.

That is the network, not the mesh, so emulating it is honest; the mesh on both ends is real Envoy.
The relay runs an asyncio loop in a thread of the mesh process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["LinkState", "Links"]


@dataclass
class LinkState:
    rtt_ms: float = 0.0
    cut: bool = False
    connections: set[asyncio.StreamWriter] = field(default_factory=set)


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


class Links:
    """Relays between clusters. ``allocate(cluster)`` hands out an address in the calling cluster's block."""

    def __init__(self, allocate: Callable[[str], str], default_rtt_ms: float) -> None:
        self._allocate = allocate
        self._default_rtt_ms = default_rtt_ms
        self._links: dict[tuple[str, str], LinkState] = {}
        self._relays: dict[tuple[str, str, str], str] = {}  # (from, to, target address) -> relay address
        self._servers: dict[tuple[str, int], asyncio.base_events.Server] = {}
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
        with self._lock:
            relay = self._relays.get(key)
            if relay is None:
                relay = self._relays[key] = self._allocate(from_cluster)
        if (relay, port) not in self._servers:
            link = self.state(from_cluster, to_cluster)
            server = asyncio.run_coroutine_threadsafe(
                asyncio.start_server(lambda r, w: self._serve(r, w, link, address, port), relay, port),
                self._loop,
            ).result(10)
            self._servers[(relay, port)] = server
        return relay, port

    def set(self, a: str, b: str, rtt_ms: float | None = None, cut: bool | None = None) -> LinkState:
        """Change the link between two clusters (both directions). ``cut=True`` resets its connections."""
        link = self.state(a, b)
        if rtt_ms is not None:
            link.rtt_ms = max(0.0, rtt_ms)
        if cut is not None:
            link.cut = cut
            if cut:
                asyncio.run_coroutine_threadsafe(self._reset_all(link), self._loop).result(10)
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
            for server in self._servers.values():
                server.close()
            for link in self._links.values():
                await self._reset_all(link)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- the relay itself (runs on the links thread) ---------------------------------------------------------

    async def _reset_all(self, link: LinkState) -> None:
        for writer in list(link.connections):
            _reset(writer)
        link.connections.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: LinkState,
                     address: str, port: int) -> None:
        if link.cut:
            _reset(writer)
            return
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
        """Copy one direction, each chunk delayed by half the round trip, in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    with contextlib.suppress(Exception):
                        writer.write_eof()
                    return
                wait = due - asyncio.get_running_loop().time()
                if wait > 0:
                    await asyncio.sleep(wait)
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
            _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a firewall REJECT or a dead peer would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
