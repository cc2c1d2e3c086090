"""Preflight for existing clusters: each context reachable, Istio installed (which version and revision, and
which cluster ID), istiod ready, the path this machine uses to reach pods, and every control plane holding a
remote secret for every other cluster. Each failure is one line with a fix.

What is read, and from where (Istio 1.28):
- istiod: every Deployment labelled ``app=istiod`` in istio-system, whatever its ``istio.io/rev`` (the chart's
  ``istio-discovery/templates/deployment.yaml``); ``--revision`` picks one, else ``default``, else the only one.
- Its version: the tag of the ``discovery`` container's image, as ``istioctl version`` reports it.
- Its cluster ID: the ``CLUSTER_ID`` env of that container (``global.multiCluster.clusterName``, default
  ``Kubernetes``). A remote cluster has no istiod: its ID is ``global.multiCluster.clusterName`` in the
  ``values[-<rev>]`` ConfigMap the chart writes (``configmap-values.yaml``), when it can be read.
- Remote secrets: Secrets labelled ``istio/multiCluster=true`` (``pkg/kube/multicluster/secretcontroller.go``),
  listed as metadata only; ``istioctl create-remote-secret`` names one ``istio-remote-secret-<id>`` and
  annotates it ``networking.istio.io/cluster: <id>`` (``istioctl/pkg/multicluster/remote_secret.go``), and
  istiod keys the clusters it reads by that ID. They are matched on the real IDs, never the topology's names.
- The pod path: one GET of istiod's ``/version`` on its monitoring port 15014 (``pilot/pkg/bootstrap/
  monitoring.go``) through the API server's pod proxy; if that fails, the same through a port-forward.
- The region: the ``topology.kubernetes.io/region`` label of the cluster's nodes (what Istio's locality uses).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conformance.errors import EnvironmentBroken, ProviderError, UsageError
from conformance.providers.kube.api import KubeAPI
from conformance.topology import Role, Topology

__all__ = ["ClusterReport", "istiod_version", "preflight"]

REMOTE_SECRET_LABEL = "istio/multiCluster=true"
CLUSTER_ANNOTATION = "networking.istio.io/cluster"
REMOTE_SECRET_PREFIX = "istio-remote-secret-"
DEFAULT_CLUSTER_ID = "Kubernetes"
DEFAULT_REVISION = "default"
MONITORING_PORT = 15014
REGION_LABEL = "topology.kubernetes.io/region"


@dataclass(frozen=True)
class ClusterReport:
    cluster: str
    """The topology's name for it."""
    context: str
    kubernetes_version: str
    istio_version: str | None
    """None for a remote cluster (no istiod of its own)."""
    cluster_id: str | None = None
    """The ID istiod knows the cluster by (None: could not be read)."""
    revision: str | None = None
    """The istiod revision in use (``default`` for an unrevisioned install; None for a remote cluster)."""
    region: str | None = None
    """The nodes' ``topology.kubernetes.io/region`` (None: unlabelled, several, or not readable)."""
    transport: str = "proxy"
    """How this machine reaches pods: ``proxy`` (API server pod proxy) or ``port-forward``."""
    notes: tuple[str, ...] = ()

    def line(self) -> str:
        istio = (f"Istio {self.istio_version} (revision {self.revision})" if self.istio_version
                 else "remote (no istiod)")
        parts = [f"existing: {self.cluster} = context {self.context}, Kubernetes {self.kubernetes_version}, {istio}",
                 f"cluster ID {self.cluster_id or 'unknown'}", f"region {self.region or 'unknown'}",
                 f"pods reached through {'the API server pod proxy' if self.transport == 'proxy' else 'port-forward'}"]
        return "; ".join([*parts, *self.notes])


