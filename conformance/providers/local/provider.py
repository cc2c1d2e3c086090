"""LocalProvider: the client side of the embedded reference mesh.

``up()`` starts the mesh process (``daemon.py``) and waits for it; ``attach()`` connects to a running one
(every pytest-xdist worker does this). Changes go through the mesh process's API; traffic and Envoy admin
reads go straight to the probes and sidecars on 127.0.0.0/8, as kubectl port-forward would.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from conformance import errors
from conformance.config import RunConfig
from conformance.errors import BringUpFailed, EnvironmentBroken, EnvironmentLost, ProviderError
from conformance.provider import (
    ControlPlaneStatus,
    Feature,
    MeshDescription,
    ProbeHandle,
    ProbeInstance,
    ProbeSpec,
    Provider,
    RemoteClusterStatus,
    RootStep,
    TrustRoots,
)
from conformance.providers.local.addresses import MAX_CLUSTERS
from conformance.providers.local.defects import Defect, parse_defects
from conformance.providers.local.dns import needs_lookup
from conformance.providers.local.envoy import envoy_binary, envoy_version
from conformance.providers.local.processes import process_alive, stop_pid
from conformance.providers.local.settings import LocalSettings
from conformance.providers.local.translate.gateways import listen_port
from conformance.runstate import RunState, new_run_dir
from conformance.topology import Cluster, Topology

__all__ = ["LocalProvider"]

IMPLEMENTATION = "meshconf-local (reference, real Envoy)"
MESH_VERSION = "meshconf-local 0.1"


class LocalProvider(Provider):
    """The embedded local mesh: real Envoy sidecars and probe processes on 127.0.0.0/8."""

    name = "local"
    OFFERS = frozenset(Feature)  # every feature, given a topology that has what it needs (two clusters, two networks)
    Settings = LocalSettings

    def __init__(self, config: RunConfig, topology: Topology, run_dir: Path | None = None) -> None:
        self.settings = config.settings_as(LocalSettings)
        parse_defects(self.settings.defects)  # bad names fail before anything starts
        super().__init__(config, topology, run_dir)
        self._url: str | None = None
        self._token: str | None = None
        self._http = httpx.Client(timeout=httpx.Timeout(config.timeouts.forward_s + 10, connect=5))
        self._envoy_version: str | None = None
        self._daemon: subprocess.Popen[bytes] | None = None

    @classmethod
    def validate(cls, config: RunConfig, topology: Topology) -> None:
        """Refuse what the local mesh cannot do before anything starts (UsageError)."""
        if len(topology.clusters) > MAX_CLUSTERS:
            raise errors.UsageError(f"topology {topology.name} has {len(topology.clusters)} clusters; the local mesh "
                                    f"runs at most {MAX_CLUSTERS}")

    @classmethod
    def defects(cls) -> Mapping[str, str]:
        """The deliberate defects (``defects.py``): plausible regressions of a real mesh that checks must catch."""
        return {d.value: d.description for d in Defect}

    @classmethod
    def preflight(cls, config: RunConfig, topology: Topology) -> list[str]:
        """What would stop ``up()`` on this machine: see ``preflight.py``."""
        from conformance.providers.local.preflight import preflight

        return preflight(config, topology)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def up(self, owner_pid: int | None = None, progress: Any = None) -> None:
        """Start the mesh process and wait until it serves. ``owner_pid``: stop the mesh if it exits."""
        say = progress or (lambda _msg: None)
        binary = envoy_binary(self.settings.envoy_binary)
        self._envoy_version = envoy_version(binary)
        self.run_dir = new_run_dir("local")
        try:
            data, token = self._start(owner_pid, say)
        except BaseException:  # also Ctrl-C / SIGTERM while starting: nothing may outlive a failed up()
            if self._daemon is not None and self._daemon.poll() is None:
                self._daemon.terminate()  # before it serves it has no handler: it stops, its children with it
            self.down()
            raise
        self._url, self._token = data["url"], token

    def _start(self, owner_pid: int | None, say: Any) -> tuple[dict[str, Any], str]:
        assert self.run_dir is not None
        token = secrets.token_urlsafe(24)
        request = {"config": self.config.as_dict(), "topology": self.config.topology,
                   "token": token, "owner_pid": owner_pid}
        (self.run_dir / "request.json").write_text(json.dumps(request))
        os.chmod(self.run_dir / "request.json", 0o600)
        started = time.monotonic()
        say(f"local mesh: starting {len(self.topology.clusters)} clusters ({self.topology.name}) "
            f"with Envoy {self._envoy_version}; run directory {self.run_dir}")
        log = open(self.run_dir / "mesh.log", "ab")  # noqa: SIM115 - handed to the child
        with log:
            process = subprocess.Popen(
                [sys.executable, "-m", "conformance.providers.local.daemon", str(self.run_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._daemon = process  # keep it: the mesh process outlives this call
        state = RunState(self.run_dir)
        state.update(daemon_pid=process.pid)
        data = self._wait_ready(state, process, started + self.config.timeouts.mesh_up_s)
        say(f"local mesh: up in {time.monotonic() - started:.1f}s")
        return data, token

    def _wait_ready(self, state: RunState, process: subprocess.Popen[bytes], deadline: float) -> dict[str, Any]:
        assert self.run_dir is not None
        log = self.run_dir / "mesh.log"
        while True:
            data = state.read()
            if data.get("ready"):
                return data
            if data.get("error") or process.poll() is not None:
                reason = data.get("error") or _tail(log)
                raise BringUpFailed(f"the local mesh did not start: {reason}", log=_logs(self.run_dir))
            if time.monotonic() > deadline:
                raise BringUpFailed(
                    f"the local mesh did not start within {self.config.timeouts.mesh_up_s:.0f}s "
                    f"(raise it with --timeout mesh_up_s=...); log: {_tail(log)}", log=_logs(self.run_dir))
            time.sleep(0.05)

    @classmethod
    def attach(cls, config: RunConfig, topology: Topology, run_dir: Path) -> LocalProvider:
        """Connect to a mesh another process started (pytest-xdist workers, ``meshconf up``)."""
        provider = cls(config, topology, run_dir)
        data = RunState(run_dir).read()
        if data.get("ready") and (data.get("stopped") or not _daemon_alive(run_dir, data)):
            raise EnvironmentLost(_gone(run_dir, data))
        if not data.get("ready"):
            raise EnvironmentBroken(f"no running local mesh in {run_dir} (start one with `meshconf up`)")
        provider._url = data["url"]
        provider._token = json.loads((run_dir / "request.json").read_text())["token"]
        return provider

    @classmethod
    def cleanup(cls, run_dir: Path) -> list[int]:
        """Tear down a run by its directory: ask its mesh process to stop, then stop whatever is left by PID
        (a crashed run) and remove the directory. Returns the PIDs stopped here."""
        state = RunState(run_dir).read()
        if state.get("url") and not state.get("stopped"):
            try:
                token = json.loads((run_dir / "request.json").read_text())["token"]
                httpx.post(state["url"] + "/shutdown", headers={"Authorization": f"Bearer {token}"}, timeout=5)
            except (OSError, ValueError, KeyError, httpx.HTTPError):
                pass
        return stop_run(run_dir)

    @classmethod
    def leftovers(cls) -> list[Path]:
        """Run directories of local meshes nobody is using: started by ``meshconf up`` or ``--keep``, or left
        by a crash. A mesh whose owning test run is still alive is not a leftover."""
        found = []
        for path in super().leftovers():
            try:
                owner = json.loads((path / "request.json").read_text()).get("owner_pid")
            except (OSError, ValueError):
                owner = None
            if owner and process_alive(int(owner)):
                continue
            found.append(path)
        return found

    def down(self) -> None:
        """Stop the mesh process and everything it started; remove the run directory. Idempotent."""
        if self.run_dir is None:
            return
        state = RunState(self.run_dir)
        data = state.read()
        if self._url and not data.get("stopped"):
            with contextlib.suppress(EnvironmentBroken, httpx.HTTPError):
                self._call("POST", "/shutdown", {}, timeout=5)
        stop_run(self.run_dir, self.config.timeouts.teardown_s)
        if self._daemon is not None:
            self._daemon.wait(5)  # reap it
        self._http.close()
        self._url = None

    # -- contract ------------------------------------------------------------------------------------------

    def describe(self) -> MeshDescription:
        version = self._envoy_version or envoy_version(envoy_binary(self.settings.envoy_binary))
        details = {"defects": ",".join(self.settings.defects)} if self.settings.defects else {}
        return MeshDescription(
            provider=self.name, topology=self.topology.name, implementation=IMPLEMENTATION,
            mesh_version=MESH_VERSION, proxy_version=f"envoy {version}", details=details,
        )

    def clusters(self) -> Sequence[Cluster]:
        return self.topology.clusters

    def features(self) -> frozenset[Feature]:
        features = {Feature.OUT_OF_MESH_WORKLOADS, Feature.MESH_WIDE_CONFIG, Feature.INGRESS_GATEWAY,
                    Feature.CERT_ROTATION, Feature.WORKLOAD_FAULTS, Feature.SIDECAR_ENTRY,
                    Feature.CONTROL_PLANE_FAULTS, Feature.ROOT_CA_MIGRATION}
        if len(self.topology.clusters) > 1:
            features |= {Feature.MULTI_CLUSTER, Feature.LINK_FAULTS, Feature.REMOTE_SECRET_FAULTS}
            if self.topology.link_rtt_ms > 0:
                features.add(Feature.LINK_RTT)  # every cross-cluster connection goes through the link relay
        if self.topology.multi_network:
            features |= {Feature.MULTI_NETWORK, Feature.EAST_WEST_GATEWAY, Feature.GATEWAY_FAULTS}
        return frozenset(features)

    @property
    def faults(self) -> LocalFaults:
        return LocalFaults(self)

    def ingress_address(self, cluster: str) -> str:
        answer = self._call("POST", "/gateways", {"cluster": cluster, "kind": "ingress"})
        return f"{answer['address']}:{listen_port(80)}"

    def rotate_certificates(self, namespace: str) -> Mapping[str, str]:
        serials: Mapping[str, str] = self._call("POST", "/certificates/rotate", {"namespace": namespace})["serials"]
        return serials

    def mesh_config(self, patch: Mapping[str, Any], clusters: Sequence[str]) -> Mapping[str, Mapping[str, Any]]:
        undo: Mapping[str, Mapping[str, Any]] = self._call(
            "POST", "/meshconfig", {"patch": dict(patch), "clusters": list(clusters)})["undo"]
        return undo

    def apply(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        self._call("POST", "/apply", {"docs": list(docs), "clusters": list(clusters)})

    def delete(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        self._call("POST", "/delete", {"docs": list(docs), "clusters": list(clusters)})

    def deploy_probe(self, spec: ProbeSpec) -> ProbeHandle:
        answer = self._call("POST", "/probes", {"spec": _spec_payload(spec)})
        return ProbeHandle(spec, tuple(ProbeInstance(**i) for i in answer["instances"]))

    def delete_namespace(self, namespace: str) -> None:
        self._call("POST", "/namespaces/delete", {"namespace": namespace})

    def probe_control(self, probe: ProbeHandle, method: str, path: str, body: Mapping[str, Any] | None = None,
                      instance: int = 0, timeout_s: float = 60.0) -> Any:
        target = _instance(probe, instance).extra["control"]
        try:
            response = self._http.request(method, f"http://{target}{path}", json=body, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise ProviderError(f"probe {probe} control port {target} unreachable: {exc}") from None
        if response.status_code != 200:
            raise ProviderError(f"probe {probe} {method} {path} answered {response.status_code}: {response.text[:200]}")
        return response.json()

    def forward(self, probe: ProbeHandle, request: Mapping[str, Any], instance: int = 0) -> Any:
        """In-mesh probes send to their sidecar as an explicit proxy (no iptables here), but only names the
        mesh's DNS proxy resolves get that far: for any other name the probe is told it does not resolve, as
        istio-agent would answer (``conformance.providers.local.dns``). Out-of-mesh probes resolve through
        kube-dns and kube-proxy: a service's endpoints in their own cluster; nothing else resolves."""
        body = dict(request)
        url = httpx.URL(str(request["url"]))
        host, port = url.host, url.port or 80
        if probe.in_mesh:
            body["proxy"] = _instance(probe, instance).extra["outbound"]
            if needs_lookup(host):
                answer = self._call("POST", "/dns", {"cluster": probe.cluster, "namespace": probe.namespace,
                                                     "host": host})
                if not answer["resolves"]:
                    body["resolve"] = {f"{host}:{port}": []}
        elif needs_lookup(host):
            found: list[str] = []
            if host.endswith(".svc.cluster.local"):
                found = self._call("POST", "/resolve", {"cluster": probe.cluster, "host": host, "port": port})[
                    "addresses"]
            body["resolve"] = {f"{host}:{port}": found}
        timeout = float(body.get("max_duration_ms", 60000)) / 1000 + 10
        return self.probe_control(probe, "POST", "/forward", body, instance=instance, timeout_s=timeout)

    def proxy_admin(self, probe: ProbeHandle, path: str, instance: int = 0) -> str:
        admin = _instance(probe, instance).extra.get("admin")
        if admin is None:
            raise ProviderError(f"{probe} has no sidecar, so no Envoy admin")
        try:
            return self._http.get(f"http://{admin}{path}", timeout=10).text
        except httpx.HTTPError as exc:
            raise ProviderError(f"Envoy admin of {probe} at {admin} unreachable: {exc}") from None

    # -- control planes (the local mesh's; the lifecycle checks build on these) -----------------------------

    def set_control_plane(self, cluster: str, up: bool) -> dict[str, Any]:
        """Stop a primary cluster's control plane (its ADS streams close and it refuses connections; Envoys
        keep their last config) or start it again (Envoys reconnect with their own backoff). Returns its status."""
        status: dict[str, Any] = self._call("POST", "/control-planes", {"cluster": cluster, "up": up})
        return status

    def restart_control_plane(self, cluster: str) -> dict[str, Any]:
        """Restart a control plane: it forgets its proxies, rebuilds their config from its config store, and
        serves them again when they reconnect. Returns its status."""
        status: dict[str, Any] = self._call("POST", "/control-planes", {"cluster": cluster, "restart": True})
        return status

    def control_plane_status(self, cluster: str) -> dict[str, Any]:
        """``up``, ``ready``, ``address``, ``remoteClusters`` (``istioctl remote-clusters``: ``id``,
        ``secretName``, ``syncStatus``) and per proxy: ``connected``, ``inSync``, ``versions`` (per xDS type),
        ``nacks``."""
        status: dict[str, Any] = self._call("POST", "/control-planes", {"cluster": cluster})
        return status

    def remote_secret(self, cluster: str, remote: str, action: str, how: str = "unreachable") -> dict[str, Any]:
        """Rotate, break (``how``: unreachable or rejected) or restore ``cluster``'s remote secret for ``remote``;
        returns the control plane's status."""
        status: dict[str, Any] = self._call("POST", "/remote-secrets", {"cluster": cluster, "remote": remote,
                                                                        "action": action, "how": how})
        return status

    def migrate_root(self, step: RootStep) -> TrustRoots:
        answer = self._call("POST", "/root-migration", {"step": str(step)})
        return TrustRoots(answer["oldRoot"].encode(), answer["newRoot"].encode(), answer["bundle"].encode())

    def diagnostics(self, dest: Path, namespaces: Sequence[str]) -> list[Path]:
        answer = self._call("POST", "/diagnostics", {"dest": str(dest.resolve()), "namespaces": list(namespaces)})
        return [Path(f) for f in answer["files"]]

    def environment_problems(self, namespaces: Sequence[str], since: float | None = None) -> list[str]:
        """Processes of ``namespaces`` and gateways that died (since ``since``) without meshconf stopping or
        killing them (someone else did, or they crashed), each with its last lines of output and whether the
        mesh restarted it. Raises EnvironmentLost if the mesh process itself is gone."""
        problems: list[str] = self._call("POST", "/health", {"namespaces": list(namespaces), "since": since})[
            "problems"]
        return problems

    # -- plumbing ------------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Mapping[str, Any], timeout: float | None = None) -> Any:
        if self._url is None:
            raise EnvironmentBroken("the local mesh is not running (call up() or attach() first)")
        try:
            response = self._http.request(
                method, self._url + path, json=body, headers={"Authorization": f"Bearer {self._token}"},
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            if self.run_dir is not None:
                data = RunState(self.run_dir).read()
                if data.get("stopped") or not _daemon_alive(self.run_dir, data):
                    raise EnvironmentLost(_gone(self.run_dir, data)) from None
            raise EnvironmentBroken(f"the local mesh process does not answer ({exc}); "
                                    f"see {self.run_dir}/mesh.log") from None
        payload = response.json()
        if response.status_code != 200:
            error_type = getattr(errors, str(payload.get("type")), ProviderError)
            if not (isinstance(error_type, type) and issubclass(error_type, errors.ConformanceError)):
                error_type = ProviderError
            raise error_type(payload.get("error", response.text))
        return payload


def _spec_payload(spec: ProbeSpec) -> dict[str, Any]:
    payload = asdict(spec)
    payload["labels"] = dict(spec.labels)
    return payload


class LocalFaults:
    """Faults of the local mesh: probe modes through the control port, the rest through the mesh process."""

    def __init__(self, provider: LocalProvider) -> None:
        self._provider = provider

    def set_mode(self, probe: ProbeHandle, status: int | None = None, delay_ms: int = 0) -> None:
        for index in range(len(probe.instances)):
            self._provider.probe_control(probe, "POST", "/mode", {"status": status, "delay_ms": delay_ms},
                                         instance=index)

    def scale(self, probe: ProbeHandle, replicas: int) -> ProbeHandle:
        body = {"spec": _spec_payload(probe.spec), "replicas": replicas}
        answer = self._provider._call("POST", "/probes/scale", body)
        return ProbeHandle(probe.spec, tuple(ProbeInstance(**i) for i in answer["instances"]))

    def kill(self, probe: ProbeHandle, instance: int = 0) -> None:
        self._provider._call("POST", "/probes/kill", {"name": _instance(probe, instance).name})

    def set_gateway(self, cluster: str, up: bool) -> None:
        self._provider._call("POST", "/gateways", {"cluster": cluster, "kind": "east-west", "up": up})

    def set_link(self, a: str, b: str, rtt_ms: float | None = None, cut: bool | None = None) -> None:
        self._provider._call("POST", "/links", {"a": a, "b": b, "rtt_ms": rtt_ms, "cut": cut})

    def reset(self) -> None:
        self._provider._call("POST", "/links", {"reset": True})
        if self._provider.topology.multi_network:
            for cluster in self._provider.topology.cluster_names:
                self.set_gateway(cluster, True)
        self._provider._call("POST", "/control-planes", {"reset": True})

    # -- the control planes' lifecycle (conformance/providers/local/lifecycle.py) ----------------------------

    def restart_control_plane(self, cluster: str) -> None:
        self._provider.restart_control_plane(cluster)

    def set_control_plane(self, cluster: str, up: bool) -> None:
        self._provider.set_control_plane(cluster, up)

    def control_plane_status(self, cluster: str) -> ControlPlaneStatus:
        return control_plane_status(self._provider.control_plane_status(cluster))

    def rotate_remote_secret(self, cluster: str, remote: str) -> None:
        self._provider.remote_secret(cluster, remote, "rotate")

    def break_remote_secret(self, cluster: str, remote: str) -> None:
        self._provider.remote_secret(cluster, remote, "break")

    def restore_remote_secret(self, cluster: str, remote: str) -> None:
        self._provider.remote_secret(cluster, remote, "restore")

    def migrate_root(self, step: RootStep, namespaces: Sequence[str]) -> TrustRoots:
        """Every proxy of the mesh is restarted (gets a new certificate), whatever ``namespaces`` says."""
        return self._provider.migrate_root(step)


def control_plane_status(answer: Mapping[str, Any]) -> ControlPlaneStatus:
    rows = tuple(RemoteClusterStatus(str(r["id"]), str(r.get("secretName") or ""), str(r["syncStatus"]))
                 for r in answer.get("remoteClusters") or [])
    return ControlPlaneStatus(str(answer["cluster"]), bool(answer.get("ready")), rows)


def _instance(probe: ProbeHandle, index: int) -> ProbeInstance:
    if not probe.instances:
        raise ProviderError(f"{probe} has no running instance")
    return probe.instances[index % len(probe.instances)]


def _logs(run_dir: Path, lines: int = 200) -> str:
    """The mesh process's log and the last lines of every Envoy's and probe's, one after the other."""
    parts = []
    for path in [run_dir / "mesh.log", *sorted(p for p in run_dir.rglob("*.log") if p.name != "mesh.log")]:
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        parts.append(f"==> {path.relative_to(run_dir)} <==\n" + "\n".join(text))
    return "\n\n".join(parts) + "\n"


def _daemon_alive(run_dir: Path, data: dict[str, Any]) -> bool:
    pid = data.get("daemon_pid")
    return pid is not None and process_alive(int(pid), str(run_dir))


def _gone(run_dir: Path, data: dict[str, Any]) -> str:
    """Why the mesh process cannot answer any more, in one line, with its last words."""
    how = "shut down (its owner exited, or it was stopped)" if data.get("stopped") else "is gone (killed, or crashed)"
    return (f"the local mesh process (pid {data.get('daemon_pid', '?')}) {how}; no check can run on this mesh any "
            f"more; last lines of {run_dir}/mesh.log: {_tail(run_dir / 'mesh.log', 3)}")


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_run(run_dir: Path, timeout_s: float = 30.0) -> list[int]:
    """Stop whatever is left of a run (mesh process, Envoys, probes) by PID and remove its directory.

    Used by ``down()`` and by ``meshconf down`` for a run that crashed. Only processes whose command line
    names ``run_dir`` are signalled. Returns the PIDs that had to be stopped here.
    """
    state = RunState(run_dir)
    data = state.read()
    marker = str(run_dir)
    stopped: list[int] = []
    daemon_pid = data.get("daemon_pid")
    deadline = time.monotonic() + timeout_s
    if daemon_pid:
        while process_alive(int(daemon_pid), marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        if stop_pid(int(daemon_pid), marker):
            stopped.append(int(daemon_pid))
    for child in RunState(run_dir).read().get("processes", []):
        if stop_pid(int(child["pid"]), marker):
            stopped.append(int(child["pid"]))
    state.remove()
    return stopped
