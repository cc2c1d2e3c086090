"""Diagnostics on kind, for a check that failed or broke. Never secrets, never kubeconfigs.

The shared per-namespace part (pod logs current + previous, events, Envoy config_dump / clusters / stats of
every sidecar; Envoy redacts private keys in its config dump), then per primary ``istioctl remote-clusters``
and ``kind export logs`` of every cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from conformance.providers.kind.mesh import KindMesh

__all__ = ["write_diagnostics"]


def write_diagnostics(provider: KindMesh, dest: Path, namespaces: Sequence[str]) -> list[Path]:
    written = provider.namespace_diagnostics(dest, namespaces)
    for cluster in provider.topology.clusters:
        if cluster.role == "primary":
            path = dest / cluster.name / "remote-clusters.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(provider.istioctl(cluster.name, "remote-clusters"))
            written.append(path)
        kind_logs = dest / cluster.name / "kind-logs"
        provider.runner.run(["kind", "export", "logs", str(kind_logs), "--name", cluster.name])
        if kind_logs.is_dir():
            written.append(kind_logs)
    return written
