"""MeshConfig changes on real clusters: the ``mesh`` key of istiod's ConfigMap, changed and put back.

istiod reads its MeshConfig from the ``istio`` ConfigMap in ``istio-system`` (``istio-<revision>`` for a
revision), mounted as a file and watched (pilot/pkg/bootstrap/mesh.go); a change reaches istiod when the
kubelet refreshes the mounted ConfigMap (up to about a minute), and istiod then pushes every proxy in full. So
a change returns only once every istiod of the cluster serves it on ``/debug/mesh`` (``pilot-discovery request
GET /debug/mesh`` in its ``discovery`` container, which answers localhost without authentication).

Nothing the user owns stays changed: before the first write to a cluster's ConfigMap its original ``mesh`` text
is recorded in the run's state, and a change that brings the MeshConfig back to that value writes the original
text back byte for byte (comments and ordering included). ``restore_mesh_configs`` (the providers' ``down`` and
``meshconf down``) puts back whatever a crashed run left, but only while the ConfigMap still holds what
meshconf wrote: a ConfigMap someone else changed since is left alone, and the error says so. Every write
carries the resourceVersion it read, so a concurrent change is never overwritten.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from conformance.errors import ProviderError, TimeoutExpired
from conformance.meshconfig import ISTIO_NAMESPACE, MESH_CONFIG_KEY, merge_patch, mesh_config_map, undo_patch
from conformance.providers.kube.api import KubeAPI
from conformance.runstate import RunState

__all__ = ["STATE_KEY", "patch_mesh_config", "restore_mesh_configs"]

_DEBUG_MESH = ["pilot-discovery", "request", "GET", "/debug/mesh"]
POLL_S = 2.0
"""Pause between two reads of istiod's /debug/mesh."""

STATE_KEY = "meshConfig"
"""Run-state key: cluster -> {"configMap", "original", "written"} for every ConfigMap this run changed."""


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        found = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ProviderError(f"{where}: the mesh key is not valid YAML ({str(exc).splitlines()[0]})") from None
    if found is None:
        return {}
    if not isinstance(found, dict):
        raise ProviderError(f"{where}: the mesh key is not a YAML mapping")
    return found


def patch_mesh_config(api: KubeAPI, cluster: str, revision: str | None, patch: Mapping[str, Any],
                      state: RunState | None, timeout_s: float) -> dict[str, Any]:
    """Merge ``patch`` into the MeshConfig of ``cluster``'s istiod, wait until every istiod serves it, and
    return the merge patch that undoes it. Raises ProviderError / TimeoutExpired."""
    name = mesh_config_map(revision)
    where = f"{api.context}: ConfigMap {ISTIO_NAMESPACE}/{name}"
    found = api.config_map(ISTIO_NAMESPACE, name)
    if found is None:
        raise ProviderError(f"{where} (istiod's MeshConfig) does not exist; is Istio installed with this revision?")
    data, version = found
    text = data.get(MESH_CONFIG_KEY, "")
    current = _parse(text, where)
    wanted = merge_patch(current, patch)
    records = dict((state.read().get(STATE_KEY) if state else None) or {})
    record = dict(records.get(cluster) or {"configMap": name, "original": text})
    back_to_original = _parse(str(record["original"]), where) == wanted
    new_text = str(record["original"]) if back_to_original else yaml.safe_dump(wanted, sort_keys=False)
    if state is not None:  # recorded before the write, so that a crash right after it is still undone
        state.update(**{STATE_KEY: {**records, cluster: {**record, "written": new_text}}})
    api.patch_config_map(ISTIO_NAMESPACE, name, {MESH_CONFIG_KEY: new_text}, version)
    if state is not None and back_to_original:
        records.pop(cluster, None)
        state.update(**{STATE_KEY: records})
    _await_istiod(api, revision, patch, timeout_s)
    return undo_patch(current, patch)


def restore_mesh_configs(apis: Mapping[str, KubeAPI] | Callable[[str], KubeAPI], state: RunState) -> None:
    """Put back every ConfigMap the run changed and did not restore (a crashed or interrupted run).

    Raises ProviderError naming each ConfigMap someone else changed since meshconf wrote it (left as it is)."""
    records = dict(state.read().get(STATE_KEY) or {})
    conflicts = []
    for cluster, record in list(records.items()):
        api = apis(cluster) if callable(apis) else apis.get(cluster)
        if api is None:
            continue
        name = str(record["configMap"])
        found = api.config_map(ISTIO_NAMESPACE, name)
        if found is not None:
            data, version = found
            live = data.get(MESH_CONFIG_KEY, "")
            if live == record.get("written"):
                api.patch_config_map(ISTIO_NAMESPACE, name, {MESH_CONFIG_KEY: str(record["original"])}, version)
            elif live != record["original"]:
                conflicts.append(f"{api.context}: ConfigMap {ISTIO_NAMESPACE}/{name} was changed by someone else "
                                 f"after meshconf changed it, so it was left as it is; its mesh key was:\n"
                                 f"{record['original']}")
                continue
        records.pop(cluster)
        state.update(**{STATE_KEY: records})
    if conflicts:
        raise ProviderError("\n".join(conflicts))


def _holds(served: Any, patch: Mapping[str, Any]) -> bool:
    """``served`` (MeshConfig as protojson, which leaves out default values) has every value of ``patch``."""
    served = served if isinstance(served, Mapping) else {}
    for key, value in patch.items():
        if isinstance(value, Mapping):
            if not _holds(served.get(key), value):
                return False
        elif value in (None, [], "", 0, False):
            if served.get(key) not in (None, [], "", 0, False):
                return False
        elif served.get(key) != value:
            return False
    return True


def _await_istiod(api: KubeAPI, revision: str | None, patch: Mapping[str, Any], timeout_s: float) -> None:
    selector = {"app": "istiod", "istio.io/rev": revision or "default"}
    deadline = time.monotonic() + timeout_s
    last = "no istiod pod found"
    while True:
        pods = [p for p in api.pods(ISTIO_NAMESPACE, selector) if p.ready]
        served = []
        for pod in pods:
            # ProviderError (exec refused) propagates: without istiod's word a slow ConfigMap refresh would be
            # judged as a mesh that ignores the setting
            text = api.exec(ISTIO_NAMESPACE, pod.name, "discovery", _DEBUG_MESH)
            try:
                served.append((pod.name, json.loads(text)))
            except ValueError:
                served.append((pod.name, None))
        if pods and all(_holds(mesh, patch) for _, mesh in served):
            return
        if pods:
            stale = [name for name, mesh in served if not _holds(mesh, patch)]
            last = f"istiod pods still on the previous MeshConfig: {', '.join(stale)}"
        if time.monotonic() > deadline:
            raise TimeoutExpired(f"{api.context}: istiod did not load the changed MeshConfig within {timeout_s:.0f}s "
                                 f"({last}); the kubelet refreshes mounted ConfigMaps about once a minute "
                                 "(raise --timeout mesh_config_s=...)")
        time.sleep(POLL_S)
