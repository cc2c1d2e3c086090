"""``Scenario.load(during=...)`` for a forward load: the action runs in a thread, on the window's time axis."""

from __future__ import annotations

import threading
import time

import pytest

from conformance.errors import EnvironmentBroken
from conformance.scenario import ForwardRun, RunningLoad


def test_during_waits_for_the_window_and_marks_on_its_axis() -> None:
    run = ForwardRun(open_within_s=5)
    seen: list[float] = []

    def during(load: RunningLoad) -> None:
        seen.append(load.window_opened_at())
        time.sleep(0.05)
        load.mark("fault")

    acting = threading.Thread(target=run.act, args=(during,))
    acting.start()
    time.sleep(0.05)
    run.open()
    acting.join(5)
    run.raise_failure()
    assert seen and [e.label for e in run.events] == ["fault"]
    assert 0.04 <= run.events[0].at_s < 1.0


def test_a_window_that_never_opens_breaks_the_action_and_its_failure_surfaces() -> None:
    run = ForwardRun(open_within_s=5)
    acting = threading.Thread(target=run.act, args=(lambda load: load.window_opened_at(),))
    acting.start()
    run.close()  # the forward load failed before its measured window
    acting.join(5)
    with pytest.raises(EnvironmentBroken, match="never opened its measured window"):
        run.raise_failure()
