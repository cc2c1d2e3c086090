"""Long-lived connections and the endpoints a sidecar holds: what a check watches while the mesh changes.

- :class:`HeldConnections`: keep-alive connections a probe holds to a service (its ``/forward`` with
  ``concurrency`` N and a ``rate``: each slot keeps one connection and opens a new one only when the old one
  failed, timed out or was closed), judged afterwards: every connection beyond N, and every connection a call
  failed on, was lost. Cilium gates its upgrades on the same measure; ``meshconf upgrade`` uses it too.
- :class:`EndpointWatch`: the endpoints a client's sidecar has for one service, read from its Envoy admin
  (``/clusters``: one ``<cluster>::<address>::health_flags::...`` line per host) over and over while something
  happens, so a push that removed them, even briefly, shows as the minimum seen.

Both run in a thread, bounded in time and in count, and never decide anything: ``expect_*`` does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conformance.errors import ProviderError

__all__ = ["ConnectionHold", "EndpointWatch", "HeldConnections", "endpoint_count", "hold_request", "outbound_cluster"]

MAX_SAMPLES = 20000
"""Most endpoint reads one watch keeps."""


def hold_request(url: str, connections: int, seconds: float, call_timeout_s: float,
                 name: str | None = None) -> dict[str, Any]:
    """A probe ``/forward`` that holds ``connections`` keep-alive connections for ``seconds``, one call a second
    on each (``name``: it can be stopped earlier, ``POST /forward/stop``)."""
    hold_ms = int(seconds * 1000)
    request = {"url": url, "concurrency": connections, "rate": connections, "duration_ms": hold_ms,
               "max_duration_ms": min(hold_ms + 10_000, 600_000), "body_limit": 0,
               "timeout_ms": int(call_timeout_s * 1000)}
    if name is not None:
        request["name"] = name
    return request


@dataclass(frozen=True)
class HeldConnections:
    """What became of ``held`` keep-alive connections: the probe's per-call records."""

    held: int
    calls: tuple[Mapping[str, Any], ...]

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any], held: int) -> HeldConnections:
        return cls(held, tuple(answer.get("calls") or ()))

    @property
    def opened(self) -> int:
        """Connections the probe opened (ids are per connection; 0 means none was made)."""
        return len({int(c.get("connection") or 0) for c in self.calls} - {0})

    @property
    def failed_calls(self) -> int:
        return sum(1 for c in self.calls if c.get("error") or not 200 <= int(c.get("status") or 0) < 300)

    @property
    def lost(self) -> int:
        """Connections replaced, or that a call failed on."""
        failed_on = {int(c.get("connection") or 0) for c in self.calls if c.get("error")} - {0}
        return max(self.opened - self.held, len(failed_on))

    def errors(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for call in self.calls:
            if call.get("error"):
                found[str(call["error"])] = found.get(str(call["error"]), 0) + 1
        return found

    def calls_after(self, started_us: float) -> int:
        """Calls that started ``started_us`` or later after the first one."""
        first = min((int(c.get("startedUs") or 0) for c in self.calls), default=0)
        return sum(1 for c in self.calls if int(c.get("startedUs") or 0) - first >= started_us)


class ConnectionHold:
    """A probe holding keep-alive connections in a thread (``forward(request)``) until ``stop()`` asks it to end
    (``stop_forward(name)``) or its time is up; ``result()`` is what became of them."""

    def __init__(self, forward: Callable[[Mapping[str, Any]], Any], stop_forward: Callable[[str], Any],
                 request: Mapping[str, Any]) -> None:
        self._forward = forward
        self._stop_forward = stop_forward
        self._request = request
        self._answers: list[Any] = []
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="held-connections", daemon=True)
        self._asked = False
        self.ended_early = False

    def _run(self) -> None:
        try:
            self._answers.append(self._forward(self._request))
        except BaseException as exc:  # surfaced by result(): a broken environment, not a verdict
            self._errors.append(exc)

    def __enter__(self) -> ConnectionHold:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self.stop()

    def wait(self, seconds: float) -> None:
        """Let the held connections make calls for ``seconds`` (one a second each)."""
        self._thread.join(seconds)

    @property
    def running(self) -> bool:
        """Still holding: False once the hold's own time ran out (or it failed)."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Ask the probe to end the hold (once)."""
        if self._thread.is_alive() and not self._asked:
            self._asked = True
            self.ended_early = bool(self._stop_forward(str(self._request["name"])).get("stopped"))

    def answer(self) -> Mapping[str, Any]:
        """Stop the forward (if it still runs) and return the probe's answer (any rate-mode forward: with
        ``summary`` it is the latencies and statuses a LoadResult is made of)."""
        self.stop()
        self._thread.join(float(self._request.get("max_duration_ms", 60_000)) / 1000 + 30)
        if self._errors:
            raise self._errors[0]
        if not self._answers:
            raise ProviderError(f"the probe's forward to {self._request.get('url')} gave no answer")
        answer: Mapping[str, Any] = self._answers[0]
        return answer

    def result(self) -> HeldConnections:
        return HeldConnections.from_answer(self.answer(), int(self._request["concurrency"]))


def outbound_cluster(host: str, port: int, subset: str = "") -> str:
    """Istio's name of a sidecar's outbound cluster for a service port (and subset)."""
    return f"outbound|{port}|{subset}|{host}"


def endpoint_count(clusters_text: str, cluster: str) -> int:
    """Hosts of ``cluster`` in Envoy's ``/clusters`` text (every host has one ``health_flags`` line)."""
    prefix = f"{cluster}::"
    return sum(1 for line in clusters_text.splitlines() if line.startswith(prefix) and "::health_flags::" in line)


class EndpointWatch:
    """Reads ``read()`` (a sidecar's ``/clusters``) until stopped, recording (seconds, endpoints of ``cluster``)."""

    def __init__(self, read: Callable[[], str], cluster: str, max_seconds: float, interval_s: float = 0.01) -> None:
        self._read = read
        self._cluster = cluster
        self._max_seconds = max_seconds
        self._interval_s = interval_s
        self._samples: list[tuple[float, int]] = []
        self._errors: list[BaseException] = []
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="endpoint-watch", daemon=True)

    def __enter__(self) -> EndpointWatch:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self._max_seconds + 30)

    def _run(self) -> None:
        deadline = self._started + self._max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline and len(self._samples) < MAX_SAMPLES:
            try:
                text = self._read()
            except ProviderError as exc:  # an admin read that failed is not a count of zero
                self._errors.append(exc)
                return
            self._samples.append((time.monotonic() - self._started, endpoint_count(text, self._cluster)))
            self._stop.wait(self._interval_s)

    @property
    def samples(self) -> Sequence[tuple[float, int]]:
        """(seconds since the watch started, endpoints) of every read; raises what stopped the watch, if
        anything did."""
        if self._errors:
            raise self._errors[0]
        return tuple(self._samples)

    def minimum(self) -> tuple[float, int] | None:
        """The read with the fewest endpoints (the first of them), or None before any read."""
        samples = self.samples
        return min(samples, key=lambda s: (s[1], s[0])) if samples else None
