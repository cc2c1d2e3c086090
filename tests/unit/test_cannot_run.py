"""A check that this environment cannot host is skipped with the reason, never failed or broken."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from conformance import plugin
from conformance.errors import CannotRun
from conformance.providers import build_config


def test_cannot_run_becomes_a_skip_with_the_reason() -> None:
    calls: Any = plugin.pytest_runtest_call(SimpleNamespace(stash={}))  # type: ignore[arg-type]
    next(calls)
    with pytest.raises(pytest.skip.Exception, match="already has a mesh-wide PeerAuthentication"):
        calls.throw(CannotRun("context a already has a mesh-wide PeerAuthentication istio-system/default"))


def test_a_check_whose_topology_lacks_what_it_needs_skips_saying_which(tmp_path: Any) -> None:
    from conformance.check import Area, CheckInfo
    from conformance.scenario import Scenario

    info = CheckInfo("failover-x-y", Area.FAILOVER, "d", frozenset())
    scenario = Scenario(SimpleNamespace(), info, build_config(topology="multi-primary"), tmp_path)  # type: ignore[arg-type]
    scenario.require(True, "anything")
    with pytest.raises(CannotRun, match="check failover-x-y needs clusters in three regions; topology multi-primary "
                                        "has not"):
        scenario.require(False, "clusters in three regions")
