"""The session directory: what the processes of one run share, and the events that happen once per run.

It holds, besides the locks that let xdist workers take turns:

- ``meshconf-mesh.json``: the mesh under test (its run directory and description, and ``owner`` when someone
  else brought it up and tears it down: ``meshconf run`` or ``--mesh-attach``), or the one error that kept
  it from coming up. ``meshconf run`` writes it before pytest starts and names the directory in
  ``MESHCONF_SESSION_DIR``; a plain pytest session makes its own and writes it on first use.
- ``meshconf-lost.json``: why the environment is gone mid-run (the first check to find out writes it; every
  later check is broken with that reason at once).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import ConformanceError, PreflightFailed
from conformance.locks import file_lock
from conformance.redact import redact_tree

__all__ = ["SESSION_DIR_ENV", "SHARED", "bring_up_failure", "lost_reason", "record_lost", "session_mesh",
           "shared_dir"]

SESSION_DIR_ENV = "MESHCONF_SESSION_DIR"
"""Set by ``meshconf run``: the session directory it made (and removes), with the mesh it brought up."""
SHARED = pytest.StashKey[Path]()


def shared_dir(config: pytest.Config) -> Path:
    """A directory every xdist worker of this session shares with the controller."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return Path(workerinput["meshconf_shared"])
    return config.stash[SHARED]


def session_mesh(config: pytest.Config) -> dict[str, Any]:
    """The session's ``meshconf-mesh.json``: the mesh's run directory and description, or its error."""
    try:
        data: dict[str, Any] = json.loads((shared_dir(config) / "meshconf-mesh.json").read_text())
        return data
    except (OSError, ValueError):
        return {}


def bring_up_failure(exc: ConformanceError, out: Path) -> str:
    """The one message of a mesh that did not come up; its bring-up log, if it has one, is kept (redacted) in
    ``out/diagnostics/bring-up/`` and the message says where."""
    message = str(exc) if isinstance(exc, PreflightFailed) else f"the mesh did not come up: {exc}"
    log = getattr(exc, "log", None)
    if log:
        path = out / "diagnostics" / "bring-up" / "mesh.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(log)
            redact_tree([path])
            message += f" (bring-up log: {path})"
        except OSError as error:
            message += f" (its log could not be kept in {path}: {error.strerror or error})"
    return message


def record_lost(config: pytest.Config, error: str) -> None:
    """The environment is gone: say so once, for every check still to come."""
    shared = shared_dir(config)
    with file_lock(shared / "meshconf-mesh.lock"):
        lost = shared / "meshconf-lost.json"
        if not lost.exists():
            lost.write_text(json.dumps({"error": error}))


def lost_reason(config: pytest.Config) -> str | None:
    """Why the environment is gone, if an earlier check found it gone."""
    try:
        return str(json.loads((shared_dir(config) / "meshconf-lost.json").read_text())["error"])
    except (OSError, ValueError, KeyError):
        return None
