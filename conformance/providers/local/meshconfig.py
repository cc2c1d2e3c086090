"""The MeshConfig of each control plane of the local mesh (what the ``istio`` ConfigMap holds for istiod).

Every cluster with a control plane has its own MeshConfig, as every primary's istiod reads its own cluster's
ConfigMap; a remote cluster's proxies follow their primary's. The translator reads it through
``MeshView.mesh_config``. A change applies at the next sync (the caller re-translates every proxy), as
istiod pushes a full update when its MeshConfig changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from conformance.meshconfig import merge_patch, undo_patch
from conformance.providers.local.support import check_supported_mesh_config
from conformance.topology import Topology

__all__ = ["MeshConfigs"]


class MeshConfigs:
    """MeshConfig per control-plane cluster; empty (Istio's defaults) until a check patches it."""

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self._configs: dict[str, dict[str, Any]] = {c.name: {} for c in topology.clusters
                                                     if c.config_cluster == c.name}

    def of(self, control_plane: str) -> Mapping[str, Any]:
        return self._configs.get(control_plane, {})

    def control_planes(self, clusters: Iterable[str]) -> list[str]:
        """The control-plane clusters of ``clusters`` (a remote cluster's is its primary), each once."""
        return list(dict.fromkeys(self._topology.cluster(c).config_cluster for c in clusters))

    def patch(self, patch: Mapping[str, Any], clusters: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Merge ``patch`` into the control planes of ``clusters``; return per control plane the undo patch.

        Raises UnsupportedError / UsageError (nothing is changed then)."""
        check_supported_mesh_config(patch)
        undo = {}
        for name in self.control_planes(clusters):
            undo[name] = undo_patch(self._configs[name], patch)
            self._configs[name] = merge_patch(self._configs[name], patch)
        return undo
