"""A run on disk: its directory, and the state file that lets ``meshconf down`` clean it up later.

Runs live under ``$MESHCONF_STATE_DIR`` (default ``~/.local/state/meshconf/runs``), one directory each, named
``<provider>-<time>-<random>``, with ``state.json`` (0600: it may hold an API token). The local provider
records its mesh process and the PID of every Envoy and probe there (and keeps its CA keys and xDS files in
the directory); kind records the clusters it created; existing the namespaces it created. meshconf deletes a
run directory when the run ends (unless ``--keep``); it never deletes anything it did not create.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from conformance.certs import write_private

__all__ = ["RunState", "new_run_dir", "runs_root"]

_MARKER = ".meshconf-run"
"""Present in every run directory meshconf creates; nothing without it is ever deleted."""


def runs_root() -> Path:
    return Path(os.environ.get("MESHCONF_STATE_DIR") or Path.home() / ".local" / "state" / "meshconf" / "runs")


def new_run_dir(prefix: str) -> Path:
    """A new run directory ``<prefix>-<time>-<random>`` (0700), marked as created by meshconf."""
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    path.mkdir(mode=0o700)
    (path / _MARKER).write_text("created by meshconf; `meshconf down` removes it\n")
    return path


class RunState:
    """``state.json`` of one run. Written atomically; readers never see half a file."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "state.json"
        self._lock = threading.Lock()

    def read(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def update(self, **values: Any) -> None:
        with self._lock:
            data = self.read()
            data.update(values)
            write_private(self.path, json.dumps(data, indent=1).encode())

    def record_processes(self, processes: list[dict[str, object]]) -> None:
        self.update(processes=processes)

    def owned(self) -> bool:
        """True if meshconf created this directory (so it may delete it)."""
        return (self.run_dir / _MARKER).is_file()

    def remove(self) -> None:
        if self.owned():
            shutil.rmtree(self.run_dir, ignore_errors=True)
