"""Reading Envoy stats of a workload's sidecar (the same names on the local mesh and on Istio)."""

from __future__ import annotations

from conformance.errors import ProviderError
from conformance.provider import DATA_PORT, ProbeHandle, Provider

__all__ = ["inbound_requests", "stat_values"]


def stat_values(mesh: Provider, probe: ProbeHandle, regex: str, instance: int = 0) -> dict[str, int]:
    """Counters of the probe's sidecar whose names match ``regex`` (Envoy's ``/stats?filter=``)."""
    text = mesh.proxy_admin(probe, f"/stats?filter={regex}", instance)
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep and value.strip().isdigit():
            values[name] = int(value)
    return values


def inbound_requests(mesh: Provider, probe: ProbeHandle, port: int = DATA_PORT) -> int:
    """Requests every instance's sidecar has received on ``port`` (Istio's inbound stat prefix)."""
    name = f"http.inbound_0.0.0.0_{port}.downstream_rq_total"
    total = 0
    for index in range(len(probe.instances)):
        found = stat_values(mesh, probe, f"^{name.replace('.', '[.]')}$", index)
        if name not in found:
            raise ProviderError(f"{probe}'s sidecar has no {name} stat")
        total += found[name]
    return total
