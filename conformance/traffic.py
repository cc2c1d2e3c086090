"""Continuous traffic: calls from a probe that keep going while a check changes the mesh.

Failover, rotation and partition checks need traffic flowing *across* an event, and a timeline to measure
against it (how many calls failed, how long until traffic shifted). ``ContinuousTraffic`` runs batches of
calls in a background thread until stopped, always bounded in time and in count, and records every response
with the time it was made.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from conformance.probe import CallResult, Response

__all__ = ["ContinuousTraffic", "Timeline"]

MAX_CALLS = 20000


@dataclass(frozen=True)
class Timeline:
    """Every call made, as (seconds since traffic started, response), plus named events."""

    calls: tuple[tuple[float, Response], ...]
    events: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.calls)

    def responses(self, after: float = 0.0, before: float = float("inf")) -> list[Response]:
        return [r for t, r in self.calls if after <= t < before]

    def failures(self, after: float = 0.0) -> list[Response]:
        return [r for r in self.responses(after) if not r.ok]

    def settled_at(self, since: float, good: Callable[[Response], bool]) -> float | None:
        """When calls made after ``since`` started to be ``good`` for good (None if the last one is not)."""
        last_bad = since
        after = [(t, r) for t, r in self.calls if t >= since]
        if not after or not good(after[-1][1]):
            return None
        for t, response in after:
            if not good(response):
                last_bad = t
        return max(0.0, last_bad - since)

    def shift_time(self, event: str, cluster: str) -> float | None:
        """Seconds from ``event`` until calls were served (2xx) by ``cluster`` for good; None if not (yet)."""
        return self.settled_at(self.events[event], lambda r: r.ok and r.cluster == cluster)

    def reached(self, event: str, cluster: str, settle: int = 5) -> float | None:
        """Seconds from ``event`` until the first of ``settle`` calls in a row served (2xx) by ``cluster``;
        None if that never happened. Unlike :meth:`shift_time`, later calls elsewhere do not move it."""
        since = self.events[event]
        run: list[float] = []
        for t, response in self.calls:
            if t < since:
                continue
            run = [*run, t] if response.ok and response.cluster == cluster else []
            if len(run) >= settle:
                return run[0] - since
        return None

    def failing_spells(self, event: str, until: str | None = None) -> list[tuple[float, float]]:
        """(first failed call, first good call after it) of each run of failed calls between ``event`` and
        ``until`` (or the end), in seconds since the traffic started; a run still failing at the end ends at its
        last call. With retries off, each ejection of a failing pod by outlier detection follows one run."""
        end = self.events[until] if until is not None else float("inf")
        spells: list[tuple[float, float]] = []
        began: float | None = None
        last = 0.0
        for t, response in self.calls:
            if t < self.events[event] or t >= end:
                continue
            if not response.ok and began is None:
                began = t
            elif response.ok and began is not None:
                spells.append((began, t))
                began = None
            last = t
        if began is not None:
            spells.append((began, last))
        return spells

    def errors_after(self, event: str) -> int:
        return len(self.failures(after=self.events[event]))

    def stable(self, event: str, cluster: str, calls: int = 10) -> bool:
        """The last ``calls`` calls after ``event`` were all served by ``cluster``."""
        after = self.responses(after=self.events.get(event, float("inf")))
        return len(after) >= calls and all(r.ok and r.cluster == cluster for r in after[-calls:])

    def as_result(self, source: str, url: str) -> CallResult:
        return CallResult(source, url, tuple(r for _, r in self.calls))


class ContinuousTraffic:
    """Batches of calls in a thread; ``mark(name)`` records an event time on the same clock."""

    def __init__(self, call: Callable[[], CallResult], max_seconds: float) -> None:
        self._call = call
        self._max_seconds = max_seconds
        self._stop = threading.Event()
        self._calls: list[tuple[float, Response]] = []
        self._events: dict[str, float] = {}
        self._errors: list[BaseException] = []
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def __enter__(self) -> ContinuousTraffic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        deadline = self._started + self._max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline and len(self._calls) < MAX_CALLS:
            began = time.monotonic() - self._started
            try:
                result = self._call()
            except BaseException as exc:  # surfaced by stop(): a broken environment, not a verdict
                self._errors.append(exc)
                return
            step = (time.monotonic() - self._started - began) / max(1, len(result))
            self._calls += [(began + i * step, r) for i, r in enumerate(result.responses)]

    def now(self) -> float:
        return time.monotonic() - self._started

    def mark(self, event: str) -> float:
        self._events[event] = self.now()
        return self._events[event]

    def wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def snapshot(self) -> Timeline:
        """The calls made so far (the traffic keeps going)."""
        return Timeline(tuple(self._calls), dict(self._events))

    def wait_until(self, condition: Callable[[Timeline], bool], timeout_s: float) -> bool:
        """Wait until ``condition(timeline so far)`` holds or ``timeout_s`` passes; True if it held."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._thread.is_alive():
            if condition(self.snapshot()):
                return True
            self._stop.wait(0.1)
        return condition(self.snapshot())

    def stop(self) -> Timeline:
        self._stop.set()
        self._thread.join(self._max_seconds + 30)
        if self._errors:
            raise self._errors[0]
        return Timeline(tuple(self._calls), dict(self._events))

