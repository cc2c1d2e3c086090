"""The local control plane's ADS server: aggregated xDS over gRPC, state of the world, as istiod serves it.

One :class:`ControlPlane` per primary cluster listens on 127.0.0.0/8 on istiod's plaintext xDS port; the
proxies of its cluster, and of the remote clusters it configures, each hold one ADS stream to it.

The protocol, server side (Istio's handling in pkg/xds/server.go ``ShouldRespond``):

- a request without a nonce (a new stream, or the first request of a type) gets the current resources;
- a request that carries the nonce of the last response of its type is an ACK, or a NACK when it has an
  ``error_detail``; an ACK that subscribes to new names of a non-wildcard type (EDS, RDS, SDS) gets them;
- a request with an older nonce is stale and ignored.

When a proxy's resources change, the types that changed are sent in Istio's push order (clusters, endpoints,
listeners, routes, secrets). A cluster that changed is followed by its endpoints even when they did not:
Envoy re-creates the cluster and keeps it warming until endpoints arrive (Istio marks EDS ``AlwaysRespond``
after a CDS push for the same reason).

A proxy is in sync when every response sent on its stream is ACKed and what it ACKed is what it should have
(every cluster and listener, every endpoint, route and secret they refer to). A :class:`Push` waits for
that on every proxy it changed; a NACK fails it with Envoy's ``error_detail`` word for word. Every push is
an entry in the control plane's timeline (version, reason, each proxy's time to ACK) for diagnostics.

``stop`` closes every stream and the port: Envoys keep their last config and reconnect with their own
backoff once ``start`` listens again; ``forget`` drops what the control plane knew about its proxies, so
after a restart it serves them from scratch, as a new istiod would.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import itertools
import os
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

# The mesh process forks every Envoy and probe (with a pre-exec hook, for PR_SET_PDEATHSIG). gRPC's fork
# handlers would restart its pollers in the child, between fork and exec, where they crash the child: the
# children never use gRPC, so the handlers are not wanted. Read by gRPC when it initialises, on import.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from conformance.errors import ConfigNotApplied, ProviderError
from conformance.providers.local.xds import ENDPOINT, PUSH_ORDER, WILDCARD, Converter, ProxyResources, short

__all__ = ["XDS_PORT", "ControlPlane", "EventLoopThread", "Push"]

XDS_PORT = 15010
"""istiod's plaintext xDS port."""
TIMELINE_LENGTH = 2000
"""Pushes a control plane remembers for diagnostics."""
PENDING_PUSHES = 100
"""Unfinished pushes a control plane keeps settling as ACKs arrive."""
_T = TypeVar("_T")


class EventLoopThread:
    """An asyncio loop in a daemon thread: every control plane's streams run on it."""

    def __init__(self, name: str = "xds") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout_s: float = 30.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def call(self, function: Callable[..., object], *args: object) -> None:
        self.loop.call_soon_threadsafe(function, *args)

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self.loop.is_running() and not self.loop.is_closed():
            self.loop.close()


Encoded = dict[str, dict[str, tuple[str, any_pb2.Any]]]
"""type URL -> resource name -> (digest, resource)."""


@dataclass
class _Sent:
    nonce: str
    version: str
    digests: dict[str, str]


@dataclass
class _Stream:
    """One ADS stream of a proxy: what it watches, what was sent on it, what it ACKed."""

    queue: asyncio.Queue[discovery_pb2.DiscoveryResponse | None] = field(default_factory=asyncio.Queue)
    watched: dict[str, set[str]] = field(default_factory=dict)
    sent: dict[str, _Sent] = field(default_factory=dict)
    sent_digests: dict[str, dict[str, str]] = field(default_factory=dict)
    acked_nonce: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        self.queue.put_nowait(None)


@dataclass
class _Proxy:
    node_id: str
    name: str
    desired: Encoded
    references: dict[str, set[str]]
    versions: dict[str, str] = field(default_factory=dict)
    acked: dict[str, dict[str, str]] = field(default_factory=dict)
    nacks: dict[str, str] = field(default_factory=dict)
    """type URL -> Envoy's error_detail, while the last response of that type stands rejected."""
    stream: _Stream | None = None
    connects: int = 0

    def digests(self, type_url: str) -> dict[str, str]:
        return {name: digest for name, (digest, _) in self.desired.get(type_url, {}).items()}

    def in_sync(self) -> bool:
        stream = self.stream
        if stream is None:
            return False
        if any(stream.acked_nonce.get(t) != sent.nonce for t, sent in stream.sent.items()):
            return False
        for type_url in PUSH_ORDER:
            want = self.digests(type_url)
            acked = self.acked.get(type_url)
            if type_url in WILDCARD:
                if acked != want:
                    return False
            elif any(name in want and (acked or {}).get(name) != want[name]
                     for name in self.references.get(type_url, ())):
                return False
        return True


