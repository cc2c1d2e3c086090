"""The kind provider's settings (``--reuse``, ``--kind-node-image``; the install settings it shares with k3s)."""

from __future__ import annotations

from dataclasses import dataclass

from conformance.providers.kube.settings import InstallSettings
from conformance.settings import RUN_COMMANDS, setting

__all__ = ["KindSettings"]


@dataclass(frozen=True)
class KindSettings(InstallSettings):
    reuse: bool = setting(False, help="use existing clusters of the topology's names (and never delete them)")
    kind_node_image: str | None = setting(None, metavar="IMAGE", commands=(*RUN_COMMANDS, "plan"),
                                          help="node image instead of the pinned kindest/node (Kubernetes 1.34)")
