"""Child processes that must not outlive their parent (Linux ``PR_SET_PDEATHSIG``).

The kernel sends the child a signal when the *thread* that started it exits, so start such children from a
thread that lives as long as they should (the main thread, or a long-lived spawner thread). Elsewhere than
Linux this does nothing, and the run's state file still lets ``meshconf down`` clean up by PID.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
from collections.abc import Callable

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when its parent dies."""

    def arrange() -> None:  # runs in the child between fork and exec
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)

    return arrange