class Push:
    """One change of proxies' config: waits until each changed proxy ACKed it (or NACKed it)."""

    def __init__(self, cluster: str, version: int, reason: str, delay_s: float) -> None:
        self.cluster = cluster
        self.version = version
        self.reason = reason
        self.delay_s = delay_s
        self.at = dt.datetime.now(dt.UTC)
        self.sent: float | None = None
        self.pending: dict[str, str] = {}
        """node id -> proxy name, still to ACK."""
        self.acked_ms: dict[str, float] = {}
        self.nacks: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        """proxy name -> why it was not waited for (not connected, disconnected)."""
        self.await_connect = False
        self.done = threading.Event()

    def wait(self, timeout_s: float, alive: Callable[[], bool] | None = None,
             log: Callable[[], str] | None = None) -> None:
        """Block until every proxy ACKed. Raises ConfigNotApplied on a NACK (with Envoy's reason) or timeout;
        ProviderError if ``alive`` (of a starting Envoy) turns False, with ``log``'s hint."""
        deadline = time.monotonic() + timeout_s + self.delay_s
        while not self.done.wait(0.05 if alive else max(0.0, deadline - time.monotonic())):
            if alive is not None and not alive():
                hint = log() if log is not None else ""
                raise ProviderError(f"Envoy {', '.join(sorted(self.pending.values()))} exited during start-up, "
                                    f"before it got its config: {hint}")
            if time.monotonic() >= deadline:
                names = ", ".join(sorted(self.pending.values())[:5])
                raise ConfigNotApplied(f"control plane {self.cluster}: no ACK of version {self.version} within "
                                       f"{timeout_s:.0f}s from {names}")
        if self.nacks:
            name, reason = sorted(self.nacks.items())[0]
            raise ConfigNotApplied(f"Envoy {name} rejected version {self.version} of control plane "
                                   f"{self.cluster} (NACK): {reason}")

    def describe(self) -> dict[str, Any]:
        proxies: dict[str, Any] = {name: {"ackMs": round(ms, 2)} for name, ms in self.acked_ms.items()}
        proxies.update({name: {"nack": reason} for name, reason in self.nacks.items()})
        proxies.update({name: {"skipped": why} for name, why in self.skipped.items()})
        proxies.update({name: {"pending": True} for name in self.pending.values()})
        return {"version": self.version, "reason": self.reason, "at": self.at.isoformat(timespec="milliseconds"),
                "delayS": self.delay_s, "proxies": proxies}

    def _settle(self, proxy: _Proxy) -> None:
        if proxy.node_id not in self.pending:
            return
        if proxy.nacks:
            type_url, reason = next(iter(proxy.nacks.items()))
            self.nacks[proxy.name] = f"{short(type_url)}: {reason}"
        elif proxy.in_sync():
            self.acked_ms[proxy.name] = (time.monotonic() - (self.sent or time.monotonic())) * 1000
        elif proxy.stream is None and not self.await_connect:
            self.skipped[proxy.name] = "disconnected"
        else:
            return
        del self.pending[proxy.node_id]
        if not self.pending:
            self.done.set()


