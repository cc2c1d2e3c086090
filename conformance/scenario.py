"""Scenario: what one check works with — its own namespace, its probes, its YAML, its calls.

Each check gets a fresh namespace (``meshconf-<check>-<random>``), so checks run side by side under
pytest-xdist without seeing each other's workloads or policies. Everything a scenario applies or deploys is
removed when the check ends, also when it fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import secrets
import shutil
import string
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import allure
import yaml

from conformance.certs import spiffe_id
from conformance.check import CheckInfo
from conformance.config import RunConfig
from conformance.connections import ConnectionHold, EndpointWatch, hold_request, outbound_cluster
from conformance.convergence import Converged, await_convergence
from conformance.errors import CannotRun, EnvironmentBroken, ManifestError, UsageError
from conformance.expect import Nonconformance
from conformance.load import (
    ForwardTarget,
    HttpTarget,
    LoadEvent,
    LoadProfile,
    LoadResult,
    LoadShortfall,
    LocustRun,
    direct_entry,
    run_forward_load,
    sidecar_entry,
)
from conformance.locks import file_lock
from conformance.probe import CallResult, ProbeClient
from conformance.provider import DATA_PORT, Faults, Feature, ProbeHandle, ProbeSpec, Provider
from conformance.report.allure import attach_load
from conformance.report.model import Measurement
from conformance.tokens import TokenIssuer
from conformance.topology import Cluster
from conformance.traffic import ContinuousTraffic, Timeline

__all__ = ["ForwardRun", "RunningLoad", "Scenario", "load_manifests"]

T = TypeVar("T")


def load_manifests(path: Path, variables: Mapping[str, str]) -> list[dict[str, Any]]:
    """Read a YAML file beside a check, substituting ``${name}`` variables (e.g. ``${namespace}``).

    A document without ``metadata.namespace`` goes into ``variables["namespace"]``, like ``kubectl apply -n``.
    """
    try:
        text = string.Template(path.read_text()).substitute(variables)
    except FileNotFoundError:
        raise ManifestError(f"{path} does not exist (a check's YAML lives beside its test file)") from None
    except (KeyError, ValueError) as exc:
        raise ManifestError(f"{path}: unknown or malformed variable {exc}; known: "
                            f"{', '.join('${' + k + '}' for k in variables)}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    for doc in docs:
        if not isinstance(doc, dict):
            raise ManifestError(f"{path}: every YAML document must be a mapping")
        doc.setdefault("metadata", {}).setdefault("namespace", variables.get("namespace"))
    return docs


def namespace_for(check_id: str) -> str:
    """A DNS label, unique per run, that names the check."""
    short = re.sub(r"[^a-z0-9-]", "-", check_id)[:44].strip("-")
    return f"meshconf-{short}-{secrets.token_hex(3)}"


class RunningLoad(Protocol):
    """A load run as ``Scenario.load(during=...)`` sees it (a LocustRun, or a ForwardRun)."""

    def window_opened_at(self, wait: bool = True) -> float:
        """Wall-clock time the measured window opened; waits for it by default."""

    def mark(self, label: str) -> LoadEvent:
        """Put an event at this moment on the window's time axis."""


class ForwardRun:
    """A forward load as ``during`` sees it: when its measured window opened, and events marked meanwhile."""

    def __init__(self, open_within_s: float) -> None:
        self.events: list[LoadEvent] = []
        self._open_within_s = open_within_s
        self._opened_at: float | None = None
        self._changed = threading.Event()
        self._failure: BaseException | None = None

    def open(self) -> None:
        self._opened_at = time.time()
        self._changed.set()

    def close(self) -> None:
        self._changed.set()

    def window_opened_at(self, wait: bool = True) -> float:
        if wait:
            self._changed.wait(self._open_within_s)
        if self._opened_at is None:
            raise EnvironmentBroken("the forward load never opened its measured window (its warm-up failed?)")
        return self._opened_at

    def mark(self, label: str) -> LoadEvent:
        event = LoadEvent(round(time.time() - self.window_opened_at(), 3), label)
        self.events.append(event)
        return event

    def act(self, during: Callable[[RunningLoad], None]) -> None:
        try:
            during(self)
        except BaseException as exc:  # surfaced by raise_failure() once the load is over
            self._failure = exc

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


