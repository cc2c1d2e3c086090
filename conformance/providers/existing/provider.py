"""ExistingProvider: kubeconfig contexts that already run Istio (staging before an upgrade).

One ``--context`` per cluster of the topology, in its order. meshconf changes nothing it did not create: it
deploys probes only into ``meshconf-*`` namespaces and deletes them when the run ends; mesh-wide config (the
root namespace, anything cluster-scoped) is refused unless the run was started with ``--allow-mesh-wide``, and
even then an object that already exists and was not created by this run is never changed or deleted: what this
run creates carries the ``meshconf.io/run`` annotation, and only such objects are deleted.

Preflight (``preflight.py``) reads each cluster's real cluster ID, istiod revision (``--revision``), region and
the path to its pods; the clusters this provider reports carry the real regions, and probe namespaces are
labelled for the revision in use. The topology's link round trip cannot be guaranteed on clusters meshconf
does not own, so ``Feature.LINK_RTT`` is never offered: the latency checks that need it skip, saying so.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from conformance.config import RunConfig
from conformance.errors import CannotRun, EnvironmentBroken, UsageError
from conformance.istio import doc_ref
from conformance.provider import Feature, MeshDescription, ProbeHandle, ProbeSpec
from conformance.providers.existing.preflight import DEFAULT_REVISION, ClusterReport, preflight
from conformance.providers.existing.settings import ExistingSettings
from conformance.providers.kube.api import KubeAPI
from conformance.providers.kube.lifecycle import restore_control_planes
from conformance.providers.kube.mesh import KubeMesh
from conformance.providers.kube.meshconfig import restore_mesh_configs
from conformance.runstate import RunState, new_run_dir
from conformance.topology import Topology

__all__ = ["OWN_PREFIX", "RUN_ANNOTATION", "ExistingProvider"]

OWN_PREFIX = "meshconf-"
ROOT_NAMESPACE = "istio-system"
"""Istio's default root namespace (MeshConfig rootNamespace), where mesh-wide policies live."""
RUN_ANNOTATION = "meshconf.io/run"
"""Set on every object this provider creates outside its own namespaces: the run directory's name."""
_MANAGED_BY = {"app.kubernetes.io/managed-by": "meshconf"}


