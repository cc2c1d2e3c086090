"""What a load run does (LoadProfile) and where its requests go (HttpTarget)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from conformance.config import RunConfig
from conformance.errors import UsageError
from conformance.load.result import LoadResult, LoadShortfall

if TYPE_CHECKING:
    from conformance.provider import ProbeHandle

__all__ = ["ForwardTarget", "HttpTarget", "LoadProfile", "direct_entry", "sidecar_entry"]


@dataclass(frozen=True)
class LoadProfile:
    """Rate, users, warm-up and window of one run, and when it counts as a generator shortfall.

    Defaults come from the run's ``LoadSettings`` (``--load NAME=VALUE``, the profile's ``load:``); a check
    overrides what it needs with :meth:`from_config` keywords.
    """

    rate_rps: float
    users: int
    spawn_rate_per_s: float
    warmup_s: float
    duration_s: float
    timeout_s: float
    """Per request: connect + request + response."""
    min_rate_pct: float = 98.0
    max_generator_cpu_pct: float = 90.0

    def __post_init__(self) -> None:
        if self.rate_rps <= 0 or self.users < 1 or self.duration_s <= 0 or self.warmup_s < 0:
            raise UsageError(f"a load profile needs rate_rps > 0, users >= 1, duration_s > 0 and warmup_s >= 0; "
                             f"got {self}")
        if self.spawn_rate_per_s <= 0 or self.timeout_s <= 0:
            raise UsageError(f"a load profile needs spawn_rate_per_s > 0 and timeout_s > 0; got {self}")

    @classmethod
    def from_config(cls, config: RunConfig, **overrides: Any) -> LoadProfile:
        """The run's load settings, with ``overrides`` (any field of this class) on top."""
        settings = config.load
        values: dict[str, Any] = {
            "rate_rps": settings.rate_rps, "users": settings.users, "spawn_rate_per_s": settings.spawn_rate_per_s,
            "warmup_s": settings.warmup_s, "duration_s": settings.duration_s,
            "timeout_s": config.timeouts.call_timeout_s, "min_rate_pct": settings.min_rate_pct,
            "max_generator_cpu_pct": settings.max_generator_cpu_pct,
        }
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UsageError(f"unknown load profile field {unknown[0]!r}; known: {', '.join(sorted(known))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def but(self, **overrides: Any) -> LoadProfile:
        """A copy with some fields changed."""
        return replace(self, **overrides)

    def require_rate(self, result: LoadResult) -> None:
        """Raise LoadShortfall (carrying ``result``) when the run cannot stand for the rate asked."""
        reason = result.shortfall(self.min_rate_pct, self.max_generator_cpu_pct)
        if reason is not None:
            raise LoadShortfall(f"{result.label}: {reason}; no latency verdict at this rate "
                                f"(lower --load rate_rps, or generate from more processes)", result)

    @property
    def per_user_rps(self) -> float:
        return self.rate_rps / self.users

    @property
    def spawn_s(self) -> float:
        return self.users / self.spawn_rate_per_s

    @property
    def planned_s(self) -> float:
        """Spawning + warm-up + window + the last calls finishing: how long a run should take."""
        return self.spawn_s + self.warmup_s + self.duration_s + self.timeout_s


@dataclass(frozen=True)
class HttpTarget:
    """An HTTP endpoint a generator on this machine can reach: an address, a port and the Host to send.

    North-south: an ingress gateway's address and port, with the Host of the Gateway/VirtualService.
    From a workload's sidecar: its outbound listener, with the destination service's Host (the local mesh's
    sidecars act as HTTP proxies, as the Host decides the route). Direct: the app's own address, no Host.
    """

    address: str
    port: int
    host: str | None = None
    """The Host header; None sends ``address:port``."""
    path: str = "/"
    label: str = ""
    """What this path is, in words (``mesh``, ``direct``, ``ingress``)."""

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise UsageError(f"a load target's path must start with '/', got {self.path!r}")
        if not 0 < self.port < 65536:
            raise UsageError(f"a load target's port must be 1-65535, got {self.port}")

    @property
    def base_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def __str__(self) -> str:
        header = f" Host: {self.host}" if self.host else ""
        return f"{self.base_url}{self.path}{header}"


@dataclass(frozen=True)
class ForwardTarget:
    """East-west load from inside the mesh: ``source`` (a probe workload) calls ``url`` through its sidecar."""

    source: ProbeHandle
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    label: str = ""

    def __str__(self) -> str:
        return f"{self.url} from {self.source}"


def sidecar_entry(source: ProbeHandle, destination: ProbeHandle, *, path: str = "/", port: int = 8080) -> HttpTarget:
    """Enter the mesh at ``source``'s sidecar (its outbound listener), calling ``destination`` as ``source``'s
    app would. Needs a provider with Feature.SIDECAR_ENTRY (``extra["outbound"]``); raises UsageError else."""
    outbound = _extra(source, "outbound")
    address, _, entry_port = outbound.rpartition(":")
    return HttpTarget(address, int(entry_port), host=f"{destination.host}:{port}", path=path,
                      label=f"mesh {source.service} -> {destination.service}")


def direct_entry(destination: ProbeHandle, *, path: str = "/", port: int = 8080) -> HttpTarget:
    """``destination``'s app itself, bypassing every sidecar: the no-mesh baseline (Feature.SIDECAR_ENTRY)."""
    address = _extra(destination, "loopback") if destination.in_mesh else destination.instances[0].address
    return HttpTarget(address, port, path=path, label=f"direct -> {destination.service}")


def _extra(probe: ProbeHandle, key: str) -> str:
    value = probe.instances[0].extra.get(key) if probe.instances else None
    if not value:
        raise UsageError(f"{probe} has no {key!r} entry: its provider cannot send load into workloads from "
                         f"this machine (Feature.SIDECAR_ENTRY), or it has no sidecar")
    return str(value)
