"""The local mesh's kubelet: restart what died on its own, back off for what keeps dying, record each death once."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from conformance.errors import ProviderError
from conformance.providers.local.kubelet import Kubelet


@dataclass
class FakeChild:
    name: str
    pid: int
    returncode: int = -9

    @property
    def process(self) -> Any:
        return SimpleNamespace(returncode=self.returncode)

    def log_tail(self, lines: int = 20) -> str:
        return f"last words of {self.pid}"


class FakeSupervisor:
    def __init__(self) -> None:
        self.dead: list[FakeChild] = []

    def casualties(self) -> list[FakeChild]:
        return list(self.dead)


def _kubelet(supervisor: FakeSupervisor, restarted: list[str], fail: bool = False) -> Kubelet:
    def restart(name: str) -> None:
        restarted.append(name)
        if fail:
            raise ProviderError("no config from the control plane")
        supervisor.dead = [c for c in supervisor.dead if c.name != name]

    return Kubelet(supervisor, threading.RLock(), restart)  # type: ignore[arg-type]


def test_a_death_is_recorded_once_and_restarted_at_once() -> None:
    supervisor, restarted = FakeSupervisor(), []
    kubelet = _kubelet(supervisor, restarted)
    supervisor.dead = [FakeChild("pod-a/envoy", 11)]
    for child in supervisor.casualties():
        kubelet.observe()
        kubelet._handle(child.name, child.pid)
    assert restarted == ["pod-a/envoy"]
    deaths = kubelet.deaths()
    assert [(d.name, d.pid, d.returncode, d.tail, d.restart) for d in deaths] == [
        ("pod-a/envoy", 11, -9, "last words of 11", "restarted")]
    assert kubelet.deaths(since=deaths[0].at + 1) == []


def test_a_process_that_dies_again_waits_its_back_off() -> None:
    supervisor, restarted = FakeSupervisor(), []
    kubelet = _kubelet(supervisor, restarted)
    for pid in (11, 12):
        supervisor.dead = [FakeChild("pod-a/probe", pid)]
        kubelet.observe()
        kubelet._handle("pod-a/probe", pid)
    assert restarted == ["pod-a/probe"]  # the second death waits 10 s, as kubelet's back-off does
    assert [d.restart for d in kubelet.deaths()] == ["restarted", "pending"]


def test_a_failed_restart_says_why() -> None:
    supervisor, restarted = FakeSupervisor(), []
    kubelet = _kubelet(supervisor, restarted, fail=True)
    supervisor.dead = [FakeChild("gw/envoy", 7)]
    kubelet.observe()
    kubelet._handle("gw/envoy", 7)
    assert kubelet.deaths()[0].restart == "could not be restarted: no config from the control plane"
