"""The control planes' lifecycle in the local mesh: stop, start, restart, remote secrets, the root migration.

What a platform team does to istiod and its trust around an upgrade, played on the mesh's own control planes
(:mod:`.ads`, :mod:`.remotes`, :class:`conformance.certs.MeshCA`), under the runtime's lock:

- **stop** closes every ADS stream and the port: Envoys keep their last config, as with istiod scaled to 0;
- **start** and **restart** are a new control plane: it reads its remote secrets and syncs every remote cluster,
  builds each proxy's config from its config store, and only then serves (istiod refuses ADS streams until its
  caches synced, pilot/pkg/bootstrap/server.go ``cachesSynced``, pilot/pkg/xds/ads.go); restart also forgets
  what it knew of its proxies, which come back with their own reconnect backoff;
- **status** is ``istioctl remote-clusters`` plus each proxy's stream (connected, in sync, versions, NACKs);
- **remote secrets** are rotated (a new token from the remote's API server, a new secret, the old token revoked),
  broken (an unreachable endpoint or a credential without the reader role, as TestBadRemoteSecret writes them)
  and restored (the secret as ``istioctl create-remote-secret`` writes it again);
- **the root migration** takes one of Istio's three plug-in CA steps: ``cacerts`` replaced, every control plane
  restarted (and its proxies reconnected, so they hold the new trust bundle), then the workloads restarted one
  cluster after the other: each gets a certificate from its cluster's current intermediate. A restarted pod is a
  new certificate and trust bundle over SDS here, not a new process: what the migration is about is what each
  proxy holds and trusts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from conformance.certs import RootStep, TrustRoots
from conformance.errors import UsageError
from conformance.providers.local.ads import ControlPlane
from conformance.providers.local.defects import Defect
from conformance.providers.local.remotes import API_PORT, RemoteClusters
from conformance.providers.local.xds import ProxyResources

if TYPE_CHECKING:
    from conformance.providers.local.runtime import MeshRuntime

__all__ = ["BREAKS", "RECONNECT_S", "Lifecycle"]

RECONNECT_S = 40.0
"""Longest wait for proxies to come back to a control plane: Envoy's xDS reconnect backoff (0.5 s doubling up
to 30 s, jittered) after the time it was away."""
BREAKS = ("unreachable", "rejected")
"""How a remote secret can be broken: its API server address answers nothing, or its token lacks the role."""


class Lifecycle:
    """Lifecycle operations on a :class:`MeshRuntime`'s control planes (called under its lock)."""

    def __init__(self, runtime: MeshRuntime) -> None:
        self.runtime = runtime
        self._good_tokens: dict[tuple[str, str], str] = {}
        """(primary, remote) -> the token its secret held before it was broken."""

    # -- control planes ------------------------------------------------------------------------------------

    def set_control_plane(self, cluster: str, up: bool) -> dict[str, Any]:
        """Stop a control plane (its streams close, it refuses connections; Envoys keep their config) or start
        it again (as a new control plane: see the module docstring)."""
        plane = self.runtime.control_plane(cluster)
        if up and not plane.up:
            self._serve(plane)
        elif not up and plane.up:
            if Defect.EMPTY_PUSH_ON_CONTROL_PLANE_STOP in self.runtime.defects:
                empty = {p.envoy.node_id: (p.envoy.name, ProxyResources()) for p in self._proxies(plane)}
                plane.update(empty, "shutdown").wait(self.runtime.config.timeouts.config_apply_s)
            plane.stop()
        return self.status(cluster)

    def restart_control_plane(self, cluster: str) -> dict[str, Any]:
        """Stop a control plane, forget every proxy's state, and serve again as a new one."""
        plane = self.runtime.control_plane(cluster)
        plane.stop()
        plane.forget()
        self._serve(plane)
        return self.status(cluster)

    def status(self, cluster: str) -> dict[str, Any]:
        return self.runtime.control_plane_status(cluster)

    def _serve(self, plane: ControlPlane) -> None:
        remotes = self.runtime.remotes[plane.cluster]
        others = [c for c in self.runtime.topology.cluster_names if c != plane.cluster]
        if Defect.PUSH_BEFORE_REMOTE_SYNC in self.runtime.defects:
            remotes.forget()  # serves before it has read its secrets: its view is its own cluster only
            self._rebuild(plane, "start")
            plane.start()
            self._await_proxies(plane)  # they take the config without the remote clusters' endpoints
            remotes.restart(others)
            self.runtime.sync("remote clusters synced")
            return
        remotes.restart(others)
        self._rebuild(plane, "start")
        plane.start()

    def _rebuild(self, plane: ControlPlane, reason: str) -> None:
        """Every proxy's config from the store; nobody is connected to a stopped control plane, so no wait."""
        batch = {p.envoy.node_id: (p.envoy.name, self.runtime.resources(p)) for p in self._proxies(plane)}
        plane.update(batch, reason).wait(self.runtime.config.timeouts.config_apply_s)

    def _proxies(self, plane: ControlPlane) -> list[Any]:
        return [p for p in self.runtime.proxies.values()
                if p.running and p.workload.cluster.config_cluster == plane.cluster]

    def _await_proxies(self, plane: ControlPlane, within_s: float = RECONNECT_S) -> bool:
        """Wait until every running proxy of ``plane`` is connected and has ACKed its config."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            proxies = plane.status()["proxies"]
            if all(p["connected"] and p["inSync"] for p in proxies.values()):
                return True
            time.sleep(0.05)
        return False

    # -- remote secrets ------------------------------------------------------------------------------------

    def _secrets(self, cluster: str, remote: str) -> RemoteClusters:
        plane = self.runtime.control_plane(cluster)
        found = self.runtime.topology.cluster(remote)
        if found.name == plane.cluster:
            raise UsageError(f"cluster {cluster} holds no remote secret for itself; name another cluster")
        return self.runtime.remotes[plane.cluster]

    def rotate_remote_secret(self, cluster: str, remote: str) -> dict[str, Any]:
        """A new token from ``remote``'s API server, a new secret in ``cluster``; then the old token is revoked."""
        secrets = self._secrets(cluster, remote)
        api = self.runtime.api_servers[remote]
        old = secrets.token(remote)
        secrets.write(remote, api.url, api.issue())
        secrets.load(remote)
        api.revoke(old)
        self._good_tokens.pop((cluster, remote), None)
        self.runtime.sync("remote secret rotated")
        return self.status(cluster)

    def break_remote_secret(self, cluster: str, remote: str, how: str = "unreachable") -> dict[str, Any]:
        """Replace ``cluster``'s secret for ``remote`` with a bad one: ``unreachable`` (an address nothing
        answers on) or ``rejected`` (a token of an account without the reader role)."""
        if how not in BREAKS:
            raise UsageError(f"a remote secret breaks as one of {', '.join(BREAKS)}, not {how!r}")
        secrets = self._secrets(cluster, remote)
        api = self.runtime.api_servers[remote]
        self._good_tokens.setdefault((cluster, remote), secrets.token(remote))
        if how == "unreachable":
            nowhere = self.runtime.addresses.infrastructure(remote)  # nothing ever listens there
            secrets.write(remote, f"https://{nowhere}:{API_PORT}", api.issue())
        else:
            secrets.write(remote, api.url, api.issue(reader=False))
        secrets.load(remote)
        self.runtime.sync("remote secret broken")
        return self.status(cluster)

    def restore_remote_secret(self, cluster: str, remote: str) -> dict[str, Any]:
        """The secret as ``istioctl create-remote-secret`` writes it again (the reader's token it had)."""
        secrets = self._secrets(cluster, remote)
        api = self.runtime.api_servers[remote]
        token = self._good_tokens.pop((cluster, remote), None) or secrets.token(remote)
        secrets.write(remote, api.url, token)
        secrets.load(remote)
        self.runtime.sync("remote secret restored")
        return self.status(cluster)

    def reset(self) -> None:
        """Every control plane up, every broken remote secret restored."""
        for name, plane in self.runtime.control_planes.items():
            if not plane.up:
                self.set_control_plane(name, True)
        for cluster, remote in list(self._good_tokens):
            self.restore_remote_secret(cluster, remote)

    # -- the root migration --------------------------------------------------------------------------------

    def migrate_root(self, step: RootStep) -> TrustRoots:
        """One step of Istio's plug-in CA root migration (see the module docstring)."""
        runtime = self.runtime
        assert runtime.ca is not None
        try:
            roots = runtime.ca.migrate(step)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        runtime.root_step = step
        for plane in runtime.control_planes.values():
            self.restart_control_plane(plane.cluster)
        for plane in runtime.control_planes.values():
            self._await_proxies(plane)
        for cluster in runtime.topology.cluster_names:
            for proxy in runtime.proxies.values():
                if proxy.workload.cluster.name == cluster:
                    proxy.cert = runtime.issue(proxy.workload)
            runtime.sync(f"root migration {step}: workloads of {cluster} restarted")
        return roots
