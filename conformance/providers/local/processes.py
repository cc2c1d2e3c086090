"""Child processes of the local mesh (Envoys and probes): started, recorded, and stopped by PID.

Every child is started from one long-lived thread with ``PR_SET_PDEATHSIG`` = SIGKILL, so that if the mesh
process dies (even by SIGKILL) the kernel kills its children too. The PID of every child is recorded in the
run's state file at start, so ``meshconf down`` can stop a crashed run's processes; before it signals a PID
it checks the process's command line still names the run directory (PIDs are reused).
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from conformance.errors import ProviderError
from conformance.lifetime import die_with_parent

__all__ = ["Child", "Supervisor", "process_alive", "stop_pid"]



@dataclass
class Child:
    name: str
    kind: str
    """"envoy" or "probe"."""
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Supervisor:
    """Starts and stops the mesh's child processes; ``on_change`` persists the PID list."""

    def __init__(self, run_dir: Path, on_change: Callable[[list[dict[str, object]]], None]) -> None:
        self.run_dir = run_dir
        self._children: dict[str, Child] = {}
        self._killed: set[str] = set()
        """Children killed on purpose (a fault a check asked for): their death is not a casualty."""
        self._lock = threading.Lock()
        self._on_change = on_change
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits: fork from one thread that lives as
        # long as the supervisor does.
        self._spawner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")

    def start(self, name: str, kind: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Child:
        if name in self._children and self._children[name].running():
            raise ProviderError(f"process {name} is already running (pid {self._children[name].pid})")
        log.parent.mkdir(parents=True, exist_ok=True)

        def spawn() -> subprocess.Popen[bytes]:
            with open(log, "ab") as out:
                return subprocess.Popen(
                    list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent(), env=env, cwd=self.run_dir,
                )

        try:
            process = self._spawner.submit(spawn).result()
        except OSError as exc:
            raise ProviderError(f"cannot start {kind} {name}: {exc}") from None
        child = Child(name, kind, process, log)
        with self._lock:
            self._killed.discard(name)
            self._children[name] = child
            self._persist()
        return child

    def get(self, name: str) -> Child | None:
        return self._children.get(name)

    def children(self) -> list[Child]:
        with self._lock:
            return list(self._children.values())

    def stop(self, name: str, timeout_s: float = 5.0) -> None:
        with self._lock:
            child = self._children.pop(name, None)
            self._persist()
        if child is not None:
            _terminate(child.process, timeout_s)

    def kill(self, name: str) -> None:
        """SIGKILL a child (a crash, not a shutdown); it stays recorded until stopped."""
        child = self._children.get(name)
        self._killed.add(name)
        if child is not None and child.running():
            child.process.kill()
            child.process.wait(5)

    def casualties(self) -> list[Child]:
        """Children that are no longer running although nobody here stopped or killed them: someone else did,
        or they crashed."""
        with self._lock:
            return [c for name, c in self._children.items() if name not in self._killed and not c.running()]

    def stop_all(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            children = list(self._children.values())
            self._children.clear()
        for child in children:
            if child.running():
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in children:
            _terminate(child.process, max(0.1, deadline - time.monotonic()))
        with self._lock:
            self._persist()
        self._spawner.shutdown(wait=False)

    def _persist(self) -> None:
        self._on_change([{"pid": c.pid, "name": c.name, "kind": c.kind} for c in self._children.values()])


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def process_alive(pid: int, marker: str | None = None) -> bool:
    """True if ``pid`` runs and (when ``marker`` is given) its command line contains ``marker``."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if marker is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True  # no /proc (not Linux): trust the recorded PID
    if Path(f"/proc/{pid}/stat").exists():
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        if state == "Z":
            return False
    return marker in cmdline


def stop_pid(pid: int, marker: str, timeout_s: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL, a process of this run (checked by ``marker``). Returns True if one was stopped."""
    if not process_alive(pid, marker):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_alive(pid, marker):
            return True
        time.sleep(0.05)
    if process_alive(pid, marker):
        os.kill(pid, signal.SIGKILL)
    return True
