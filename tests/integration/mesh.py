"""Small helpers for the real-Envoy integration tests: Istio documents and calls, nothing that decides."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from conformance.probe import CallResult, ProbeClient
from conformance.provider import ProbeHandle, Provider

CLUSTERS = ["cluster1", "cluster2"]


def doc(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    security = ("PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication")
    group = "security.istio.io" if kind in security else "networking.istio.io"
    return {"apiVersion": f"{group}/v1", "kind": kind, "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def call(mesh: Provider, source: ProbeHandle, url: str, count: int = 10, **kwargs: Any) -> CallResult:
    return ProbeClient(mesh, 2, 60).call(source, url, count, **kwargs)


def eventually(action: Callable[[], CallResult], holds: Callable[[CallResult], bool],
               within_s: float = 5.0) -> CallResult:
    """Repeat ``action`` until ``holds`` or time runs out; return the last result (the test asserts on it)."""
    deadline = time.monotonic() + within_s
    result = action()
    while not holds(result) and time.monotonic() < deadline:
        time.sleep(0.1)
        result = action()
    return result


def versions(result: CallResult) -> set[str]:
    return {r.version for r in result.responses if r.version}


def share(result: CallResult, clusters: Iterable[str]) -> float:
    wanted = set(clusters)
    return sum(1 for r in result.responses if r.cluster in wanted) / max(1, len(result))


def no_retries(namespace: str, host: str = "server") -> dict[str, Any]:
    """A VirtualService that turns retries off for ``host``: the client sees exactly what the mesh does."""
    return doc("VirtualService", host, namespace,
               {"hosts": [host], "http": [{"route": [{"destination": {"host": host}}], "retries": {"attempts": 0}}]})
