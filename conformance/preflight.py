"""Before a run starts anything: can it write where it must, and can the provider come up here?

- ``check_out(out)``: the ``--out`` directory is a directory (or can be made one), is writable, has room, and
  nothing the user owns sits where meshconf writes. A bad path is a usage error (exit 2); a full disk is the
  environment (exit 3). Both are one line.
- ``preflight(config, topology)``: the run-state directory is writable, then the provider's own preflight
  (through the registry: the core never names a provider). Every problem is one line with its fix; any
  problem raises PreflightFailed (exit 3) before anything is started.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from conformance.config import RunConfig
from conformance.errors import EnvironmentBroken, PreflightFailed, UsageError
from conformance.providers import preflight_provider
from conformance.runstate import runs_root
from conformance.topology import Topology

__all__ = ["MIN_OUT_FREE_MB", "OUT_DIRS", "OUT_FILES", "check_out", "preflight"]

OUT_DIRS = ("allure-results", "diagnostics", "load")
"""Directories meshconf writes in ``--out`` (and replaces at the start of a run)."""
OUT_FILES = ("junit.xml", "conformance-report.json", "conformance-report.md")
"""Files meshconf writes in ``--out`` (and replaces at the start of a run)."""
MIN_OUT_FREE_MB = 200
"""A multi-network catalogue run here wrote 14 MB (Allure results 8 MB, load results 5 MB) with one check
failing, whose diagnostics took 1.2 MB: with every check failing about 60 MB. 200 MB leaves room for
bigger meshes and longer load runs."""


def check_out(out: Path) -> None:
    """Make sure ``out`` can take this run's reports. UsageError (exit 2) for a path that cannot be used;
    EnvironmentBroken (exit 3) when its filesystem is (nearly) full."""
    flag = f"--out {out}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} is a file, not a directory; pass another --out (meshconf never replaces a file "
                         "it did not write)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), out)
        raise UsageError(f"{flag} cannot be created: {blocker} is a file; pass another --out") from None
    except OSError as exc:
        raise UsageError(f"{flag} cannot be created: {exc.strerror or exc}; pass another --out") from None
    for name in OUT_DIRS:
        if (out / name).exists() and not (out / name).is_dir():
            raise UsageError(f"{out / name} is in the way: meshconf writes a directory there; move that file, or "
                             "pass another --out")
    for name in OUT_FILES:
        if (out / name).is_dir():
            raise UsageError(f"{out / name} is in the way: meshconf writes a file there; move that directory, or "
                             "pass another --out")
    try:
        with tempfile.TemporaryFile(dir=out, prefix=".meshconf-write-test-"):
            pass
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise EnvironmentBroken(f"{flag} is full ({exc.strerror}); free some space or pass another --out") from None
        raise UsageError(f"{flag} is not writable ({exc.strerror or exc}); pass a directory you can write") from None
    free_mb = shutil.disk_usage(out).free / 1e6
    if free_mb < MIN_OUT_FREE_MB:
        raise EnvironmentBroken(f"{flag} has only {free_mb:.0f} MB free; a run writes up to about {MIN_OUT_FREE_MB} "
                                "MB there (reports, diagnostics, load results): free some space or pass another --out")


def preflight(config: RunConfig, topology: Topology) -> None:
    """Raise PreflightFailed listing every problem that would stop the mesh from coming up."""
    problems = []
    state = _state_dir_problem()
    if state:
        problems.append(state)
    problems += preflight_provider(config, topology)
    if problems:
        raise PreflightFailed(config.provider, problems)


def _state_dir_problem() -> str | None:
    root = runs_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        writable = os.access(root, os.W_OK | os.X_OK)
    except OSError as exc:
        return (f"the run-state directory {root} cannot be created ({exc.strerror or exc}); set MESHCONF_STATE_DIR "
                "to a directory you can write")
    if not writable:
        return f"the run-state directory {root} is not writable; set MESHCONF_STATE_DIR to a directory you can write"
    return None
