"""Remote secrets: how each primary's control plane sees the other clusters, as Istio's secret controller does.

Every cluster of the local mesh has an API server (:class:`ApiServer`): a small HTTP server on the cluster's
infrastructure address that lists the cluster's namespaces, services, endpoint slices, pods and nodes (what
Istio's Kubernetes registry watches) to a bearer token it issued for ``istio-reader-service-account``, answers
403 to a token of an account without that role and 401 to any other, as kube-apiserver does. Each primary holds a
remote secret for every other cluster: a file ``RUN/remote-secrets/<primary>/istio-remote-secret-<cluster>.json``
(0600) with the API server's address and a token, what ``istioctl create-remote-secret`` writes into the
kubeconfig of the Secret it prints.

A primary sees another cluster's services and endpoints only through a *synced* remote cluster built from its
secret (:class:`RemoteClusters`, one per primary), following pkg/kube/multicluster/secretcontroller.go,
cluster.go and component.go:

- a secret whose content changed (a rotation, a repair) builds a new remote cluster, which lists the cluster
  through the link between the two clusters; once it synced it replaces the old one (the new component is built
  before the old one is closed);
- a remote cluster that cannot sync (an unreachable endpoint, a rejected credential) keeps that cluster out of the
  view (its old registry was closed when the new secret arrived); its status is ``syncing`` until
  PILOT_REMOTE_CLUSTER_TIMEOUT (30 s) has passed since it was added, then ``timeout``;
- a secret with the same content as the one in use changes nothing (the kubeconfig's sha256 is compared);
- a restarted control plane builds every remote cluster again from the secrets.

Between syncs the registry follows the cluster's pods as an informer's watch would (the shared in-process
registry), as long as the remote cluster stays synced. ``status()`` is what ``istioctl remote-clusters`` prints
from istiod's ``/debug/clusterz``: the config cluster, then each remote cluster with its secret and sync status.

Two deliberate defects live here: ``remote-endpoints-lost-on-secret-rotation`` (the old registry's cleanup
removes the endpoint shards the new one filled, istio#61043: pilot/pkg/serviceregistry/kube/controller
``Cleanup`` removes the shards by cluster ID) and ``bad-secret-blocks-recovery`` (istio#58047).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from conformance.certs import write_private
from conformance.providers.local.defects import Defect
from conformance.providers.local.model import Registry

__all__ = ["API_PORT", "LISTS", "ApiServer", "RemoteClusters", "secret_name"]

API_PORT = 6443
"""kube-apiserver's port."""
LISTS = ("/api/v1/namespaces", "/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices", "/api/v1/pods",
         "/api/v1/nodes")
"""What Istio's Kubernetes registry lists before it counts as synced (controller.go ``informersSynced``)."""
REMOTE_CLUSTER_TIMEOUT_S = 30.0
"""PILOT_REMOTE_CLUSTER_TIMEOUT's default (pilot/pkg/features/pilot.go): a remote cluster not synced by then is
``timeout``, and a starting istiod stops waiting for it."""
LIST_TIMEOUT_S = 5.0
"""How long one list may take before the remote cluster's sync counts as failed."""
READER = "istio-reader-service-account"


def secret_name(cluster: str) -> str:
    """The Secret ``istioctl create-remote-secret --name=<cluster>`` prints."""
    return f"istio-remote-secret-{cluster}"


class ApiServer:
    """One cluster's API server: lists that cluster's objects to the reader tokens it issued."""

    def __init__(self, cluster: str, address: str, registry: Registry) -> None:
        self.cluster = cluster
        self.address = address
        self._registry = registry
        self._tokens: dict[str, bool] = {}
        """token -> has the reader role."""
        self._lock = threading.Lock()
        self._server = _Server((address, API_PORT), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"api-{cluster}", daemon=True)

    @property
    def url(self) -> str:
        return f"https://{self.address}:{API_PORT}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def issue(self, reader: bool = True) -> str:
        """A new service-account token (``reader``: of istio-reader-service-account, else of an account without
        its role, as TestBadRemoteSecret's ``istio-reader-no-perms``)."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = reader
        return token

    def revoke(self, token: str) -> None:
        """The token's secret was deleted: it is refused from now on."""
        with self._lock:
            self._tokens.pop(token, None)

    def answer(self, path: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        token = (authorization or "").removeprefix("Bearer ")
        with self._lock:
            role = self._tokens.get(token)
        if role is None:
            return 401, {"kind": "Status", "reason": "Unauthorized"}
        if not role:
            return 403, {"kind": "Status", "reason": "Forbidden",
                         "message": f"{path} is forbidden: the account lacks the role of {READER}"}
        if path == "/api/v1/pods":
            items = [{"metadata": {"name": w.name, "namespace": w.namespace}}
                     for w in list(self._registry.workloads({self.cluster}))]
            return 200, {"kind": "PodList", "items": items}
        if path in LISTS:
            return 200, {"kind": "List", "items": []}
        return 404, {"kind": "Status", "reason": "NotFound"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], api: ApiServer) -> None:
        self.api = api
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tokens never reach a log

    def do_GET(self) -> None:
        status, body = self.server.api.answer(self.path, self.headers.get("Authorization"))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@dataclass
class RemoteCluster:
    """A remote cluster built from one remote secret's content."""

    cluster: str
    secret: str
    server: str
    digest: str
    added: float = field(default_factory=time.monotonic)
    synced: bool = False
    closed: bool = False
    error: str = ""
    pods: int = 0

    def status(self, now: float) -> str:
        """``istioctl remote-clusters``' STATUS (secretcontroller.go ``ListRemoteClusters``)."""
        if self.closed:
            return "closed"
        if self.synced:
            return "synced"
        return "timeout" if now - self.added >= REMOTE_CLUSTER_TIMEOUT_S else "syncing"


