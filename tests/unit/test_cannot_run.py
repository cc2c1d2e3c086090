"""A check that this environment cannot host is skipped with the reason, never failed or broken."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from conformance import plugin
from conformance.errors import CannotRun


def test_cannot_run_becomes_a_skip_with_the_reason() -> None:
    calls: Any = plugin.pytest_runtest_call(SimpleNamespace(stash={}))  # type: ignore[arg-type]
    next(calls)
    with pytest.raises(pytest.skip.Exception, match="already has a mesh-wide PeerAuthentication"):
        calls.throw(CannotRun("context a already has a mesh-wide PeerAuthentication istio-system/default"))
