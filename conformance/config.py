"""RunConfig: the one place for every setting, budget and timeout of a run.

Each setting is declared once (``conformance.settings``): the core's are RunConfig's fields below, each
provider's are its ``Settings`` class, held in ``RunConfig.settings``. A setting's name is its profile key, its
flag is ``--`` + the name with dashes (or what it declares), its pytest option that flag with a ``--mesh-`` prefix.

Precedence: command-line flags > profile YAML (``--profile``) > the defaults below. Budgets, timeouts and
load settings are plain numbers whose unit is in their name (``_s``, ``_ms``, ``_pct``, ``_rps``); override
one with ``--budget in_cluster_p99_ms=12``, ``--timeout consistency_s=60`` or ``--load rate_rps=500``, or in
a profile::

    provider: kind
    topology: multi-network
    istio_version: 1.28.0
    budgets: {in_cluster_p99_ms: 12}
    timeouts: {consistency_s: 60}
    load: {rate_rps: 500, users: 20}

Every measured value is written into the conformance report beside the budget it was held to.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from conformance.errors import UsageError
from conformance.settings import RUN_COMMANDS, Settings, catalog, coerce, declarations, plain, setting

__all__ = ["Budgets", "LoadSettings", "RunConfig", "Timeouts", "parse_overrides"]

S = TypeVar("S", bound=Settings)
UPGRADE_TOO = (*RUN_COMMANDS, "upgrade")
"""Budgets and timeouts apply to ``meshconf upgrade`` too: the gate's traffic, held connections and catalogues."""


@dataclass(frozen=True)
class Timeouts:
    """How long meshconf waits for things. Seconds unless the name says otherwise."""

    consistency_s: float = 30.0
    """Maximum time for applied config to take effect everywhere (await_convergence)."""
    poll_interval_s: float = 0.1
    """Pause between two convergence polls."""
    consecutive_successes: int = 3
    """Polls in a row that must meet the expectation before config counts as converged."""
    mesh_up_s: float = 180.0
    """Bringing the whole mesh up (local: seconds; kind: clusters + Istio take minutes)."""
    probe_ready_s: float = 30.0
    """A probe workload (and its sidecar) becoming ready."""
    config_apply_s: float = 10.0
    """A provider confirming that every proxy loaded a config write."""
    mesh_config_s: float = 180.0
    """A MeshConfig change reaching every control plane (on Kubernetes istiod reads its ConfigMap as a mounted
    file, which the kubelet refreshes about once a minute)."""
    call_timeout_s: float = 2.0
    """One request sent by a probe: connect, request and response together (the probe gives up after it and
    reports "timeout"). Must stay above ``Budgets.fail_fast_s``, or a call that hangs could not be told from one
    that failed fast."""
    forward_s: float = 60.0
    """One forward batch (many calls) through a probe's control port."""
    rotation_s: float = 900.0
    """Waiting for a certificate rotation (Istio rotates on its own schedule, at about half the cert TTL)."""
    teardown_s: float = 30.0
    """Stopping everything a run started."""
    load_grace_s: float = 30.0
    """A load run may take this long beyond its warm-up + duration before it is stopped as hung."""
    upgrade_hold_s: float = 540.0
    """How long ``meshconf upgrade`` holds its keep-alive connections (the canary steps must end within it;
    the probe's forward is bounded at 600 s)."""
    connection_hold_s: float = 590.0
    """Longest a check holds keep-alive connections while it changes the mesh (it ends them as soon as it is
    done; the probe's forward is bounded at 600 s)."""
    control_plane_s: float = 300.0
    """A control plane restarted, stopped or started, or a root migration step's restarts, on Kubernetes:
    each ``kubectl rollout status`` and the wait for ``istioctl remote-clusters`` to show the clusters synced."""


