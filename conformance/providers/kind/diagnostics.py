"""Diagnostics on kind, for a check that failed or broke. Never secrets, never kubeconfigs.

Per cluster and namespace: every pod's logs (current and previous, every container), the namespace's events,
and for pods with a sidecar the Envoy ``config_dump`` (Envoy redacts private keys in it), ``clusters`` and
``stats``; per primary ``istioctl remote-clusters``; and ``kind export logs`` of every cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from conformance.errors import ConformanceError

if TYPE_CHECKING:
    from conformance.providers.kind.provider import KindProvider

__all__ = ["write_diagnostics"]

_ENVOY_PATHS = {"config_dump.json": "config_dump", "clusters.txt": "clusters", "stats.txt": "stats"}


def write_diagnostics(provider: KindProvider, dest: Path, namespaces: Sequence[str]) -> list[Path]:
    written: list[Path] = []

    def write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)

    for cluster in provider.topology.cluster_names:
        try:
            api = provider.api(cluster)
            for namespace in namespaces:
                folder = dest / cluster / namespace
                write(folder / "events.txt", "\n".join(api.events(namespace)) + "\n")
                for pod in api.pods(namespace, {}):
                    containers = ["probe", "istio-proxy"] if "sidecar.istio.io/inject" not in pod.labels else ["probe"]
                    for container in containers:
                        write(folder / pod.name / f"{container}.log", api.logs(namespace, pod.name, container))
                        write(folder / pod.name / f"{container}.previous.log",
                              api.logs(namespace, pod.name, container, previous=True))
                    if "istio-proxy" in containers:
                        for file_name, path in _ENVOY_PATHS.items():
                            try:
                                text = api.exec(namespace, pod.name, "istio-proxy",
                                                ["pilot-agent", "request", "GET", path])
                            except ConformanceError as exc:
                                text = f"(not available: {exc})"
                            write(folder / pod.name / file_name, text)
        except ConformanceError as exc:
            write(dest / cluster / "error.txt", f"{exc}\n")
        if provider.topology.cluster(cluster).role == "primary":
            write(dest / cluster / "remote-clusters.txt", provider.istioctl(cluster, "remote-clusters"))
        kind_logs = dest / cluster / "kind-logs"
        provider.runner.run(["kind", "export", "logs", str(kind_logs), "--name", cluster])
        if kind_logs.is_dir():
            written.append(kind_logs)
    return written
