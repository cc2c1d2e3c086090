"""await_convergence: the one way a check waits for config to take effect.

Config in a mesh is eventually consistent. A check states what it expects (an ``expect_*`` call) and an
action that produces responses; ``await_convergence`` repeats the action until the expectation holds for N
consecutive polls (default 3) within the consistency budget (default 30 s), polling every 100 ms.

The pass/fail decision stays with the expectation: if the budget runs out, the expectation's last
failure is raised again (as a Nonconformance naming the same ``expect_*``) with how long it waited and how
many polls it made, so the failure message carries the last responses and which clusters answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from conformance.expect import Nonconformance

__all__ = ["Converged", "await_convergence"]

T = TypeVar("T")


@dataclass(frozen=True)
class Converged(Generic[T]):
    result: T
    """The last result (it met the expectation)."""
    elapsed_s: float
    """From the first poll to the first of the N consecutive successes."""
    polls: int


def await_convergence(
    action: Callable[[], T],
    expectation: Callable[[T], None],
    *,
    budget_s: float,
    interval_s: float,
    consecutive: int,
) -> Converged[T]:
    """Poll ``action`` until ``expectation`` passes ``consecutive`` times in a row; see the module docstring."""
    __tracebackhide__ = True
    started = time.monotonic()
    deadline = started + budget_s
    streak = 0
    first_success: float | None = None
    polls = 0
    while True:
        result = action()
        polls += 1
        try:
            expectation(result)
        except AssertionError as failure:
            streak, first_success = 0, None
            if time.monotonic() >= deadline:
                raise Nonconformance(
                    f"not converged within {budget_s:g}s ({polls} polls, {consecutive} consecutive successes "
                    f"needed): {failure}", getattr(failure, "expectation", None),
                ) from None
        else:
            streak += 1
            if first_success is None:
                first_success = time.monotonic()
            if streak >= consecutive:
                return Converged(result, first_success - started, polls)
        time.sleep(interval_s)