class ExistingProvider(KubeMesh):
    """Clusters you already have, reached through kubeconfig contexts."""

    name = "existing"
    Settings = ExistingSettings
    OFFERS = frozenset({Feature.MULTI_CLUSTER, Feature.MULTI_NETWORK, Feature.EAST_WEST_GATEWAY,  # what features()
                        Feature.OUT_OF_MESH_WORKLOADS, Feature.WORKLOAD_FAULTS, Feature.MESH_WIDE_CONFIG,  # can return
                        Feature.CONTROL_PLANE_FAULTS})

    def __init__(self, config: RunConfig, topology: Topology, run_dir: Path | None = None,
                 api_factory: Callable[[str], KubeAPI] | None = None) -> None:
        super().__init__(config, topology, run_dir)
        self.settings = config.settings_as(ExistingSettings)
        if len(self.settings.contexts) != len(topology.clusters):
            raise UsageError(f"--provider existing got {len(self.settings.contexts)} --context for topology "
                             f"{topology.name} with {len(topology.clusters)} clusters; give one per cluster, in the "
                             f"topology's order ({', '.join(topology.cluster_names)})")
        self.contexts = dict(zip(topology.cluster_names, self.settings.contexts, strict=True))
        self._api_factory = api_factory or (lambda context: KubeAPI(context))
        self._apis: dict[str, KubeAPI] = {}
        self.reports: list[ClusterReport] = []
        self._revisions: dict[str, str | None] = {}
        self._transports: dict[str, str] = {}
        if run_dir is not None:
            self._restore(RunState(run_dir).read())

    def api(self, cluster: str) -> KubeAPI:
        if cluster not in self._apis:
            self._apis[cluster] = self._api_factory(self.contexts[cluster])
            self._apis[cluster].transport = self._transports.get(cluster, "proxy")
        return self._apis[cluster]

    @property
    def run_id(self) -> str:
        if self.run_dir is None:
            raise EnvironmentBroken("the existing provider is not up (call up() or attach() first)")
        return self.run_dir.name

    @classmethod
    def validate(cls, config: RunConfig, topology: Topology) -> None:
        cls(config, topology)  # one --context per cluster

    @classmethod
    def preflight(cls, config: RunConfig, topology: Topology) -> list[str]:
        return cls(config, topology).readiness_problems()

    # -- the upgrade gate: the user's own upgrade between the catalogue runs (upgrade.py) -------------------

    @classmethod
    def upgrade_plan(cls, config: RunConfig, topology: Topology, to_version: str) -> str:
        """The steps of ``meshconf upgrade`` on these contexts; runs nothing and reads no cluster."""
        from conformance.providers.existing.upgrade import check_upgrade_command, upgrade_plan_text

        provider = cls(config, topology)  # one --context per cluster
        check_upgrade_command(provider.settings.upgrade_command, sys.stdin.isatty())
        return upgrade_plan_text(provider.contexts, topology.name, to_version, provider.settings.upgrade_command,
                                 provider.settings.revision)

    def upgrade_mesh(self, to_version: str, say: Callable[[str], None]) -> None:
        """The user's ``--upgrade-command`` (or, in a terminal, the user by hand): meshconf upgrades nothing."""
        from conformance.providers.existing.upgrade import run_upgrade_command, wait_for_manual_upgrade

        if self.settings.upgrade_command is not None:
            run_upgrade_command(self.settings.upgrade_command, to_version, say)
        else:
            wait_for_manual_upgrade(to_version, list(self.contexts.values()))

    def readiness_problems(self) -> list[str]:
        """Before anything is created: every context answers (one line for each that does not), then the
        checks ``up()`` makes (Istio installed and ready, remote secrets), which stop at the first problem."""
        problems = []
        for cluster in self.topology.cluster_names:
            try:
                self.api(cluster).server_version()
            except EnvironmentBroken as exc:
                problems.append(str(exc))
        if problems:
            return problems
        try:
            preflight(self.topology, {c: self.api(c) for c in self.topology.cluster_names},
                      self.settings.revision)
        except EnvironmentBroken as exc:
            return [str(exc)]
        return []

    # -- lifecycle -----------------------------------------------------------------------------------------

    def up(self, owner_pid: int | None = None, progress: Callable[[str], None] | None = None) -> None:
        say = progress or (lambda _line: None)
        self.reports = preflight(self.topology, {c: self.api(c) for c in self.topology.cluster_names},
                                 self.settings.revision)
        for report in self.reports:
            say(report.line())
        self.run_dir = new_run_dir("existing")
        revisions = {r.cluster: r.revision for r in self.reports}  # a remote cluster takes its primary's
        RunState(self.run_dir).update(
            provider="existing", contexts=self.contexts, namespaces=[], objects=[], ready=True,
            versions={r.cluster: r.istio_version for r in self.reports},
            cluster_ids={r.cluster: r.cluster_id for r in self.reports},
            revisions={c.name: revisions.get(c.primary or c.name) for c in self.topology.clusters},
            regions={r.cluster: r.region for r in self.reports if r.region},
            transports={r.cluster: r.transport for r in self.reports})
        self._restore(RunState(self.run_dir).read())

    def _restore(self, data: Mapping[str, Any]) -> None:
        """Take what preflight found (from this process, or the state ``up`` wrote) into this provider."""
        self._revisions = dict(data.get("revisions") or {})
        self._transports = dict(data.get("transports") or {})
        for cluster, api in self._apis.items():
            api.transport = self._transports.get(cluster, "proxy")
        regions = dict(data.get("regions") or {})
        self.topology = dataclasses.replace(self.topology, clusters=tuple(
            dataclasses.replace(c, region=regions.get(c.name) or c.region) for c in self.topology.clusters))

    @classmethod
    def cleanup(cls, run_dir: Path) -> list[int]:
        """Delete what the run recorded (its objects, if still marked as its own; its meshconf-* namespaces),
        in every context it used; then its directory."""
        state = RunState(run_dir)
        data = state.read()
        contexts = dict(data.get("contexts", {}))
        apis = {cluster: KubeAPI(str(context)) for cluster, context in contexts.items()}
        restore_control_planes(apis, state)
        restore_mesh_configs(apis, state)
        _delete_own_objects(apis, list(data.get("objects", [])), run_dir.name)
        for api in apis.values():
            for namespace in data.get("namespaces", []):
                if str(namespace).startswith(OWN_PREFIX):
                    api.delete_namespace(str(namespace), 120)
        state.remove()
        return []

    def down(self) -> None:
        if self.run_dir is None:
            return
        restore_control_planes({c: self.api(c) for c in self.topology.cluster_names}, RunState(self.run_dir))
        self.restore_mesh_configs()
        state = RunState(self.run_dir)
        data = state.read()
        _delete_own_objects({c: self.api(c) for c in self.topology.cluster_names}, list(data.get("objects", [])),
                            self.run_id)
        for namespace in data.get("namespaces", []):
            for cluster in self.topology.cluster_names:
                self.api(cluster).delete_namespace(str(namespace), self.config.timeouts.teardown_s)
        state.remove()
        self.run_dir = None

    # -- contract ------------------------------------------------------------------------------------------

    def describe(self) -> MeshDescription:
        versions = sorted({r.istio_version for r in self.reports if r.istio_version})
        kubernetes = sorted({r.kubernetes_version for r in self.reports})
        details = {"contexts": ",".join(self.contexts.values())}
        revisions = sorted({r.revision for r in self.reports if r.revision})
        if revisions:
            details["revision"] = ",".join(revisions)
        ids = [f"{r.cluster}={r.cluster_id}" for r in self.reports if r.cluster_id]
        if ids:
            details["clusterIDs"] = ",".join(ids)
        return MeshDescription(provider=self.name, topology=self.topology.name, implementation="istio",
                               mesh_version=", ".join(versions) or "unknown",
                               proxy_version="istio-proxy " + (", ".join(versions) or "unknown"),
                               kubernetes_version=", ".join(kubernetes) or None, details=details)

    def features(self) -> frozenset[Feature]:
        # never LINK_RTT: nothing here applies (or can guarantee) the topology's round trip between clusters
        features = {Feature.OUT_OF_MESH_WORKLOADS, Feature.WORKLOAD_FAULTS}
        if len(self.topology.clusters) > 1:
            features.add(Feature.MULTI_CLUSTER)
        if self.topology.multi_network:
            features |= {Feature.MULTI_NETWORK, Feature.EAST_WEST_GATEWAY}
        if self.settings.allow_mesh_wide:  # restarting or stopping istiod is mesh-wide too
            features |= {Feature.MESH_WIDE_CONFIG, Feature.CONTROL_PLANE_FAULTS}
        return frozenset(features)

    def revision_for(self, cluster: str) -> str | None:
        revision = self._revisions.get(cluster)
        return None if revision in (None, DEFAULT_REVISION) else revision

    def apply(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        """Documents in meshconf-* namespaces as they are; others (with --allow-mesh-wide) only if no object of
        that kind, namespace and name exists that this run did not create, and marked as this run's."""
        shared = [doc for doc in docs if not self._in_own_namespace(doc)]
        for doc in shared:
            self._allowed(doc)
        for cluster in clusters:
            api = self.api(cluster)
            for doc in shared:
                live = api.read_object(doc)
                if live is not None and _run_of(live) != self.run_id:
                    raise UsageError(f"{doc_ref(doc)} already exists in context {api.context} and was not created "
                                     "by this meshconf run; meshconf never changes objects it did not create "
                                     "(remove it yourself, or skip this check with -k)")
            for doc in shared:
                _not_shadowed(api, doc, self.run_id)
        own = [_marked(doc, self.run_id) if not self._in_own_namespace(doc) else doc for doc in docs]
        self._record(shared, clusters)
        super().apply(own, clusters)

    def delete(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        """Documents in meshconf-* namespaces as they are; others only where the live object is this run's."""
        for doc in docs:
            if not self._in_own_namespace(doc):
                self._allowed(doc)
        for cluster in clusters:
            api = self.api(cluster)
            ours = [doc for doc in docs if self._in_own_namespace(doc)
                    or _run_of(api.read_object(doc) or {}) == self.run_id]
            api.delete(list(reversed(ours)))
        self._forget([doc for doc in docs if not self._in_own_namespace(doc)], clusters)

    def deploy_probe(self, spec: ProbeSpec) -> ProbeHandle:
        self._own_namespace(spec.namespace)
        if self.run_dir is not None:
            state = RunState(self.run_dir)
            namespaces = list(state.read().get("namespaces", []))
            if spec.namespace not in namespaces:
                state.update(namespaces=[*namespaces, spec.namespace])
        return super().deploy_probe(spec)

    def delete_namespace(self, namespace: str) -> None:
        self._own_namespace(namespace)
        super().delete_namespace(namespace)
        if self.run_dir is not None:
            state = RunState(self.run_dir)
            state.update(namespaces=[n for n in state.read().get("namespaces", []) if n != namespace])

    @property
    def faults(self) -> Any:
        from conformance.providers.kube.faults import ControlPlaneFaults, WorkloadFaults
        from conformance.providers.kube.lifecycle import KubeControlPlanes

        if self.settings.allow_mesh_wide:
            return ControlPlaneFaults(self, KubeControlPlanes(self))
        return WorkloadFaults(self)

    def diagnostics(self, dest: Path, namespaces: Sequence[str]) -> list[Path]:
        return self.namespace_diagnostics(dest, [n for n in namespaces if n.startswith(OWN_PREFIX)])

    # -- what meshconf may touch ---------------------------------------------------------------------------

    def _own_namespace(self, namespace: str) -> None:
        if not namespace.startswith(OWN_PREFIX):
            raise UsageError(f"the existing provider only uses its own namespaces ({OWN_PREFIX}*), not {namespace!r}")

    @staticmethod
    def _in_own_namespace(doc: Mapping[str, Any]) -> bool:
        meta = doc.get("metadata") or {}
        if doc.get("kind") == "Namespace" and doc.get("apiVersion") == "v1":
            return str(meta.get("name") or "").startswith(OWN_PREFIX)
        return str(meta.get("namespace") or "").startswith(OWN_PREFIX)

    def _allowed(self, doc: Mapping[str, Any]) -> None:
        if self.settings.allow_mesh_wide:
            return
        namespace = str((doc.get("metadata") or {}).get("namespace") or "")
        where = f"namespace {namespace}" if namespace else "cluster scope"
        raise UsageError(f"{doc_ref(doc)} is in {where}: that changes mesh-wide config on clusters meshconf does "
                         "not own; rerun with --allow-mesh-wide to permit it")

    def _record(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        if not docs or self.run_dir is None:
            return
        state = RunState(self.run_dir)
        objects = list(state.read().get("objects", []))
        for cluster in clusters:
            for doc in docs:
                entry = _entry(doc, cluster)
                if entry not in objects:
                    objects.append(entry)
        state.update(objects=objects)

    def _forget(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        if not docs or self.run_dir is None:
            return
        state = RunState(self.run_dir)
        gone = [_entry(doc, cluster) for cluster in clusters for doc in docs]
        state.update(objects=[o for o in state.read().get("objects", []) if o not in gone])


def _entry(doc: Mapping[str, Any], cluster: str) -> dict[str, str]:
    meta = doc.get("metadata") or {}
    return {"cluster": cluster, "apiVersion": str(doc.get("apiVersion")), "kind": str(doc.get("kind")),
            "namespace": str(meta.get("namespace") or ""), "name": str(meta.get("name"))}


def _doc_of(entry: Mapping[str, str]) -> dict[str, Any]:
    metadata = {"name": entry["name"], **({"namespace": entry["namespace"]} if entry["namespace"] else {})}
    return {"apiVersion": entry["apiVersion"], "kind": entry["kind"], "metadata": metadata}


def _marked(doc: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """A copy of ``doc`` that says meshconf created it, and in which run."""
    meta = dict(doc.get("metadata") or {})
    meta["labels"] = {**(meta.get("labels") or {}), **_MANAGED_BY}
    meta["annotations"] = {**(meta.get("annotations") or {}), RUN_ANNOTATION: run_id}
    return {**doc, "metadata": meta}


def _run_of(live: Mapping[str, Any]) -> str | None:
    return ((live.get("metadata") or {}).get("annotations") or {}).get(RUN_ANNOTATION)


def _delete_own_objects(apis: Mapping[str, KubeAPI], objects: Sequence[Mapping[str, str]], run_id: str) -> None:
    """Delete the recorded objects that still carry this run's mark (and nothing else)."""
    for entry in reversed(objects):
        api = apis.get(entry["cluster"])
        if api is None:
            continue
        doc = _doc_of(entry)
        live = api.read_object(doc)
        if live is not None and _run_of(live) == run_id:
            api.delete([doc])


def _not_shadowed(api: KubeAPI, doc: Mapping[str, Any], run_id: str) -> None:
    """A mesh-wide PeerAuthentication (root namespace, no selector) of this run would be shadowed by one the
    user already has: Istio applies only the oldest mesh-wide policy (pilot/pkg/model/authentication.go
    composes the mesh level from the oldest one), so the check's own would never take effect and the check
    would report a mesh that is fine as non-conformant. Say so and skip it instead."""
    meta = doc.get("metadata") or {}
    if doc.get("kind") != "PeerAuthentication" or meta.get("namespace") != ROOT_NAMESPACE or \
            (doc.get("spec") or {}).get("selector"):
        return
    for live in api.list_objects(str(doc.get("apiVersion")), "PeerAuthentication", ROOT_NAMESPACE):
        if not (live.get("spec") or {}).get("selector") and _run_of(live) != run_id:
            name = (live.get("metadata") or {}).get("name")
            raise CannotRun(f"context {api.context} already has a mesh-wide PeerAuthentication "
                            f"{ROOT_NAMESPACE}/{name}; Istio applies only the oldest mesh-wide policy, so this "
                            "check's own could not take effect (meshconf leaves yours alone)")
