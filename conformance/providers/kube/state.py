"""A run on real clusters, on disk: its directory and ``state.json`` (kind and existing providers).

kind records which clusters the run created (only those are ever deleted), values captured while installing
(control-plane addresses) and what it needs to attach again; existing records the ``meshconf-*`` namespaces
it created. Directories live beside the local provider's, under ``$MESHCONF_STATE_DIR`` (default
``~/.local/state/meshconf/runs``), named ``<provider>-*``; nothing without the marker file is ever removed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from conformance.certs import write_private

__all__ = ["RunDirectory", "new_run_dir", "runs_root"]

_MARKER = ".meshconf-run"


def runs_root() -> Path:
    return Path(os.environ.get("MESHCONF_STATE_DIR") or Path.home() / ".local" / "state" / "meshconf" / "runs")


def new_run_dir(prefix: str) -> Path:
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    path.mkdir(mode=0o700)
    (path / _MARKER).write_text("created by meshconf; `meshconf down` removes it\n")
    return path


class RunDirectory:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "state.json"

    def read(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def update(self, **values: Any) -> None:
        data = self.read()
        data.update(values)
        write_private(self.path, json.dumps(data, indent=1).encode())

    def owned(self) -> bool:
        return (self.run_dir / _MARKER).is_file()

    def remove(self) -> None:
        if self.owned():
            shutil.rmtree(self.run_dir, ignore_errors=True)
