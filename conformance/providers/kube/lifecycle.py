"""The control planes' lifecycle on Kubernetes, through the API server (the existing provider; kind runs the same
operations as printed kubectl/istioctl commands, ``providers/kind/lifecycle.py``):

- restart: what ``kubectl rollout restart deployment/istiod`` does (a ``kubectl.kubernetes.io/restartedAt``
  annotation on the pod template), then the rollout;
- stop / start: istiod scaled to 0 (its pods gone) and back to the replicas it had (its rollout);
- status: ready replicas of istiod, and istiod's own ``/debug/clusterz`` (what ``istioctl remote-clusters``
  prints: ``pilot-discovery request GET /debug/clusterz`` in the ``discovery`` container, which answers
  localhost without authentication; pilot/pkg/xds/debug.go ``clusterz``, pkg/cluster/debug.go ``DebugInfo``);
- after a root migration step: wait until every sidecar of the given namespaces (and every gateway) serves a
  certificate chain issued by its cluster's current intermediate and trusts exactly the current trust bundle.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cryptography import x509

from conformance.errors import ProviderError, TimeoutExpired, UsageError
from conformance.identity import SECRETS_PATH, served_identity
from conformance.meshconfig import ISTIO_NAMESPACE
from conformance.provider import ControlPlaneStatus, RemoteClusterStatus
from conformance.providers.kube.api import KubeAPI, wait_for
from conformance.runstate import RunState

if TYPE_CHECKING:
    from conformance.providers.kube.mesh import KubeMesh

__all__ = ["ISTIOD", "STOPPED_KEY", "KubeControlPlanes", "clusterz_rows", "parse_remote_clusters",
           "restore_control_planes", "wait_for_identities"]

ISTIOD = "istiod"
STOPPED_KEY = "stoppedControlPlanes"
"""Run-state key: cluster -> {"deployment", "replicas"} of every istiod this run scaled to 0 and has not started
again (recorded before the scale, so that ``down`` after a crash brings it back)."""
_CLUSTERZ = ["pilot-discovery", "request", "GET", "/debug/clusterz"]
GATEWAYS = {"app": "istio-ingressgateway"}, {"app": "istio-eastwestgateway"}


def parse_remote_clusters(output: str, cluster: str) -> tuple[RemoteClusterStatus, ...]:
    """``istioctl remote-clusters`` (istioctl/pkg/proxyconfig/clusters.go): a ``NAME SECRET STATUS ISTIOD`` table,
    one row per cluster per istiod; the config cluster's SECRET is empty. A cluster counts as synced only if every
    istiod says so."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines or not lines[0].split()[:3] == ["NAME", "SECRET", "STATUS"]:
        raise ProviderError(f"`istioctl remote-clusters` for {cluster} printed no NAME SECRET STATUS table: "
                            f"{output.strip()[:200]!r}")
    header = lines[0]
    secret_at, status_at, istiod_at = (header.index(c) for c in ("SECRET", "STATUS", "ISTIOD"))
    found: dict[str, tuple[str, set[str]]] = {}
    for line in lines[1:]:
        name = line[:secret_at].strip()
        secret = line[secret_at:status_at].strip()
        status = line[status_at:istiod_at].strip()
        known = found.setdefault(name, (secret, set()))
        known[1].add(status)
    return tuple(RemoteClusterStatus(name, secret, "synced" if statuses == {"synced"} else
                                     sorted(statuses - {"synced"})[0])
                 for name, (secret, statuses) in found.items())


def clusterz_rows(answers: Iterable[str]) -> tuple[RemoteClusterStatus, ...]:
    """``/debug/clusterz`` of each istiod pod (JSON lists of ``{id, secretName, syncStatus}``), merged: a cluster
    is synced only if every istiod says so."""
    found: dict[str, tuple[str, set[str]]] = {}
    for answer in answers:
        try:
            rows = json.loads(answer)
        except ValueError:
            raise ProviderError(f"istiod's /debug/clusterz did not answer JSON: {answer[:200]!r}") from None
        for row in rows or []:
            known = found.setdefault(str(row.get("id")), (str(row.get("secretName") or ""), set()))
            known[1].add(str(row.get("syncStatus")))
    return tuple(RemoteClusterStatus(name, secret, "synced" if statuses == {"synced"} else
                                     sorted(statuses - {"synced"})[0])
                 for name, (secret, statuses) in found.items())