class Scenario:
    """A check's view of the mesh. Created and cleaned up by the ``scenario`` fixture."""

    def __init__(self, mesh: Provider, check: CheckInfo, config: RunConfig, directory: Path,
                 load_lock: Path | None = None) -> None:
        self.mesh = mesh
        self.check = check
        self.config = config
        self.directory = directory
        self.namespace = namespace_for(check.id)
        self.trust_domain = "cluster.local"
        self.measurements: list[Measurement] = []
        self._applied: list[tuple[list[dict[str, Any]], tuple[str, ...]]] = []
        self._deployed = False
        self._other_namespace_used = False
        self._client = ProbeClient(mesh, config.timeouts.call_timeout_s, config.timeouts.forward_s)
        self._load_lock = load_lock
        self._loads = 0
        self._used_faults = False
        self._mesh_undo: list[Mapping[str, Mapping[str, Any]]] = []

    # -- the mesh --------------------------------------------------------------------------------------------

    @property
    def clusters(self) -> list[str]:
        return [c.name for c in self.mesh.clusters()]

    @property
    def primaries(self) -> list[str]:
        return [c.name for c in self.mesh.clusters() if c.role == "primary"]

    @property
    def other_namespace(self) -> str:
        """A second namespace of this check (for callers from elsewhere), removed with the first."""
        return f"{self.namespace}-b"

    def cluster(self, name: str) -> Cluster:
        """The cluster ``name`` of the mesh (network, region, role...)."""
        for candidate in self.mesh.clusters():
            if candidate.name == name:
                return candidate
        raise UsageError(f"the mesh has no cluster {name!r}; its clusters: {', '.join(self.clusters)}")

    def require(self, holds: bool, needs: str) -> None:
        """Skip the check, saying so, when the mesh's topology lacks what it needs (``needs``: e.g. "three
        regions"): raises CannotRun unless ``holds``."""
        if not holds:
            topology = self.config.topology
            raise CannotRun(f"check {self.check.id} needs {needs}; topology {topology} has not")

    def control_plane_of(self, cluster: str) -> str:
        """The cluster whose control plane configures proxies in ``cluster`` (itself, or its primary)."""
        for candidate in self.mesh.clusters():
            if candidate.name == cluster:
                return candidate.config_cluster
        raise UsageError(f"the mesh has no cluster {cluster!r}; its clusters: {', '.join(self.clusters)}")

    def spiffe_id(self, service_account: str, namespace: str | None = None) -> str:
        return spiffe_id(self.trust_domain, namespace or self.namespace, service_account)

    def token_issuer(self, algorithm: str = "RS256", name: str = "issuer") -> TokenIssuer:
        """An issuer of end-user JWTs for this check (``https://<name>.<namespace>.meshconf.test``), with a key
        made now and kept in memory; put its ``jwks`` inline in a RequestAuthentication."""
        return TokenIssuer(f"https://{name}.{self.namespace}.meshconf.test", algorithm)

    # -- config ----------------------------------------------------------------------------------------------

    def apply(self, file_name: str, clusters: Sequence[str] | None = None, **variables: str) -> list[dict[str, Any]]:
        """Apply the YAML file beside the check in ``clusters`` (default: every primary) and wait for it."""
        docs = load_manifests(self.directory / file_name, {"namespace": self.namespace, **variables})
        targets = tuple(clusters or self.primaries)
        allure.attach(yaml.safe_dump_all(docs, sort_keys=False), name=f"applied {file_name} to {', '.join(targets)}",
                      attachment_type=allure.attachment_type.YAML)
        self._applied.append((docs, targets))
        self.mesh.apply(docs, targets)
        return docs

    def delete(self, docs: list[dict[str, Any]], clusters: Sequence[str] | None = None) -> None:
        targets = tuple(clusters or self.primaries)
        self.mesh.delete(docs, targets)
        self._applied = [(d, c) for d, c in self._applied if d is not docs]

    def mesh_config(self, patch: Mapping[str, Any], clusters: Sequence[str] | None = None) -> None:
        """Merge ``patch`` into the MeshConfig of the control planes of ``clusters`` (default: every primary)
        and wait until they use it; the previous MeshConfig is put back when the check ends, also when it
        fails. The check must declare Feature.MESH_WIDE_CONFIG (and should be ``serial``: every workload of the
        mesh sees the change)."""
        self._require(Feature.MESH_WIDE_CONFIG, "changes MeshConfig")
        targets = tuple(clusters or self.primaries)
        allure.attach(yaml.safe_dump(dict(patch), sort_keys=False),
                      name=f"MeshConfig patch for {', '.join(targets)}", attachment_type=allure.attachment_type.YAML)
        undo = self.mesh.mesh_config(patch, targets)
        self._mesh_undo.append(undo)

    # -- workloads -------------------------------------------------------------------------------------------

    def deploy(
        self,
        service: str,
        cluster: str,
        *,
        version: str = "v1",
        service_account: str | None = None,
        in_mesh: bool = True,
        replicas: int = 1,
        zone: str | None = None,
        ports: tuple[int, ...] = (DATA_PORT,),
        namespace: str | None = None,
    ) -> ProbeHandle:
        """Deploy a probe workload in this check's namespace (or :attr:`other_namespace`) and wait until it is
        ready."""
        namespace = namespace or self.namespace
        if namespace not in (self.namespace, self.other_namespace):
            raise UsageError(f"a check deploys only in its own namespaces ({self.namespace}, "
                             f"{self.other_namespace}), not in {namespace}")
        spec = ProbeSpec(service=service, namespace=namespace, cluster=cluster, version=version,
                         service_account=service_account, in_mesh=in_mesh, ports=ports, zone=zone,
                         replicas=replicas)
        self._deployed = True
        self._other_namespace_used |= namespace == self.other_namespace
        with allure.step(f"deploy {service}/{version} in {cluster}{'' if in_mesh else ' (out of mesh)'}"):
            return self.mesh.deploy_probe(spec)

    # -- traffic ---------------------------------------------------------------------------------------------

    def call(
        self,
        source: ProbeHandle,
        destination: ProbeHandle | str,
        count: int = 10,
        *,
        path: str = "/",
        port: int = DATA_PORT,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        concurrency: int = 1,
        new_connection: bool = False,
        attach: bool = True,
    ) -> CallResult:
        """``count`` calls from ``source`` to a probe service (or a URL) and every response."""
        url = destination if isinstance(destination, str) else destination.url(path, port)
        result = self._client.call(source, url, count, headers=headers, method=method, concurrency=concurrency,
                                   new_connection=new_connection)
        if attach:
            allure.attach(result.to_json(), name=f"calls: {source.service} -> {url}",
                          attachment_type=allure.attachment_type.JSON)
        return result

    def traffic(self, source: ProbeHandle, destination: ProbeHandle | str, *, batch: int = 5,
                path: str = "/", max_seconds: float | None = None, min_batch_s: float = 0.0) -> ContinuousTraffic:
        """Calls from ``source`` that keep going in the background (``with scenario.traffic(...) as t:``),
        for at most ``max_seconds`` (default: the forward timeout). ``min_batch_s``: a batch that took less
        waits out the rest before the next one starts, so traffic that must last long (a rotation on Istio's
        own schedule) stays within ContinuousTraffic's bound on calls."""
        url = destination if isinstance(destination, str) else destination.url(path)
        started = [0.0]

        def calls() -> CallResult:
            pause = started[0] + min_batch_s - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            started[0] = time.monotonic()
            return self._client.call(source, url, batch, new_connection=True)

        return ContinuousTraffic(calls, max_seconds or self.config.timeouts.forward_s)

    def hold_connections(self, source: ProbeHandle, destination: ProbeHandle, connections: int,
                         max_seconds: float) -> ConnectionHold:
        """``connections`` keep-alive connections from ``source`` to ``destination`` (one call a second on each),
        held in the background (``with scenario.hold_connections(...) as held:``) until ``held.result()`` or
        ``max_seconds``."""
        name = f"hold-{secrets.token_hex(4)}"
        request = hold_request(destination.url(), connections, max_seconds, self.config.timeouts.call_timeout_s,
                               name=name)
        return ConnectionHold(lambda body: self.mesh.forward(source, body),
                              lambda hold: self.mesh.probe_control(source, "POST", "/forward/stop", {"name": hold}),
                              request)

    def watch_endpoints(self, client: ProbeHandle, destination: ProbeHandle, max_seconds: float,
                        port: int = DATA_PORT) -> EndpointWatch:
        """The endpoints ``client``'s sidecar has for ``destination``'s service port, read over and over in the
        background (``with scenario.watch_endpoints(...) as watch:``) for at most ``max_seconds``."""
        return EndpointWatch(lambda: self.admin(client, "/clusters"), outbound_cluster(destination.host, port),
                             max_seconds)

    def attach_timeline(self, timeline: Timeline, name: str) -> None:
        """Attach a continuous-traffic timeline (every call, its time, status and answering cluster)."""
        rows = [{"t": round(t, 4), "status": r.status, "cluster": r.cluster, "error": r.error}
                for t, r in timeline.calls]
        allure.attach(json.dumps({"events": timeline.events, "calls": rows}, indent=1), name=name,
                      attachment_type=allure.attachment_type.JSON)

    def ingress_url(self, cluster: str, path: str = "/") -> str:
        """URL of the cluster's ingress gateway (Gateway port 80)."""
        return f"http://{self.mesh.ingress_address(cluster)}{path}"

    @property
    def faults(self) -> Faults:
        """The environment's faults; links and gateways are reset when the check ends."""
        self._used_faults = True
        return self.mesh.faults

    def admin(self, probe: ProbeHandle, path: str, instance: int = 0) -> str:
        """GET ``path`` on the probe's sidecar Envoy admin (``/stats``, ``/certs``, ``/config_dump``...)."""
        return self.mesh.proxy_admin(probe, path, instance)

    def await_convergence(self, action: Callable[[], T], expectation: Callable[[T], None],
                          within_s: float | None = None) -> Converged[T]:
        """Repeat ``action`` until ``expectation`` holds N times in a row, within the consistency budget (or
        ``within_s``: a check's own budget for this wait, e.g. a control plane's return)."""
        __tracebackhide__ = True
        timeouts = self.config.timeouts
        return await_convergence(action, expectation, budget_s=timeouts.consistency_s if within_s is None else within_s,
                                 interval_s=timeouts.poll_interval_s, consecutive=timeouts.consecutive_successes)

    def baseline(self, what: str, action: Callable[[], T], expectation: Callable[[T], None]) -> Converged[T]:
        """Wait, as :meth:`await_convergence` does, for the state the check starts from (``what``, e.g. "local
        calls stay in cluster1"), before it acts. A mesh that never gets there does not conform either, but it
        failed a precondition, not the property the check is named for: the failure says so, and
        self-validation does not count it as a catch."""
        __tracebackhide__ = True
        try:
            return self.await_convergence(action, expectation)
        except Nonconformance as failure:
            raise Nonconformance(f"precondition not met ({what}): {failure}", failure.expectation,
                                 precondition=True) from None

    # -- load --------------------------------------------------------------------------------------------------

    def through_sidecar(self, source: ProbeHandle, destination: ProbeHandle, *, path: str = "/",
                        port: int = DATA_PORT) -> HttpTarget:
        """A load target that enters the mesh at ``source``'s sidecar, as ``source``'s app would call
        ``destination`` (needs Feature.SIDECAR_ENTRY)."""
        self._require(Feature.SIDECAR_ENTRY, "sends load into workloads from this machine")
        return sidecar_entry(source, destination, path=path, port=port)

    def direct(self, destination: ProbeHandle, *, path: str = "/", port: int = DATA_PORT) -> HttpTarget:
        """A load target that is ``destination``'s app itself, bypassing every sidecar: the no-mesh baseline
        (needs Feature.SIDECAR_ENTRY)."""
        self._require(Feature.SIDECAR_ENTRY, "sends load into workloads from this machine")
        return direct_entry(destination, path=path, port=port)

    def from_workload(self, source: ProbeHandle, destination: ProbeHandle, *, path: str = "/",
                      port: int = DATA_PORT) -> ForwardTarget:
        """A load target inside the mesh: ``source`` calls ``destination`` through its own sidecar (east-west,
        on every provider)."""
        return ForwardTarget(source, destination.url(path, port), label=f"{source.service} -> {destination.service}")

    def through_ingress(self, cluster: str, host: str, *, path: str = "/") -> HttpTarget:
        """A load target through ``cluster``'s ingress gateway (north-south), for a Gateway/VirtualService
        that serves ``host`` (needs Feature.INGRESS_GATEWAY)."""
        self._require(Feature.INGRESS_GATEWAY, "loads an ingress gateway")
        address, _, port = self.mesh.ingress_address(cluster).rpartition(":")
        return HttpTarget(address, int(port), host=host, path=path, label=f"ingress {cluster} -> {host}")

    def _require(self, feature: Feature, doing: str) -> None:
        if feature not in self.mesh.features():
            raise UsageError(f"check {self.check.id} {doing}: declare features=[Feature.{feature.name}] so that "
                             f"providers without it skip the check")

    def load(self, target: HttpTarget | ForwardTarget, *, label: str | None = None,
             during: Callable[[RunningLoad], None] | None = None, **profile: Any) -> LoadResult:
        """Put ``target`` under paced load and return the measured window (exact percentiles, timeline).

        An HttpTarget is loaded by Locust in its own process; a ForwardTarget by its source probe's paced
        forward, from inside the mesh. ``profile`` overrides the run's load settings (``rate_rps=500``...).
        ``during(run)`` runs while the load runs (``run.window_opened_at()`` waits for the measured window,
        ``run.mark("failover")`` puts an event on the plots); for a forward load it runs in a thread.
        Load runs of all checks take turns (one lock per session). The result, its plots and the Locust
        report are attached to the check's Allure result; achieved rate and generator CPU are measured.

        Raises LoadShortfall (broken, no verdict) when the generator could not produce the rate.
        """
        load_profile = LoadProfile.from_config(self.config, **profile)
        if label is not None:
            target = dataclasses.replace(target, label=label)
        self._loads += 1
        out_dir = self.load_dir / f"{self._loads:02d}-{re.sub(r'[^a-z0-9]+', '-', (target.label or 'load').lower())}"
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        with allure.step(f"load {target} at {load_profile.rate_rps:g} rps for {load_profile.duration_s:g} s"):
            with self._taking_turns():
                try:
                    result = self._run_load(target, load_profile, out_dir, during)
                except LoadShortfall as shortfall:
                    if shortfall.result is not None:
                        self._report_load(shortfall.result, load_profile, out_dir)
                    raise
            self._report_load(result, load_profile, out_dir)
        return result

    @property
    def load_dir(self) -> Path:
        """Where this check's load runs keep their files (Locust CSV/HTML, plots, results)."""
        return self.config.out / "load" / self.check.id

    def _run_load(self, target: HttpTarget | ForwardTarget, profile: LoadProfile, out_dir: Path,
                  during: Callable[[RunningLoad], None] | None) -> LoadResult:
        if isinstance(target, ForwardTarget):
            if during is None:
                return run_forward_load(self.mesh, target, profile)
            forward = ForwardRun(profile.warmup_s + self.config.timeouts.forward_s)
            acting = threading.Thread(target=forward.act, args=(during,), name="during-load", daemon=True)
            acting.start()
            try:
                result = run_forward_load(self.mesh, target, profile, on_window_open=forward.open)
            finally:
                forward.close()
                acting.join(profile.duration_s + self.config.timeouts.load_grace_s)
            forward.raise_failure()
            return result.with_events(forward.events)
        with LocustRun(target, profile, out_dir, grace_s=self.config.timeouts.load_grace_s) as run:
            run.start()
            if during is not None:
                during(run)
            result = run.wait()
        profile.require_rate(result)
        return result

    @contextlib.contextmanager
    def _taking_turns(self) -> Iterator[None]:
        # on 2 cores the generator and the mesh compete for CPU: one load run at a time in the session
        if self._load_lock is None:
            yield
            return
        with file_lock(self._load_lock):
            yield

    def _report_load(self, result: LoadResult, profile: LoadProfile, out_dir: Path) -> None:
        from conformance.load.plots import plot_histogram, plot_timeline

        plots = [plot_histogram([result], out_dir / "latency-histogram.png", f"Latency: {result.label}"),
                 plot_timeline([result], out_dir / "latency-over-time.png", f"Latency over time: {result.label}")]
        (out_dir / "load-result.json").write_text(result.to_json())
        attach_load(result, plots)
        floor_pct = profile.min_rate_pct - result.edge_allowance_pct  # what LoadProfile.require_rate holds it to
        self.measure(f"{result.label}: achieved rate", round(result.achieved_rps, 1), "rps",
                     round(profile.rate_rps * floor_pct / 100, 1), comparison=">=")
        self.measure(f"{result.label}: load generator CPU", result.generator_cpu_pct, "% of a core",
                     profile.max_generator_cpu_pct)

    def attach_comparison(self, title: str, *results: LoadResult) -> None:
        """Attach plots that show several load runs together (e.g. the mesh path against the direct one)."""
        from conformance.load.plots import plot_histogram, plot_timeline

        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        for plot in (plot_histogram(results, self.load_dir / f"{slug}-histogram.png", title),
                     plot_timeline(results, self.load_dir / f"{slug}-over-time.png", f"{title}: over time")):
            allure.attach.file(str(plot), name=f"{title}: {plot.stem.removeprefix(slug + '-').replace('-', ' ')}",
                               attachment_type=allure.attachment_type.PNG)

    # -- reporting -------------------------------------------------------------------------------------------

    def measure(self, name: str, value: float, unit: str, budget: float | None = None,
                comparison: str = "<=") -> Measurement:
        """Record a measured value (beside its budget) for the conformance report."""
        measurement = Measurement(name, value, unit, budget, comparison)
        self.measurements.append(measurement)
        allure.attach(json.dumps(measurement.as_dict()), name=f"measurement: {name}",
                      attachment_type=allure.attachment_type.JSON)
        return measurement

    # -- cleanup ---------------------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Remove what this check applied and deployed (its namespace, in every cluster)."""
        if self._used_faults:
            self.mesh.faults.reset()
        for undo in reversed(self._mesh_undo):
            for cluster, restore in undo.items():
                self.mesh.mesh_config(restore, [cluster])
        self._mesh_undo.clear()
        for docs, clusters in reversed(self._applied):
            self.mesh.delete(docs, clusters)
        self._applied.clear()
        self.mesh.delete_namespace(self.namespace)
        if self._other_namespace_used:
            self.mesh.delete_namespace(self.other_namespace)