Reach = Callable[[str, str, int], tuple[str, int]]
"""(remote cluster, address, port) -> where the primary connects to reach it (a relay on their link)."""


class RemoteClusters:
    """A primary's remote secrets and the remote clusters built from them (its secret controller)."""

    def __init__(self, primary: str, folder: Path, reach: Reach, registry: Registry,
                 defects: frozenset[Defect]) -> None:
        self.primary = primary
        self.folder = folder
        self._reach = reach
        self._registry = registry
        self._defects = defects
        self._clusters: dict[str, RemoteCluster] = {}
        self._lost: dict[str, frozenset[str]] = {}
        """remote cluster -> pods whose endpoint shards a rotation's cleanup removed (the defect)."""
        self._failed: set[str] = set()
        """Remote clusters whose secret once failed to sync (bad-secret-blocks-recovery ignores them after)."""

    # -- secrets -------------------------------------------------------------------------------------------

    def path(self, cluster: str) -> Path:
        return self.folder / f"{secret_name(cluster)}.json"

    def write(self, cluster: str, server: str, token: str) -> None:
        """Write (create or replace) the remote secret for ``cluster``: its API server and a token (0600)."""
        write_private(self.path(cluster), json.dumps({"cluster": cluster, "server": server, "token": token}).encode())

    def token(self, cluster: str) -> str:
        return str(json.loads(self.path(cluster).read_text())["token"])

    def load(self, cluster: str) -> str:
        """The secret of ``cluster`` was created or changed (the informer's event): build a remote cluster from
        it unless its content is the one in use; return the cluster's sync status."""
        content = self.path(cluster).read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        current = self._clusters.get(cluster)
        if current is not None and current.digest == digest:
            return current.status(time.monotonic())
        if Defect.BAD_SECRET_BLOCKS_RECOVERY in self._defects and cluster in self._failed:
            return current.status(time.monotonic()) if current is not None else "syncing"
        data = json.loads(content)
        fresh = RemoteCluster(cluster, secret_name(cluster), str(data["server"]), digest)
        if current is not None:
            current.closed = True  # addSecret: prev.Stop() before the new cluster runs
        self._sync(fresh, str(data["token"]))
        if fresh.synced and current is not None and current.synced \
                and Defect.REMOTE_ENDPOINTS_LOST_ON_SECRET_ROTATION in self._defects:
            # the old registry's Cleanup removes the shards of its cluster ID, which the new one has just filled
            self._lost[cluster] = frozenset(w.name for w in self._registry.workloads({cluster}))
        if not fresh.synced:
            self._failed.add(cluster)
        self._clusters[cluster] = fresh
        return fresh.status(time.monotonic())

    def restart(self, clusters: list[str]) -> None:
        """A new control plane: forget every remote cluster, build each again from its secret (and sync it)."""
        self._clusters.clear()
        self._lost.clear()
        self._failed.clear()
        for cluster in clusters:
            if self.path(cluster).is_file():
                self.load(cluster)

    def forget(self) -> None:
        """No remote cluster is built yet (a control plane that has not read its secrets)."""
        for found in self._clusters.values():
            found.closed = True
        self._clusters.clear()

    def _sync(self, remote: RemoteCluster, token: str) -> None:
        """List the cluster through the link, as the registry's informers do before they count as synced."""
        host, _, port = remote.server.removeprefix("https://").rpartition(":")
        address, real_port = self._reach(remote.cluster, host, int(port))
        connection = http.client.HTTPConnection(address, real_port, timeout=LIST_TIMEOUT_S)
        try:
            for path in LISTS:
                connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
                response = connection.getresponse()
                body = json.loads(response.read() or b"{}")
                if response.status != 200:
                    remote.error = f"{path}: {response.status} {body.get('reason', '')}".strip()
                    return
                if path == "/api/v1/pods":
                    remote.pods = len(body.get("items") or [])
        except (OSError, ValueError, http.client.HTTPException) as exc:
            remote.error = f"{remote.server} unreachable: {exc}"
            return
        finally:
            connection.close()
        remote.synced = True

    # -- the view ------------------------------------------------------------------------------------------

    def visible(self) -> frozenset[str]:
        """The primary's own cluster and every remote cluster that is synced."""
        return frozenset({self.primary, *(c for c, r in self._clusters.items() if r.synced and not r.closed)})

    def hidden(self) -> frozenset[str]:
        """Pods of visible clusters whose endpoints are lost (only with the rotation defect)."""
        return frozenset().union(*self._lost.values()) if self._lost else frozenset()

    def synced(self) -> bool:
        """Every remote cluster synced or timed out (``HasSynced``): a starting control plane may serve."""
        now = time.monotonic()
        return all(r.status(now) in ("synced", "timeout", "closed") for r in self._clusters.values())

    def status(self) -> list[dict[str, Any]]:
        """``istioctl remote-clusters``: the config cluster first, then every remote cluster (no credentials)."""
        now = time.monotonic()
        rows: list[dict[str, Any]] = [{"id": self.primary, "secretName": "", "syncStatus": "synced"}]
        for cluster, remote in sorted(self._clusters.items()):
            row: dict[str, Any] = {"id": cluster, "secretName": remote.secret, "syncStatus": remote.status(now),
                                   "server": remote.server}
            if remote.error:
                row["error"] = remote.error
            rows.append(row)
        return rows

    def describe(self) -> Mapping[str, Any]:
        return {"remoteClusters": self.status(), "lostEndpoints": {c: sorted(p) for c, p in self._lost.items()}}