class KubeControlPlanes:
    """Restart, stop, start and read istiod through the Kubernetes API (``revision``: istiod-<revision>). Which
    istiod it stopped, and how many replicas it had, is kept in the run's state."""

    def __init__(self, mesh: KubeMesh) -> None:
        self.mesh = mesh

    def _stopped(self) -> dict[str, Any]:
        if self.mesh.run_dir is None:
            return {}
        return dict(RunState(self.mesh.run_dir).read().get(STOPPED_KEY) or {})

    def _record(self, stopped: Mapping[str, Any]) -> None:
        if self.mesh.run_dir is not None:
            RunState(self.mesh.run_dir).update(**{STOPPED_KEY: dict(stopped)})

    def _istiod(self, cluster: str) -> tuple[KubeAPI, str, dict[str, str]]:
        found = self.mesh.topology.cluster(cluster)
        if found.config_cluster != found.name:
            raise UsageError(f"cluster {cluster} is a remote cluster: its control plane is {found.config_cluster}'s")
        revision = self.mesh.revision_for(cluster)
        name = ISTIOD if revision in (None, "", "default") else f"{ISTIOD}-{revision}"
        return self.mesh.api(cluster), name, {"app": ISTIOD, "istio.io/rev": revision or "default"}

    def restart(self, cluster: str) -> None:
        api, name, _ = self._istiod(cluster)
        api.restart_deployment(ISTIO_NAMESPACE, name)
        api.wait_rollout(ISTIO_NAMESPACE, name, self.mesh.config.timeouts.control_plane_s)

    def set(self, cluster: str, up: bool) -> None:
        api, name, selector = self._istiod(cluster)
        timeout = self.mesh.config.timeouts.control_plane_s
        stopped = self._stopped()
        if up:
            record = stopped.pop(cluster, None)
            api.scale(ISTIO_NAMESPACE, name, int(record["replicas"]) if record else 1)
            self._record(stopped)
            api.wait_rollout(ISTIO_NAMESPACE, name, timeout)
            return
        found = api.deployment(ISTIO_NAMESPACE, name)
        if found is None:
            raise ProviderError(f"{api.context}: no deployment {ISTIO_NAMESPACE}/{name} (is Istio installed?)")
        if cluster not in stopped:
            stopped[cluster] = {"deployment": name, "replicas": int(found.spec.replicas or 1)}
            self._record(stopped)
        api.scale(ISTIO_NAMESPACE, name, 0)
        wait_for(lambda: not api.pods(ISTIO_NAMESPACE, selector), timeout, f"{name} pods in {cluster} to be gone")

    def status(self, cluster: str) -> ControlPlaneStatus:
        api, name, selector = self._istiod(cluster)
        found = api.deployment(ISTIO_NAMESPACE, name)
        ready = bool(found is not None and (found.status.ready_replicas or 0) > 0)
        pods = [p for p in api.pods(ISTIO_NAMESPACE, selector) if p.ready]
        rows = clusterz_rows(api.exec(ISTIO_NAMESPACE, p.name, "discovery", _CLUSTERZ) for p in pods)
        return ControlPlaneStatus(cluster, ready, rows)

    def reset(self) -> None:
        """Every istiod this run stopped back up."""
        for cluster in list(self._stopped()):
            self.set(cluster, True)


def restore_control_planes(apis: Mapping[str, KubeAPI], state: RunState) -> None:
    """Scale every istiod a crashed run left at 0 back to its replicas (``down``, ``meshconf down``)."""
    stopped = dict(state.read().get(STOPPED_KEY) or {})
    for cluster, record in list(stopped.items()):
        api = apis.get(cluster)
        if api is not None:
            api.scale(ISTIO_NAMESPACE, str(record["deployment"]), int(record["replicas"]))
        stopped.pop(cluster)
        state.update(**{STOPPED_KEY: stopped})


def wait_for_identities(mesh: KubeMesh, namespaces: Sequence[str], intermediates: Mapping[str, bytes],
                        bundle: bytes, timeout_s: float, poll_s: float = 5.0,
                        sleep: Callable[[float], None] = time.sleep) -> None:
    """Wait until every sidecar in ``namespaces`` and every gateway, in every cluster, serves a chain issued by its
    cluster's intermediate (``intermediates``: cluster -> PEM) and trusts exactly the roots of ``bundle``.

    Raises TimeoutExpired naming the proxies still behind."""
    roots = set(x509.load_pem_x509_certificates(bundle))
    deadline = time.monotonic() + timeout_s
    while True:
        behind = []
        for cluster in mesh.topology.cluster_names:
            api = mesh.api(cluster)
            issuer = x509.load_pem_x509_certificate(intermediates[cluster])
            pods = [(ns, p) for ns in namespaces for p in api.pods(ns, {})]
            pods += [(ISTIO_NAMESPACE, p) for selector in GATEWAYS for p in api.pods(ISTIO_NAMESPACE, selector)]
            for namespace, pod in pods:
                if pod.labels.get("sidecar.istio.io/inject") == "false" or not pod.ready:
                    continue
                try:
                    identity = served_identity(api.exec(namespace, pod.name, "istio-proxy",
                                                        ["pilot-agent", "request", "GET", SECRETS_PATH.lstrip("/")]))
                except ProviderError as exc:
                    behind.append(f"{cluster}/{namespace}/{pod.name} ({exc})")
                    continue
                if len(identity.chain) < 2 or identity.chain[1] != issuer or set(identity.roots) != roots:
                    behind.append(f"{cluster}/{namespace}/{pod.name}")
        if not behind:
            return
        if time.monotonic() > deadline:
            raise TimeoutExpired(f"after {timeout_s:.0f}s these proxies still serve the previous certificate or trust "
                                 f"bundle: {', '.join(behind[:8])} (raise --timeout control_plane_s)")
        sleep(poll_s)