class ControlPlane:
    """The ADS server of one primary cluster's control plane. Thread-safe: work runs on ``loop``."""

    def __init__(self, cluster: str, address: str, loop: EventLoopThread, converter: Converter,
                 port: int = XDS_PORT) -> None:
        self.cluster = cluster
        self.address = address
        self.port = port
        self._loop = loop
        self._converter = converter
        self._proxies: dict[str, _Proxy] = {}
        self._server: grpc.aio.Server | None = None
        self._pushes: list[Push] = []
        self._timeline: collections.deque[Push] = collections.deque(maxlen=TIMELINE_LENGTH)
        self._versions = itertools.count(1)
        self._nonces = itertools.count(1)

    # -- called from other threads -------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen (again): proxies reconnect on their own schedule."""
        if self._server is None:
            self._server = self._loop.run(self._start())

    def stop(self) -> None:
        """Close every stream and stop listening; proxies keep their last config."""
        server, self._server = self._server, None
        if server is not None:
            self._loop.run(server.stop(None))

    def forget(self, node_ids: list[str] | None = None) -> None:
        """Drop what this control plane knows about these proxies (all if None), streams included."""
        self._loop.run(self._forget(node_ids))

    def update(self, changes: Mapping[str, tuple[str, ProxyResources]], reason: str, delay_s: float = 0.0,
               await_connect: bool = False) -> Push:
        """Give proxies (node id -> (name, resources)) their new config and push what changed.

        ``delay_s`` holds the push back that long. ``await_connect``: wait for proxies that have no stream
        yet (a starting Envoy); otherwise only connected proxies are waited for.
        """
        encoded = {node: (name, self._encode(resources), resources.references)
                   for node, (name, resources) in changes.items()}
        push = Push(self.cluster, next(self._versions), reason, delay_s)
        push.await_connect = await_connect
        if delay_s > 0:
            self._loop.call(self._loop.loop.call_later, delay_s, self._update, encoded, push)
        else:
            self._loop.call(self._update, encoded, push)
        return push

    def status(self) -> dict[str, Any]:
        return self._loop.run(self._status())

    def timeline(self, last: int = TIMELINE_LENGTH) -> list[dict[str, Any]]:
        """The last pushes, oldest first: version, reason, and each changed proxy's time to ACK (or NACK)."""
        return self._loop.run(self._describe_timeline(last))

    def _encode(self, resources: ProxyResources) -> Encoded:
        return {type_url: {name: (r.digest, self._converter.to_any(type_url, r)) for name, r in found.items()}
                for type_url, found in resources.by_type.items()}

    # -- on the loop ---------------------------------------------------------------------------------------

    async def _start(self) -> grpc.aio.Server:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(self), server)
        try:
            self.port = server.add_insecure_port(f"{self.address}:{self.port}")
        except RuntimeError as exc:
            raise ProviderError(f"control plane {self.cluster} cannot listen on {self.address}:{self.port}: "
                                f"{exc}") from None
        await server.start()
        return server

    async def _forget(self, node_ids: list[str] | None) -> None:
        for node in list(self._proxies) if node_ids is None else node_ids:
            proxy = self._proxies.pop(node, None)
            if proxy is not None and proxy.stream is not None:
                proxy.stream.close()
                proxy.stream = None
            for push in self._pushes:
                if node in push.pending:
                    push.skipped[push.pending.pop(node)] = "removed"
                    if not push.pending:
                        push.done.set()

    def _update(self, changes: dict[str, tuple[str, Encoded, dict[str, set[str]]]], push: Push) -> None:
        push.sent = time.monotonic()
        self._timeline.append(push)
        for node, (name, desired, references) in changes.items():
            proxy = self._proxies.get(node)
            if proxy is None:
                proxy = self._proxies[node] = _Proxy(node, name, {}, {})
            old = {t: proxy.digests(t) for t in PUSH_ORDER}
            proxy.desired, proxy.references = desired, references
            changed = [t for t in PUSH_ORDER if proxy.digests(t) != old[t]]
            for type_url in changed:
                proxy.versions[type_url] = str(push.version)
            if not changed and not (push.await_connect and not proxy.in_sync()):
                continue
            if proxy.stream is None and not push.await_connect:
                push.skipped[name] = "not connected"
                continue
            push.pending[node] = name
            if proxy.stream is not None:
                self._push(proxy, proxy.stream, old)
        self._pushes.append(push)
        for node in list(push.pending):
            push._settle(self._proxies[node])
        if not push.pending:
            push.done.set()
        # a push that timed out stays (its proxies may still ACK it) until newer ones push it out
        self._pushes = [p for p in self._pushes if not p.done.is_set()][-PENDING_PUSHES:]

    def _push(self, proxy: _Proxy, stream: _Stream, old: dict[str, dict[str, str]]) -> None:
        clusters = proxy.digests(PUSH_ORDER[0])
        rewarm = {name for name, digest in clusters.items() if old[PUSH_ORDER[0]].get(name) != digest}
        for type_url in PUSH_ORDER:
            if type_url not in stream.watched:
                continue  # Envoy has not asked for this type yet: its first request gets everything
            want = proxy.digests(type_url)
            sent = stream.sent_digests.get(type_url, {})
            if type_url in WILDCARD:
                if want != sent:
                    self._respond(proxy, stream, type_url, None)
                continue
            names = {n for n in stream.watched[type_url] if n in want and sent.get(n) != want[n]}
            if type_url == ENDPOINT:
                names |= rewarm & stream.watched[type_url] & set(want)
            if names:
                self._respond(proxy, stream, type_url, names)

    def _respond(self, proxy: _Proxy, stream: _Stream, type_url: str, names: set[str] | None) -> None:
        """Send ``names`` (all watched if None; everything for wildcard types) of one type."""
        want = proxy.desired.get(type_url, {})
        if type_url in WILDCARD:
            chosen = want
        else:
            wanted = stream.watched.get(type_url, set()) if names is None else names
            chosen = {n: want[n] for n in sorted(wanted) if n in want}
            if not chosen:
                return
        nonce = str(next(self._nonces))
        version = proxy.versions.get(type_url) or "0"
        proxy.nacks.pop(type_url, None)  # this response supersedes a rejected one
        stream.sent[type_url] = _Sent(nonce, version, {n: d for n, (d, _) in chosen.items()})
        if type_url in WILDCARD:
            stream.sent_digests[type_url] = dict(stream.sent[type_url].digests)
        else:
            stream.sent_digests.setdefault(type_url, {}).update(stream.sent[type_url].digests)
        stream.queue.put_nowait(discovery_pb2.DiscoveryResponse(
            version_info=version, type_url=type_url, nonce=nonce, resources=[r for _, r in chosen.values()]))

    def _on_request(self, proxy: _Proxy, stream: _Stream, request: discovery_pb2.DiscoveryRequest) -> None:
        type_url = request.type_url
        sent = stream.sent.get(type_url)
        names = set(request.resource_names)
        if request.HasField("error_detail"):
            if sent is not None and request.response_nonce == sent.nonce:
                proxy.nacks[type_url] = request.error_detail.message
                stream.acked_nonce[type_url] = sent.nonce  # answered, though not accepted
        elif not request.response_nonce or type_url not in stream.watched:
            stream.watched[type_url] = names
            self._respond(proxy, stream, type_url, None)
        elif sent is not None and request.response_nonce == sent.nonce:
            stream.acked_nonce[type_url] = sent.nonce
            proxy.nacks.pop(type_url, None)
            acked = proxy.acked.setdefault(type_url, {})
            if type_url in WILDCARD:
                proxy.acked[type_url] = dict(sent.digests)
            else:
                acked.update(sent.digests)
            added = names - stream.watched.get(type_url, set())
            stream.watched[type_url] = names
            if added and type_url not in WILDCARD:
                self._respond(proxy, stream, type_url, None)
        # else: a stale nonce, superseded by a response Envoy has not processed yet
        self._settle(proxy)

    def _settle(self, proxy: _Proxy) -> None:
        for push in self._pushes:
            push._settle(proxy)
        self._pushes = [p for p in self._pushes if not p.done.is_set()]

    async def _status(self) -> dict[str, Any]:
        proxies = {}
        for proxy in self._proxies.values():
            proxies[proxy.name] = {
                "node": proxy.node_id, "connected": proxy.stream is not None, "connects": proxy.connects,
                "inSync": proxy.in_sync(),
                "versions": {short(t): v for t, v in proxy.versions.items()},
                "nacks": {short(t): reason for t, reason in proxy.nacks.items()},
            }
        return {"cluster": self.cluster, "address": f"{self.address}:{self.port}", "up": self.up,
                "pushes": len(self._timeline), "proxies": proxies}

    async def _describe_timeline(self, last: int) -> list[dict[str, Any]]:
        return [push.describe() for push in list(self._timeline)[-last:]]

    # -- streams -------------------------------------------------------------------------------------------

    async def serve(self, requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            return
        proxy = self._proxies.get(first.node.id)
        if proxy is None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"control plane {self.cluster} does not configure proxy {first.node.id!r}")
            return
        if proxy.stream is not None:
            proxy.stream.close()
        stream = proxy.stream = _Stream()
        proxy.connects += 1
        reader = asyncio.create_task(self._read(proxy, stream, first, requests))
        try:
            while (response := await stream.queue.get()) is not None:
                await context.write(response)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            if proxy.stream is stream:
                proxy.stream = None
                self._settle(proxy)

    async def _read(self, proxy: _Proxy, stream: _Stream, first: discovery_pb2.DiscoveryRequest,
                    requests: Any) -> None:
        try:
            self._on_request(proxy, stream, first)
            async for request in requests:
                if proxy.stream is not stream:
                    break
                self._on_request(proxy, stream, request)
        finally:
            stream.close()


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, control_plane: ControlPlane) -> None:
        self._control_plane = control_plane

    async def StreamAggregatedResources(self, requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await self._control_plane.serve(requests, context)
