"""ExistingProvider: kubeconfig contexts that already run Istio (staging before an upgrade).

One ``--context`` per cluster of the topology, in its order. meshconf changes nothing it did not create: it
deploys probes only into ``meshconf-*`` namespaces and deletes them when the run ends; mesh-wide config (the
root namespace, anything cluster-scoped) is refused unless the run was started with ``--allow-mesh-wide``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from conformance.config import RunConfig
from conformance.errors import EnvironmentBroken, UsageError
from conformance.istio import doc_ref
from conformance.provider import Feature, MeshDescription, ProbeHandle, ProbeSpec
from conformance.providers.existing.preflight import ClusterReport, preflight
from conformance.providers.kube.api import KubeAPI
from conformance.providers.kube.mesh import KubeMesh
from conformance.runstate import RunState, new_run_dir, runs_root
from conformance.topology import Topology

__all__ = ["OWN_PREFIX", "ExistingProvider"]

OWN_PREFIX = "meshconf-"


class ExistingProvider(KubeMesh):
    """Clusters you already have, reached through kubeconfig contexts."""

    name = "existing"
    OFFERS = frozenset({Feature.MULTI_CLUSTER, Feature.MULTI_NETWORK, Feature.EAST_WEST_GATEWAY,  # what features()
                        Feature.OUT_OF_MESH_WORKLOADS, Feature.WORKLOAD_FAULTS, Feature.MESH_WIDE_CONFIG})  # can return

    def __init__(self, config: RunConfig, topology: Topology, run_dir: Path | None = None,
                 api_factory: Callable[[str], KubeAPI] | None = None) -> None:
        super().__init__(config, topology)
        if len(config.contexts) != len(topology.clusters):
            raise UsageError(f"--provider existing got {len(config.contexts)} --context for topology "
                             f"{topology.name} with {len(topology.clusters)} clusters; give one per cluster, in the "
                             f"topology's order ({', '.join(topology.cluster_names)})")
        self.contexts = dict(zip(topology.cluster_names, config.contexts, strict=True))
        self.run_dir = run_dir
        self._api_factory = api_factory or (lambda context: KubeAPI(context))
        self._apis: dict[str, KubeAPI] = {}
        self.reports: list[ClusterReport] = []

    def api(self, cluster: str) -> KubeAPI:
        if cluster not in self._apis:
            self._apis[cluster] = self._api_factory(self.contexts[cluster])
        return self._apis[cluster]

    # -- lifecycle -----------------------------------------------------------------------------------------

    def up(self, owner_pid: int | None = None, progress: Callable[[str], None] | None = None) -> None:
        say = progress or (lambda _line: None)
        self.reports = preflight(self.topology, {c: self.api(c) for c in self.topology.cluster_names})
        for report in self.reports:
            say(f"existing: {report.cluster} = context {report.context}, Kubernetes {report.kubernetes_version}, "
                + (f"Istio {report.istio_version}" if report.istio_version else "remote (no istiod)"))
        self.run_dir = new_run_dir("existing")
        RunState(self.run_dir).update(provider="existing", contexts=self.contexts, namespaces=[], ready=True,
                                          versions={r.cluster: r.istio_version for r in self.reports})

    @classmethod
    def attach(cls, config: RunConfig, topology: Topology, run_dir: Path) -> ExistingProvider:
        if not RunState(run_dir).read().get("ready"):
            raise EnvironmentBroken(f"no existing-clusters run recorded in {run_dir}")
        return cls(config, topology, run_dir)

    @classmethod
    def cleanup(cls, run_dir: Path) -> list[int]:
        """Delete the meshconf-* namespaces the run recorded, in every context it used; then its directory."""
        state = RunState(run_dir)
        data = state.read()
        for context in dict(data.get("contexts", {})).values():
            api = KubeAPI(str(context))
            for namespace in data.get("namespaces", []):
                if str(namespace).startswith(OWN_PREFIX):
                    api.delete_namespace(str(namespace), 120)
        state.remove()
        return []

    @classmethod
    def leftovers(cls) -> list[Path]:
        root = runs_root()
        return sorted(p for p in root.glob("existing-*") if RunState(p).owned()) if root.is_dir() else []

    def down(self) -> None:
        if self.run_dir is None:
            return
        state = RunState(self.run_dir)
        for namespace in state.read().get("namespaces", []):
            for cluster in self.topology.cluster_names:
                self.api(cluster).delete_namespace(str(namespace), self.config.timeouts.teardown_s)
        state.remove()
        self.run_dir = None

    def __enter__(self) -> ExistingProvider:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- contract ------------------------------------------------------------------------------------------

    def describe(self) -> MeshDescription:
        versions = sorted({r.istio_version for r in self.reports if r.istio_version})
        kubernetes = sorted({r.kubernetes_version for r in self.reports})
        return MeshDescription(provider=self.name, topology=self.topology.name, implementation="istio",
                               mesh_version=", ".join(versions) or "unknown",
                               proxy_version="istio-proxy " + (", ".join(versions) or "unknown"),
                               kubernetes_version=", ".join(kubernetes) or None,
                               details={"contexts": ",".join(self.contexts.values())})

    def features(self) -> frozenset[Feature]:
        features = {Feature.OUT_OF_MESH_WORKLOADS, Feature.WORKLOAD_FAULTS}
        if len(self.topology.clusters) > 1:
            features.add(Feature.MULTI_CLUSTER)
        if self.topology.multi_network:
            features |= {Feature.MULTI_NETWORK, Feature.EAST_WEST_GATEWAY}
        if self.config.allow_mesh_wide:
            features.add(Feature.MESH_WIDE_CONFIG)
        return frozenset(features)

    def apply(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        for doc in docs:
            self._own(doc)
        super().apply(docs, clusters)

    def delete(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        for doc in docs:
            self._own(doc)
        super().delete(docs, clusters)

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
        from conformance.providers.kube.faults import WorkloadFaults

        return WorkloadFaults(self)

    def diagnostics(self, dest: Path, namespaces: Sequence[str]) -> list[Path]:
        return self.namespace_diagnostics(dest, [n for n in namespaces if n.startswith(OWN_PREFIX)])

    # -- what meshconf may touch ---------------------------------------------------------------------------

    def _own_namespace(self, namespace: str) -> None:
        if not namespace.startswith(OWN_PREFIX):
            raise UsageError(f"the existing provider only uses its own namespaces ({OWN_PREFIX}*), not {namespace!r}")

    def _own(self, doc: Mapping[str, Any]) -> None:
        namespace = str((doc.get("metadata") or {}).get("namespace") or "")
        if namespace.startswith(OWN_PREFIX) or self.config.allow_mesh_wide:
            return
        where = f"namespace {namespace}" if namespace else "cluster scope"
        raise UsageError(f"{doc_ref(doc)} is in {where}: that changes mesh-wide config on clusters meshconf does "
                         "not own; rerun with --allow-mesh-wide to permit it")