@dataclass(frozen=True)
class Budgets:
    """What the mesh is held to. Every budget is reported beside the value measured against it."""

    authz_propagation_s: float = 10.0
    """AuthorizationPolicy applied -> first enforced denial."""
    cert_ttl_s: float = 86400.0
    """Longest validity a workload certificate may have (Istio's default is 24 h)."""
    in_cluster_p99_ms: float = 10.0
    """p99 of calls between two workloads in one cluster, under load (``LoadSettings``)."""
    cross_cluster_p99_ms: float = 50.0
    """p99 of calls to a workload in another cluster, under load, with the topology's injected RTT."""
    ingress_p99_ms: float = 20.0
    """p99 of calls through a cluster's ingress gateway to a workload in that cluster (north-south), under load.
    Looser than in-cluster: the figure includes the generator's own timing (Locust, outside the mesh), whose
    stalls on a busy 2-core machine were seen to lift the local mesh's p99 from ~3 ms to 12-16 ms."""
    mesh_overhead_p99_ms: float = 5.0
    """What the mesh path (client sidecar -> mTLS -> server sidecar) adds to the direct path, at p50 and p99."""
    error_rate_pct: float = 0.0
    """Share of calls under load that may fail (non-2xx or no answer)."""
    failover_errors: int = 5
    """Client-visible errors allowed while traffic first shifts to another cluster (the checks' DestinationRules
    eject after 3 consecutive errors, with retries off, so a conformant mesh shows 3, sometimes 4)."""
    readmission_failing_s: float = 2.0
    """How long calls may fail when a pod that still fails is re-admitted after its ejection time (and ejected
    again, for twice as long). Envoy holds back a host health change that comes within ``update_merge_window``
    (1 s by default; Istio does not set it) of the previous one until that window ends, so the re-ejection,
    which follows the re-admission by milliseconds, reaches the load balancer up to 1 s late and every call
    meanwhile fails (measured here: 1.0-1.2 s)."""
    failover_shift_s: float = 10.0
    """From a local failure until calls are served by another cluster."""
    failback_s: float = 6.0
    """From the local workload's recovery until calls are served locally again, for a pod ejected once: its
    ejection ends after baseEjectionTime (3 s in the checks' DestinationRules) and Envoy re-admits it at the
    next outlier-detection sweep (interval 1 s), plus 2 s for the traffic to show it. A pod ejected several
    times in a row is ejected longer: see :meth:`failback_allowed`."""
    fail_fast_s: float = 1.0
    """Longest a call to an unreachable cluster may take to fail (it must not hang). On a partition a new
    connection's SYN is dropped, so the call fails when the proxy's connect timeout fires: the checks set
    ``connectionPool.tcp.connectTimeout: 500ms`` (Istio's default is 10 s). Must stay below
    ``Timeouts.call_timeout_s``, where the probe gives up on a hung call."""
    locality_rtt_saving_ms: float = 20.0
    """What locality-preferred routing must save at p50 and at p90 against calls across the link (p90: a mesh
    that lets a tenth of the calls cross does not save it there). The shipped topologies' link RTT is 25 ms;
    set this to about 80% of your clusters' real round trip."""
    failover_p95_ms: float = 50.0
    """p95 of calls while a local backend fails under load and traffic shifts to another cluster. Not p99: the
    calls caught in the shift (in flight when the backend failed, and those that open the new mTLS connections
    across the link: TCP and TLS handshakes, two more round trips each) are slower on any mesh, Istio on
    clusters included, and at the shipped load they are about 1% of the window (p99 59 ms measured on a
    conformant local mesh with a 25 ms link, p95 at the cross-cluster level, ~30 ms). The p99 is reported."""
    failover_error_rate_pct: float = 1.0
    """Share of requests allowed to fail under load while a local backend fails and traffic shifts."""
    locality_local_pct: float = 99.0
    """Share of calls that must stay in the caller's locality when locality LB is on."""
    upgrade_connection_resets: int = 0
    """Keep-alive connections between workloads that are not restarted, held across clusters through
    ``meshconf upgrade``, that may be reset or closed (a canary upgrade must not drop them)."""
    endpoint_propagation_s: float = 10.0
    """A workload newly deployed in one cluster is reached from a client in another (the remote registry's watch,
    then a push), measured from when its pod is ready."""
    remote_secret_recovery_s: float = 30.0
    """A broken remote secret replaced by a working one -> that cluster's endpoints served again (istiod gives a
    remote cluster PILOT_REMOTE_CLUSTER_TIMEOUT, 30 s, to sync)."""
    control_plane_return_s: float = 30.0
    """A stopped control plane started again -> config applied while it was down reaches its proxies. Proxies
    reconnect with their own backoff: Envoy's xDS retry doubles from 0.5 s up to 30 s."""
    locality_sample_calls: int = 500
    """Calls in the sample that measures ``locality_local_pct`` once the config has converged (retries off, so
    every call is one load-balancing decision): at 99% the sample may hold 5 calls answered elsewhere."""

    def failback_allowed(self, ejections: int, base_ejection_s: float) -> float:
        """``failback_s`` for a pod that was ejected ``ejections`` times in a row before it recovered: its last
        ejection lasts baseEjectionTime x ``ejections`` (Envoy's backoff; it only decreases once the pod has
        stayed healthy for an interval), so failback may take (``ejections`` - 1) x baseEjectionTime longer."""
        return self.failback_s + max(0, ejections - 1) * base_ejection_s


