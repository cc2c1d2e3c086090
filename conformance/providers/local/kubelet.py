"""The local mesh's kubelet: a pod's process that dies without meshconf stopping or killing it (someone else
killed it, or it crashed) is started again, as kubelet restarts a container, so the checks after it run on a
healthy mesh. Every such death is recorded with its time, so the check it happened under can be told (and
only that check): ``deaths(since)``.

Restarts back off as kubelet's do (the first at once, then 10 s, 20 s, ... up to 60 s for a process that
keeps dying). A process a check killed on purpose (``Faults.kill``: a crash whose endpoint stays) is left
dead, as the fault asks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from conformance.errors import ConformanceError
from conformance.providers.local.processes import Supervisor

__all__ = ["Death", "Kubelet"]

BACKOFF_S = (0.0, 10.0, 20.0, 40.0, 60.0)
"""Wait before the n-th restart of one process (kubelet: 10 s doubling, capped; the first restart at once)."""


@dataclass(frozen=True)
class Death:
    name: str
    """``<pod>/envoy`` or ``<pod>/probe``."""
    pid: int
    returncode: int | None
    at: float
    """When it was seen dead (time.time())."""
    tail: str
    """Its last lines of output."""
    restart: str
    """``"restarted"``, ``"pending"``, or why it could not be restarted."""


class Kubelet:
    """Watches the supervisor's children from a thread; ``restart(name)`` starts one again (under ``lock``)."""

    def __init__(self, supervisor: Supervisor, lock: AbstractContextManager[object],
                 restart: Callable[[str], None], interval_s: float = 0.2) -> None:
        self._supervisor = supervisor
        self._lock = lock
        self._restart = restart
        self._interval_s = interval_s
        self._deaths: dict[int, Death] = {}  # by pid: each death once
        self._restarts: dict[str, int] = {}
        self._due: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="kubelet", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def deaths(self, since: float | None = None) -> list[Death]:
        """Deaths seen at or after ``since`` (all when None), oldest first; looks for new ones first (call it
        under the lock)."""
        self.observe()
        found = [d for d in self._deaths.values() if since is None or d.at >= since]
        return sorted(found, key=lambda d: d.at)

    def observe(self) -> list[str]:
        """Record every child that died on its own since the last look; returns the names still dead."""
        dead = []
        for child in self._supervisor.casualties():
            if child.pid not in self._deaths:
                self._deaths[child.pid] = Death(child.name, child.pid, child.process.returncode, time.time(),
                                                child.log_tail(3), "pending")
                count = self._restarts.get(child.name, 0)
                self._due[child.name] = time.monotonic() + BACKOFF_S[min(count, len(BACKOFF_S) - 1)]
            dead.append(child.name)
        return dead

    def _watch(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                if self._stop.is_set():
                    return
                for child in self._supervisor.casualties():
                    self.observe()
                    self._handle(child.name, child.pid)

    def _handle(self, name: str, pid: int) -> None:
        if time.monotonic() < self._due.get(name, 0.0):
            return
        self._restarts[name] = self._restarts.get(name, 0) + 1
        try:
            self._restart(name)
            outcome = "restarted"
        except ConformanceError as exc:
            outcome = f"could not be restarted: {exc}"
            count = self._restarts[name]
            self._due[name] = time.monotonic() + BACKOFF_S[min(count, len(BACKOFF_S) - 1)]
        death = self._deaths[pid]
        self._deaths[pid] = Death(death.name, death.pid, death.returncode, death.at, death.tail, outcome)
