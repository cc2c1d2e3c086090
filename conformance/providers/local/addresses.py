"""The local mesh's address plan: every cluster gets a block in 127.0.0.0/8, every workload its own address.

Several meshes can run on one machine at once (parallel test runs): each claims a *slot* k (0-23) for its
lifetime, and its cluster i (1-based) owns 127.C.0.0/16 with C = 10 * (k + 1) + i:

- ``127.C.X.Y`` with X < 127: pod IPs, one per workload instance. What other workloads connect to, so a
  sidecar binds its inbound ports here (15006 and the service ports: the capture iptables would do).
- ``127.C.(X+128).Y``: that pod's own loopback. The app listens here; its sidecar's outbound (15001) and
  admin (15000) listeners too, as on ``localhost`` in a pod.
- ``127.C.127.Y``: the cluster's infrastructure (gateways, link relays).

Nothing is ever bound outside 127.0.0.0/8; :func:`require_loopback` refuses it. All address arithmetic is
here so that a port-based plan (for hosts that answer only on 127.0.0.1) can replace it in one place.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from conformance.errors import ProviderError, UsageError

__all__ = [
    "ADMIN_PORT",
    "CONTROL_PORT",
    "INBOUND_PORT",
    "INBOUND_SOURCE",
    "OUTBOUND_PORT",
    "AddressPlan",
    "PodAddresses",
    "claim_slot",
    "free_slots",
    "require_loopback",
]

INBOUND_PORT = 15006
OUTBOUND_PORT = 15001
ADMIN_PORT = 15000
CONTROL_PORT = 15100
INBOUND_SOURCE = "127.0.0.6"
"""Source address of the sidecar's connections to its app, as in Istio."""

MAX_CLUSTERS = 9
_SLOTS = 24
_INFRA_ROW = 127


def require_loopback(address: str) -> str:
    """Return ``address`` if it is in 127.0.0.0/8, else raise ProviderError."""
    if ipaddress.ip_address(address) not in ipaddress.ip_network("127.0.0.0/8"):
        raise ProviderError(f"refusing to bind {address}: the local mesh only uses 127.0.0.0/8")
    return address


@dataclass(frozen=True)
class PodAddresses:
    pod_ip: str
    """What the rest of the mesh connects to."""
    loopback: str
    """The pod's own loopback: app, sidecar outbound and admin listen here."""


def slot_lock_dir() -> Path:
    """Machine-wide (127.0.0.0/8 is shared by every user), so world-writable like /tmp itself."""
    return Path(tempfile.gettempdir()) / "meshconf-address-slots"


def claim_slot(lock_dir: Path | None = None) -> tuple[int, IO[str]]:
    """Claim a free address slot for this process's lifetime (the returned file must stay open)."""
    lock_dir = lock_dir or slot_lock_dir()
    if not lock_dir.is_dir():
        lock_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(lock_dir, 0o1777)
    for slot in range(_SLOTS):
        path = lock_dir / f"slot-{slot}.lock"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)
        handle = os.fdopen(fd, "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return slot, handle
    raise ProviderError(f"all {_SLOTS} local mesh address slots are in use: too many meshes on this machine "
                        "(see `meshconf down`)")


def free_slots(lock_dir: Path | None = None) -> int:
    """How many address slots no mesh holds right now (each is tried and let go at once)."""
    lock_dir = lock_dir or slot_lock_dir()
    free = 0
    for slot in range(_SLOTS):
        path = lock_dir / f"slot-{slot}.lock"
        if not path.exists():
            free += 1
            continue
        try:
            handle = open(path)  # noqa: SIM115 - closed below; flock needs the open file
        except OSError:
            continue  # another user's lock file we cannot open: count it as taken
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue
            fcntl.flock(handle, fcntl.LOCK_UN)
            free += 1
    return free


class AddressPlan:
    """Hands out addresses; thread-safe. ``cluster_index`` is the 1-based position in the topology."""

    def __init__(self, cluster_names: list[str] | tuple[str, ...], slot: int = 0) -> None:
        if len(cluster_names) > MAX_CLUSTERS:
            raise UsageError(f"the local mesh supports at most {MAX_CLUSTERS} clusters")
        if not 0 <= slot < _SLOTS:
            raise ProviderError(f"address slot {slot} is out of range 0-{_SLOTS - 1}")
        self._index = {name: 10 * slot + i + 1 for i, name in enumerate(cluster_names)}
        self._counters = {name: itertools.count(0) for name in cluster_names}
        self._infra = {name: itertools.count(1) for name in cluster_names}
        self._lock = threading.Lock()

    def block(self, cluster: str) -> str:
        return f"127.{10 + self._index[cluster]}.0.0/16"

    def pod(self, cluster: str) -> PodAddresses:
        with self._lock:
            n = next(self._counters[cluster])
        row, col = divmod(n, 250)
        if row >= _INFRA_ROW:
            raise ProviderError(f"cluster {cluster} ran out of pod addresses")
        octet = 10 + self._index[cluster]
        return PodAddresses(f"127.{octet}.{row}.{col + 2}", f"127.{octet}.{row + 128}.{col + 2}")

    def infrastructure(self, cluster: str) -> str:
        """A fresh address for a gateway or relay in ``cluster``."""
        with self._lock:
            n = next(self._infra[cluster])
        return f"127.{10 + self._index[cluster]}.{_INFRA_ROW}.{n}"