@dataclass(frozen=True)
class LoadSettings:
    """How latency checks load the mesh (``conformance.load``); a check may override a value for its own run.

    The rate is paced (constant throughput), so the latencies measured are those of this rate, not of
    whatever the generator could manage. A run whose generator fell short is broken, never passed.

    Why 300 rps for 7 s after 1 s of warm-up (2100 measured calls, about the 2000 that 200 rps for 10 s after 2 s
    gave, in 8 s instead of 12), measured on a 2-core machine shared with other work: the generator holds the
    rate (299.3-300 rps achieved; the probe's paced forward used 8-12% of a core, Locust 11-19%), and three
    clean runs of the latency checks stayed inside every budget (p99: in-cluster 2.5-5.3 ms of 10, ingress
    4.0-9.5 of 20, cross-cluster 29.3-37.9 of 50, mesh overhead 2.7-4.0 of 5; locality saved 26.6-27.2 ms of
    the 20 required). One second of warm-up opens every pooled connection: the first second of a window was
    no slower than the others. Not shorter windows: a window's p99 is its slowest 1%, so one stall of the
    machine longer than 1% of the window decides it (70 ms at 7 s, 40 ms at 4 s); at 500 rps for 4 s one 88 ms
    stall put an in-cluster p99 at 68 ms. Not a higher rate: work the emulated network does per request grows
    with it: under the ``no-connection-reuse`` defect (a new connection through the link relay per call)
    cross-cluster answers took p50 55-59 ms at 300 rps but 56-79 ms at 400, where they starved the generator
    into a shortfall (broken) instead of failing the budget. 60 users give each user 200 ms between calls
    (four times the cross-cluster budget), and a window's edges may cost at most 60 of its 2100 calls (2.9%).
    """

    rate_rps: float = 300.0
    """Target request rate of one load run, over all users."""
    users: int = 60
    """Concurrent users (Locust users, or probe forward slots); each sends ``rate_rps / users`` per second."""
    spawn_rate_per_s: float = 300.0
    """Users started per second at the beginning of a run (before the warm-up): all of them in 0.1 s."""
    warmup_s: float = 1.0
    """Load that runs before the measurement and is excluded from it (connections, pools, caches)."""
    duration_s: float = 7.0
    """The measured window."""
    min_rate_pct: float = 98.0
    """The achieved rate must reach this share of the target, or the run is broken (generator shortfall)."""
    max_generator_cpu_pct: float = 90.0
    """A generator process busier than this share of one core is CPU-bound: the run is broken."""

    def users_for(self, latency_ms: float) -> int:
        """Users enough that answers twice as slow as ``latency_ms`` (a check's budget) still fit each user's
        pacing: a mesh over its budget then fails the check rather than starving the generator (broken)."""
        return max(self.users, math.ceil(self.rate_rps * 2 * latency_ms / 1000))


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs to know: the core's settings, and the selected provider's own in ``settings``.

    Build it with ``conformance.providers.build_config`` (it validates every value); a provider reads its own
    settings typed with :meth:`settings_as`. :meth:`as_dict` / :meth:`from_dict` hand a built config to another
    process unchanged (``meshconf run`` writes it once, for pytest and the local mesh's daemon)."""

    provider: str = setting("local", help="local (default), kind, k3s or existing", metavar="NAME")
    topology: str = setting("multi-primary", metavar="NAME", commands=(*RUN_COMMANDS, "plan", "upgrade"),
                            help="multi-primary (default), multi-network, primary-remote, three-cluster, or a "
                                 "topology file")
    out: Path = setting(Path("out"), help="reports and diagnostics directory (default: out)", commands=("run",))
    profile: Path | None = setting(None, help="YAML file of settings, budgets and timeouts", metavar="FILE",
                                   commands=(*RUN_COMMANDS, "plan", "upgrade"))
    keep: bool = setting(False, help="leave the mesh running afterwards (see meshconf down)", commands=("run",))
    timeouts: Timeouts = setting(factory=Timeouts, flag="--timeout", metavar="NAME=VALUE", commands=UPGRADE_TOO,
                                 help="override a timeout, e.g. consistency_s=60 (repeatable)")
    budgets: Budgets = setting(factory=Budgets, flag="--budget", metavar="NAME=VALUE", commands=UPGRADE_TOO,
                               help="override a budget, e.g. in_cluster_p99_ms=12 (repeatable)")
    load: LoadSettings = setting(factory=LoadSettings, flag="--load", metavar="NAME=VALUE",
                                 help="override a load setting of the latency checks, e.g. rate_rps=500 (repeatable)")
    settings: Settings = field(default_factory=Settings)
    """The selected provider's own settings (its ``Settings`` class)."""

    @classmethod
    def build(
        cls,
        providers: Mapping[str, type[Settings]],
        *,
        profile: Path | str | None = None,
        budget_overrides: Iterable[str] | None = None,
        timeout_overrides: Iterable[str] | None = None,
        load_overrides: Iterable[str] | None = None,
        **flags: Any,
    ) -> RunConfig:
        """Merge defaults, the profile file and flags (None means "not given"); ``providers`` is every
        provider's Settings class (``conformance.providers.provider_settings()``).

        Raises UsageError naming the bad value and how to fix it.
        """
        values: dict[str, Any] = {}
        budgets: dict[str, Any] = {}
        timeouts: dict[str, Any] = {}
        load: dict[str, Any] = {}
        if profile is not None:
            data = _read_profile(Path(profile))
            budgets.update(data.pop("budgets", None) or {})
            timeouts.update(data.pop("timeouts", None) or {})
            load.update(data.pop("load", None) or {})
            values.update(data)
            values["profile"] = Path(profile)
        values.update({k: v for k, v in flags.items() if v is not None})
        budgets.update(parse_overrides(budget_overrides or (), "--budget"))
        timeouts.update(parse_overrides(timeout_overrides or (), "--timeout"))
        load.update(parse_overrides(load_overrides or (), "--load"))

        everything = catalog(cls, providers)
        core = {d.name: d for d in declarations(cls)}
        owned = {d.name: d for d in everything if d.owners}
        unknown = sorted(set(values) - set(core) - set(owned))
        if unknown:
            known = sorted(name for name in (*core, *owned) if name not in ("timeouts", "budgets", "load"))
            raise UsageError(f"unknown setting {unknown[0]!r}; known settings: {', '.join(known)}")
        provider = str(values.get("provider") or cls.provider)
        if provider not in providers:
            raise UsageError(f"unknown provider {provider!r}; choose one of: {', '.join(providers)}")
        mine = {d.name for d in declarations(providers[provider])}
        for name in sorted(set(values) & set(owned) - mine):
            raise UsageError(f"{owned[name].flag} is for --provider {' or '.join(owned[name].owners)}, not "
                             f"{provider} (drop it, or choose that provider)")
        settings = providers[provider].from_values({k: v for k, v in values.items() if k in mine})
        settings.validate()
        config = cls(
            timeouts=_numbers(Timeouts, timeouts, "timeout"),
            budgets=_numbers(Budgets, budgets, "budget"),
            load=_numbers(LoadSettings, load, "load setting"),
            settings=settings,
            **{k: coerce(core[k].kind, v) for k, v in values.items() if k in core},
        )
        config.validate()
        return config

    def settings_as(self, kind: type[S]) -> S:
        """The provider's settings as its own class (``config.settings_as(KindSettings).istio_version``). A
        config made without provider settings (``RunConfig()`` in a test) reads as that class's defaults."""
        if isinstance(self.settings, kind):
            return self.settings
        if type(self.settings) is Settings:
            return kind()
        raise TypeError(f"provider {self.provider} was configured with {type(self.settings).__name__}, "
                        f"not {kind.__name__}")

    def validate(self) -> None:
        """Raise UsageError for a value that cannot work (the provider's own settings validate themselves)."""
        if self.load.users < 1 or self.load.rate_rps <= 0 or self.load.duration_s <= 0:
            raise UsageError("load settings need users >= 1, rate_rps > 0 and duration_s > 0 "
                             f"(got users={self.load.users}, rate_rps={self.load.rate_rps:g}, "
                             f"duration_s={self.load.duration_s:g})")
        if self.budgets.fail_fast_s >= self.timeouts.call_timeout_s:
            raise UsageError(f"budget fail_fast_s ({self.budgets.fail_fast_s:g}) must be below timeout call_timeout_s "
                             f"({self.timeouts.call_timeout_s:g}): a probe gives up on a call after call_timeout_s, so "
                             "a call that hangs could not be told from one that fails fast")

    def with_out(self, out: Path) -> RunConfig:
        return replace(self, out=out)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy, for reports and for handing the config to another process (:meth:`from_dict`)."""
        data = {f.name: plain(getattr(self, f.name)) for f in fields(self) if f.name != "settings"}
        for name in ("timeouts", "budgets", "load"):
            data[name] = dataclasses.asdict(getattr(self, name))
        return {**data, "settings": self.settings.as_dict()}

    def as_profile(self) -> dict[str, Any]:
        """This config as a ``--profile`` file reads it (every setting by its profile key; budgets, timeouts and
        load as mappings): how ``meshconf upgrade`` hands its resolved config to the catalogue runs."""
        return {"provider": self.provider, "topology": self.topology,
                **{name: dataclasses.asdict(getattr(self, name)) for name in ("budgets", "timeouts", "load")},
                **{k: v for k, v in self.settings.as_dict().items() if v is not None}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], providers: Mapping[str, type[Settings]]) -> RunConfig:
        """Inverse of :meth:`as_dict`: the config another process built and validated, read back as it was
        (not built again). ``providers``: the Settings class of at least the config's provider."""
        values = dict(data)
        core = {d.name: d.kind for d in declarations(cls) if d.kind != "overrides"}
        return cls(
            timeouts=Timeouts(**values.get("timeouts", {})),
            budgets=Budgets(**values.get("budgets", {})),
            load=LoadSettings(**values.get("load", {})),
            settings=providers[str(values["provider"])].from_values(values.get("settings", {})),
            **{k: coerce(kind, values[k]) for k, kind in core.items() if k in values},
        )


def parse_overrides(items: Iterable[str], flag: str) -> dict[str, str]:
    """``["a_ms=3", "b_s=1.5"]`` -> ``{"a_ms": "3", "b_s": "1.5"}``; names may use dashes."""
    result: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise UsageError(f"{flag} {item!r} must look like NAME=VALUE, e.g. {flag} in_cluster_p99_ms=12")
        result[name.strip().replace("-", "_")] = value.strip()
    return result


def _read_profile(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"profile {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"profile {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"profile {path} must be a YAML mapping of settings, not a {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _numbers(kind: type[Any], given: Mapping[str, Any], what: str) -> Any:
    names = {f.name: f for f in fields(kind)}
    values: dict[str, Any] = {}
    for raw_name, raw in given.items():
        name = str(raw_name).replace("-", "_")
        if name not in names:
            raise UsageError(f"unknown {what} {raw_name!r}; known {what}s: {', '.join(names)}")
        number_type = int if names[name].type in ("int", int) else float
        try:
            value = number_type(raw)
        except (TypeError, ValueError):
            raise UsageError(f"{what} {name} must be a number, got {raw!r}") from None
        if value < 0:
            raise UsageError(f"{what} {name} must not be negative, got {raw!r}")
        values[name] = value
    return kind(**values)