def istiod_version(image: str) -> str:
    """``docker.io/istio/pilot:1.28.0-distroless`` -> ``1.28.0``."""
    tag = image.rsplit("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
    return tag.split("-")[0] if tag else "unknown"


def _revision(deployment: Any) -> str:
    return str((deployment.metadata.labels or {}).get("istio.io/rev") or DEFAULT_REVISION)


def _discovery(deployment: Any) -> Any:
    containers = deployment.spec.template.spec.containers
    return next((c for c in containers if c.name == "discovery"), containers[0])


def select_istiod(deployments: Sequence[Any], revision: str | None, context: str) -> Any:
    """The istiod Deployment of ``revision`` (or the default one, or the only one); raise with the choices."""
    by_revision = {_revision(d): d for d in deployments}
    if not by_revision:
        raise EnvironmentBroken(f"context {context}: Istio is not installed (no deployment labelled app=istiod in "
                                "istio-system); install it, or pick the context that runs it")
    found = ", ".join(sorted(by_revision))
    if revision is not None:
        if revision not in by_revision:
            raise UsageError(f"context {context}: no istiod of revision {revision} (found: {found}); "
                             "pass one of those to --revision")
        return by_revision[revision]
    if DEFAULT_REVISION in by_revision:
        return by_revision[DEFAULT_REVISION]
    if len(by_revision) == 1:
        return next(iter(by_revision.values()))
    raise UsageError(f"context {context}: several istiod revisions ({found}) and none is default; pass "
                     "--revision to choose one")


def cluster_id_of(deployment: Any) -> str:
    """istiod's ``CLUSTER_ID`` (the chart writes ``global.multiCluster.clusterName | default "Kubernetes"``)."""
    for env in _discovery(deployment).env or []:
        if env.name == "CLUSTER_ID" and env.value:
            return str(env.value)
    return DEFAULT_CLUSTER_ID


def remote_cluster_id(api: KubeAPI, revision: str | None) -> str | None:
    """A remote cluster's ID from the ``values[-<rev>]`` ConfigMap its install wrote, or None."""
    name = "values" if revision in (None, DEFAULT_REVISION) else f"values-{revision}"
    data = api.config_map_data("istio-system", name)
    if not data or "merged-values" not in data:
        return None
    try:
        values = json.loads(data["merged-values"])
    except ValueError:
        return None
    name_set = ((values.get("global") or {}).get("multiCluster") or {}).get("clusterName")
    return str(name_set) if name_set else DEFAULT_CLUSTER_ID


def region_of(api: KubeAPI) -> tuple[str | None, str | None]:
    """The cluster's region from its nodes' labels, and a note when it cannot be told."""
    labels = api.node_labels()
    if labels is None:
        return None, "region not read (this user may not list nodes)"
    regions = Counter(node[REGION_LABEL] for node in labels if node.get(REGION_LABEL))
    if not regions:
        return None, f"no node is labelled {REGION_LABEL}"
    if len(regions) > 1:
        return None, f"nodes span several regions ({', '.join(sorted(regions))})"
    return next(iter(regions)), None


def choose_transport(api: KubeAPI, revision: str) -> tuple[str, str | None]:
    """Try the pod proxy once (istiod's /version); fall back to a port-forward. Raises when neither works."""
    selector = {"app": "istiod"} if revision == DEFAULT_REVISION else {"app": "istiod", "istio.io/rev": revision}
    pods = [p for p in api.pods("istio-system", selector) if p.ready]
    if not pods:
        return "proxy", "pod path not checked (no ready istiod pod)"
    try:
        api.pod_text("istio-system", pods[0].name, MONITORING_PORT, "/version", "proxy")
        return "proxy", None
    except ProviderError as proxy_error:
        try:
            api.pod_text("istio-system", pods[0].name, MONITORING_PORT, "/version", "port-forward")
        except ProviderError as forward_error:
            raise EnvironmentBroken(f"context {api.context}: cannot reach pods through the API server's pod proxy "
                                    f"({proxy_error}) nor through a port-forward ({forward_error}); check that "
                                    "this user may use pods/proxy and pods/portforward") from None
        return "port-forward", "the API server's pod proxy failed, so port-forward (through the kubelet) is used"


def preflight(topology: Topology, apis: Mapping[str, KubeAPI], revision: str | None = None) -> list[ClusterReport]:
    """Check every cluster; raise EnvironmentBroken (or UsageError) naming the first problem and its fix."""
    reports: dict[str, ClusterReport] = {}
    for cluster in topology.clusters:
        api = apis[cluster.name]
        kubernetes = api.server_version()
        region, region_note = region_of(api)
        notes = [region_note] if region_note else []
        if cluster.role is Role.PRIMARY:
            istiod = select_istiod(api.deployments("istio-system", {"app": "istiod"}), revision, api.context)
            chosen = _revision(istiod)
            if not (istiod.status.ready_replicas or 0):
                name = istiod.metadata.name
                raise EnvironmentBroken(f"context {api.context}: istiod is not ready (0 ready replicas); "
                                        f"see `kubectl -n istio-system describe deployment {name}`")
            transport, transport_note = choose_transport(api, chosen)
            notes += [transport_note] if transport_note else []
            reports[cluster.name] = ClusterReport(
                cluster.name, api.context, kubernetes, istiod_version(str(_discovery(istiod).image)),
                cluster_id_of(istiod), chosen, region, transport, tuple(notes))
        else:
            cluster_id = remote_cluster_id(api, revision)
            if cluster_id is None:
                notes.append("cluster ID not read (no readable values ConfigMap in istio-system)")
            reports[cluster.name] = ClusterReport(cluster.name, api.context, kubernetes, None, cluster_id, None,
                                                  region, "proxy", tuple(notes))
    _distinct_ids(list(reports.values()))
    for cluster in topology.primaries:
        reports[cluster.name] = _check_remote_secrets(reports[cluster.name], apis[cluster.name],
                                                      [reports[c.name] for c in topology.clusters
                                                       if c.name != cluster.name])
    return [reports[c.name] for c in topology.clusters]


def _distinct_ids(reports: Sequence[ClusterReport]) -> None:
    seen: dict[str, str] = {}
    for report in reports:
        if report.cluster_id is None:
            continue
        if report.cluster_id in seen:
            raise EnvironmentBroken(f"contexts {seen[report.cluster_id]} and {report.context} both have cluster ID "
                                    f"{report.cluster_id}: a multi-cluster mesh needs a distinct "
                                    "values.global.multiCluster.clusterName per cluster")
        seen[report.cluster_id] = report.context


def _check_remote_secrets(report: ClusterReport, api: KubeAPI, others: Sequence[ClusterReport]) -> ClusterReport:
    secrets = api.secret_metadata("istio-system", REMOTE_SECRET_LABEL)
    if secrets is None:
        note = "remote secrets not checked (this user may not list Secrets in istio-system)"
        return ClusterReport(**{**report.__dict__, "notes": (*report.notes, note)})
    known = {annotations.get(CLUSTER_ANNOTATION) for _, annotations in secrets}
    known |= {name.removeprefix(REMOTE_SECRET_PREFIX) for name, _ in secrets if name.startswith(REMOTE_SECRET_PREFIX)}
    unchecked = []
    for other in others:
        if other.cluster_id is None:
            unchecked.append(other.cluster)
        elif other.cluster_id not in known:
            raise EnvironmentBroken(
                f"context {api.context}: istiod has no remote secret for cluster ID {other.cluster_id} (context "
                f"{other.context}); run `istioctl create-remote-secret --context={other.context} "
                f"--name={other.cluster_id} | kubectl apply --context={api.context} -f -`")
    if unchecked:
        note = f"remote secrets for {', '.join(unchecked)} not checked (their cluster IDs are unknown)"
        return ClusterReport(**{**report.__dict__, "notes": (*report.notes, note)})
    return report
