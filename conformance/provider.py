"""The provider contract: the only seam between the checks and the environment they run against.

Every check is written once against :class:`Provider`. A provider brings a multi-cluster mesh up (or
attaches to one), applies plain Istio and Kubernetes YAML, deploys probe workloads, sends traffic from them,
injects faults, and reads proxies' Envoy admin. ``conformance/providers/`` holds the implementations; the
core reaches them only through ``conformance.providers.create_provider``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, runtime_checkable

from conformance.certs import RootStep, TrustRoots
from conformance.errors import EnvironmentBroken, UsageError
from conformance.runstate import RunState, runs_root
from conformance.settings import Settings as NoSettings
from conformance.topology import Cluster

if TYPE_CHECKING:
    from conformance.config import RunConfig
    from conformance.topology import Topology

__all__ = [
    "DATA_PORT",
    "ControlPlaneStatus",
    "Faults",
    "Feature",
    "MeshDescription",
    "ProbeHandle",
    "ProbeInstance",
    "ProbeSpec",
    "Provider",
    "RemoteClusterStatus",
    "RootStep",
    "TrustRoots",
]

DATA_PORT = 8080
"""The probe's service port, the same in every provider."""


class Feature(StrEnum):
    """What an environment can do. A check that needs a missing feature is skipped, saying which."""

    MULTI_CLUSTER = "multi-cluster"
    MULTI_NETWORK = "multi-network"
    EAST_WEST_GATEWAY = "east-west-gateway"
    INGRESS_GATEWAY = "ingress-gateway"
    OUT_OF_MESH_WORKLOADS = "out-of-mesh-workloads"
    MESH_WIDE_CONFIG = "mesh-wide-config"
    """The run may change mesh-wide config (root namespace policies, mesh config)."""
    CERT_ROTATION = "cert-rotation"
    LINK_FAULTS = "link-faults"
    """Latency can be added to, or a partition made in, the link between two clusters."""
    LINK_RTT = "link-rtt"
    """The link between clusters has the topology's round-trip time (``linkRttMs``) applied, so latency checks
    that depend on it measure something (the local mesh's relay; kind's netem once it applies the RTT).
    Providers that cannot apply it (existing clusters) do not offer it: those checks skip instead of passing
    trivially or failing."""
    WORKLOAD_FAULTS = "workload-faults"
    """Workloads can be made to fail (503/delay), killed, and scaled to zero."""
    GATEWAY_FAULTS = "gateway-faults"
    """A cluster's east-west gateway can be taken down and brought back."""
    CONTROL_PLANE_FAULTS = "control-plane-faults"
    """A primary's control plane can be restarted, stopped and started, and its status read (with the sync state
    of every remote cluster, as ``istioctl remote-clusters`` lists it)."""
    REMOTE_SECRET_FAULTS = "remote-secret-faults"
    """A primary's remote secret for another cluster can be rotated (a new credential), broken and restored."""
    ROOT_CA_MIGRATION = "root-ca-migration"
    """The mesh's root CA can be replaced in Istio's documented steps (plug-in CA ``cacerts``)."""
    SIDECAR_ENTRY = "sidecar-entry"
    """The machine running meshconf can send requests into a workload's sidecar (its outbound listener, as
    the workload's app does) and straight to its app (no sidecar): load from this machine through the mesh.
    Each ProbeInstance's ``extra`` then holds ``outbound`` (host:port of the sidecar's outbound listener, an
    HTTP proxy routing on Host) and ``loopback`` (where the app's data ports listen, for a workload with a
    sidecar; without one the app listens on the instance's ``address``)."""


@dataclass(frozen=True)
class ProbeSpec:
    """A probe workload to deploy: a Deployment + Service + ServiceAccount in Kubernetes terms."""

    service: str
    namespace: str
    cluster: str
    version: str = "v1"
    service_account: str | None = None
    """Defaults to the service name."""
    in_mesh: bool = True
    """False: no sidecar (an out-of-mesh, plaintext workload)."""
    ports: tuple[int, ...] = (DATA_PORT,)
    zone: str | None = None
    """Defaults to the cluster's first zone."""
    replicas: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def account(self) -> str:
        return self.service_account or self.service

    @property
    def host(self) -> str:
        """The service's cluster-local name."""
        return f"{self.service}.{self.namespace}.svc.cluster.local"

    @property
    def workload_labels(self) -> dict[str, str]:
        """Pod labels, as Istio selectors and DestinationRule subsets see them."""
        return {"app": self.service, "version": self.version, **self.labels}


@dataclass(frozen=True)
class ProbeInstance:
    """One pod (or local process pair) of a probe workload."""

    name: str
    address: str
    """The pod IP."""
    zone: str
    extra: Mapping[str, str] = field(default_factory=dict)
    """Provider-specific details (the local mesh: control, admin and sidecar addresses)."""


@dataclass(frozen=True)
class ProbeHandle:
    """A deployed probe workload. ``instances`` are its pods / processes."""

    spec: ProbeSpec
    instances: tuple[ProbeInstance, ...]

    @property
    def cluster(self) -> str:
        return self.spec.cluster

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def service(self) -> str:
        return self.spec.service

    @property
    def host(self) -> str:
        return self.spec.host

    @property
    def in_mesh(self) -> bool:
        return self.spec.in_mesh

    def url(self, path: str = "/", port: int = DATA_PORT) -> str:
        return f"http://{self.host}:{port}{path}"

    def __str__(self) -> str:
        mesh = "" if self.in_mesh else " (out of mesh)"
        return f"{self.spec.service}/{self.spec.version} in {self.namespace} on {self.cluster}{mesh}"


@dataclass(frozen=True)
class MeshDescription:
    """What is under test, for every report."""

    provider: str
    topology: str
    implementation: str
    """e.g. ``meshconf-local (reference, real Envoy)`` or ``istio``."""
    mesh_version: str
    proxy_version: str
    kubernetes_version: str | None = None
    details: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The report's form (``conformance-report.json`` ``run``, Allure environment)."""
        return {
            "provider": self.provider, "topology": self.topology, "implementation": self.implementation,
            "meshVersion": self.mesh_version, "proxyVersion": self.proxy_version,
            "kubernetesVersion": self.kubernetes_version, **dict(self.details),
        }


@dataclass(frozen=True)
class RemoteClusterStatus:
    """One row of ``istioctl remote-clusters``: a cluster a control plane reads, through which secret, and how
    far it got (``synced``, ``syncing``, ``timeout``, ``closed``; istiod's ``/debug/clusterz``)."""

    cluster: str
    secret: str
    """The remote secret's name; empty for the control plane's own cluster."""
    status: str


@dataclass(frozen=True)
class ControlPlaneStatus:
    """What a primary's control plane reports about itself."""

    cluster: str
    ready: bool
    """It serves its proxies (istiod: a ready pod)."""
    remote_clusters: tuple[RemoteClusterStatus, ...]

    def status_of(self, cluster: str) -> str | None:
        """The sync status of ``cluster`` (None: not listed)."""
        return next((r.status for r in self.remote_clusters if r.cluster == cluster), None)

    def describe(self) -> str:
        rows = ", ".join(f"{r.cluster} {r.status}" for r in self.remote_clusters)
        return f"control plane of {self.cluster}: {'ready' if self.ready else 'NOT ready'}; clusters: {rows}"


@runtime_checkable
class Faults(Protocol):
    """Deliberate failures, for failover and resilience checks."""

    def set_mode(self, probe: ProbeHandle, status: int | None = None, delay_ms: int = 0) -> None:
        """Make every instance of ``probe`` answer ``status`` (e.g. 503) and/or add delay, until reset."""

    def scale(self, probe: ProbeHandle, replicas: int) -> ProbeHandle:
        """Scale the workload in its cluster (0 removes every instance); returns the new handle."""

    def kill(self, probe: ProbeHandle, instance: int = 0) -> None:
        """Kill one instance abruptly (a crash): its endpoint stays until the platform notices."""

    def set_gateway(self, cluster: str, up: bool) -> None:
        """Take the cluster's east-west gateway down, or bring it back."""

    def set_link(self, a: str, b: str, rtt_ms: float | None = None, cut: bool | None = None) -> None:
        """Change the network between two clusters: round-trip latency, or cut it (both directions)."""

    def restart_control_plane(self, cluster: str) -> None:
        """Restart the control plane of primary ``cluster`` and return once it is ready again (kind/existing:
        ``kubectl rollout restart deploy/istiod`` and its rollout); proxies keep their config meanwhile."""

    def set_control_plane(self, cluster: str, up: bool) -> None:
        """Stop (istiod scaled to 0) or start the control plane of primary ``cluster``; returns once it is gone,
        or ready again."""

    def control_plane_status(self, cluster: str) -> ControlPlaneStatus:
        """Whether the control plane of primary ``cluster`` is ready, and every cluster it reads with its sync
        status (``istioctl remote-clusters``)."""

    def rotate_remote_secret(self, cluster: str, remote: str) -> None:
        """Give primary ``cluster`` a new remote secret for ``remote`` with a new credential (kind: a new token
        and ``istioctl create-remote-secret`` applied again); returns once it is applied."""

    def break_remote_secret(self, cluster: str, remote: str) -> None:
        """Replace primary ``cluster``'s remote secret for ``remote`` with one whose API server is unreachable."""

    def restore_remote_secret(self, cluster: str, remote: str) -> None:
        """Put back a working remote secret for ``remote`` in primary ``cluster``."""

    def migrate_root(self, step: RootStep, namespaces: Sequence[str]) -> TrustRoots:
        """Take one step of Istio's plug-in CA root migration on every cluster: ``cacerts`` replaced, the control
        planes restarted, then the gateways and the workloads of ``namespaces`` restarted, as Istio documents it.
        Returns the old and new roots and the trust bundle after the step."""

    def reset(self) -> None:
        """Links back to the topology's defaults, every gateway and control plane up, broken remote secrets
        restored (a root migration stays: a new root is no fault)."""


class Provider(abc.ABC):
    """A multi-cluster mesh under test, and the one seam between the core and an environment.

    A provider is a subclass in its own package under ``conformance/providers/`` and one line in the registry
    (``conformance/providers/__init__.py``). It implements the abstract methods; the class-level lifecycle
    (``attach``, ``cleanup``, ``leftovers``) works on the run directory ``up()`` records its state in; the
    optional capabilities (``defects``, ``plan``, and the upgrade hooks ``upgrade_plan``, ``upgrade_mesh``,
    ``restart_probes``) raise UsageError naming the provider unless it overrides them (``at_version`` and
    ``prepare_upgrade`` change nothing by default). Use as a context manager: ``down()`` always runs.
    """

    name: ClassVar[str]
    """The provider's name: ``--provider NAME``, the prefix of its run directories."""
    OFFERS: ClassVar[frozenset[Feature]] = frozenset()
    """Every feature ``features()`` can return, in a topology and configuration that allows it."""
    Settings: ClassVar[type[NoSettings]] = NoSettings
    """The provider's own settings (``conformance.settings``): each field is a ``meshconf`` flag, its pytest twin
    and a profile key. A provider reads them typed with ``config.settings_as(ItsSettings)``."""
    run_dir: Path | None = None
    """Where this run's state is recorded (``conformance.runstate``); None until ``up()`` or ``attach()``."""

    def __init__(self, config: RunConfig, topology: Topology, run_dir: Path | None = None) -> None:
        self.config = config
        self.topology = topology
        self.run_dir = run_dir

    # -- before anything starts ------------------------------------------------------------------------------

    @classmethod  # noqa: B027 (a hook: by default nothing is refused)
    def validate(cls, config: RunConfig, topology: Topology) -> None:
        """Raise UsageError for a setting this provider cannot use. Runs nothing."""

    @classmethod
    def preflight(cls, config: RunConfig, topology: Topology) -> list[str]:
        """What would stop ``up()`` on this machine (or these clusters), one line per problem with its fix."""
        return []

    # -- the class-level lifecycle: runs recorded on disk ----------------------------------------------------

    @classmethod
    def attach(cls, config: RunConfig, topology: Topology, run_dir: Path) -> Self:
        """A provider for the environment another process brought up and recorded in ``run_dir``."""
        if not RunState(run_dir).read().get("ready"):
            raise EnvironmentBroken(f"no ready {cls.name} mesh recorded in {run_dir} (start one with "
                                    f"`meshconf up --provider {cls.name}`)")
        return cls(config, topology, run_dir)

    @classmethod
    @abc.abstractmethod
    def cleanup(cls, run_dir: Path) -> list[int]:
        """Tear down what the run recorded in ``run_dir`` created, without its config (its manager may be gone),
        then remove the directory. Returns the PIDs it had to stop."""

    @classmethod
    def leftovers(cls) -> list[Path]:
        """Run directories of this provider that meshconf created and nobody tore down (``meshconf down``)."""
        root = runs_root()
        return sorted(p for p in root.glob(f"{cls.name}-*") if RunState(p).owned()) if root.is_dir() else []

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- optional capabilities -------------------------------------------------------------------------------

    @classmethod
    def defects(cls) -> Mapping[str, str]:
        """The deliberate defects this provider can be started with (``--mesh-defect``): name -> meaning."""
        raise UsageError(f"provider {cls.name} has no deliberate defects (only the local mesh has them, "
                         "for self-validation)")

    @classmethod
    def plan(cls, config: RunConfig, topology: Topology) -> str:
        """What ``up()`` would do, as printable numbered steps; runs nothing."""
        raise UsageError(f"provider {cls.name} has no install plan to print: it installs nothing "
                         "(kind and k3s do)")

    # The upgrade gate (``conformance.upgrade``) calls these in this order: ``at_version(--from)`` and
    # ``upgrade_plan`` (before anything starts: a UsageError stops the gate), ``up()``, the catalogue,
    # ``prepare_upgrade``, then, with held connections and traffic measured, ``upgrade_mesh`` and
    # ``restart_probes`` of meshconf's own namespace, the catalogue again (``at_version(--to)``), ``down()``.

    @classmethod
    def at_version(cls, config: RunConfig, version: str | None) -> RunConfig:
        """The config of this provider's mesh at Istio ``version``: ``meshconf upgrade``'s ``--from`` before the
        upgrade and ``--to`` after it (kind: the Istio it installs, and reports). By default the config as it is:
        a mesh meshconf does not install runs whatever version it runs. UsageError when ``version`` is needed."""
        return config

    @classmethod
    def upgrade_plan(cls, config: RunConfig, topology: Topology, to_version: str) -> str:
        """What ``meshconf upgrade`` would do on this provider, as printable steps; runs nothing. Raises
        UsageError for an upgrade this provider cannot make with these settings."""
        raise UsageError(f"provider {cls.name} cannot upgrade a mesh (kind and existing can)")

    def prepare_upgrade(self, to_version: str, say: Callable[[str], None]) -> None:  # noqa: B027 (a hook)
        """What the upgrade needs before the clock starts (kind: V2's images preloaded into every cluster), so
        it is not measured as part of the upgrade. By default nothing."""

    def upgrade_mesh(self, to_version: str, say: Callable[[str], None]) -> None:
        """Upgrade the running mesh to ``to_version`` (the provider's own steps), while ``conformance.upgrade``
        measures traffic and held connections; returns once the workloads run on the new version."""
        raise UsageError(f"provider {self.name} cannot upgrade a mesh (kind and existing can)")

    def restart_probes(self, namespace: str, say: Callable[[str], None]) -> None:
        """Restart every probe workload meshconf deployed in ``namespace`` (a rolling restart, as ``kubectl
        rollout restart`` does) and return once they are ready again: after ``upgrade_mesh``, so meshconf's own
        probes move onto the new proxies while traffic to them is measured. Never touches anything else."""
        raise UsageError(f"provider {self.name} cannot restart probe workloads (kind and existing can)")

    # -- the contract the checks use -------------------------------------------------------------------------

    @abc.abstractmethod
    def up(self, owner_pid: int | None = None, progress: Callable[[str], None] | None = None) -> None:
        """Bring the environment up, reporting progress lines; raises EnvironmentBroken (after cleaning up).

        ``owner_pid``: a process whose exit means the environment is no longer wanted.
        """

    @abc.abstractmethod
    def down(self) -> None:
        """Tear down everything this provider created. Idempotent; safe after a crash."""

    @abc.abstractmethod
    def describe(self) -> MeshDescription: ...

    def clusters(self) -> Sequence[Cluster]:
        return self.topology.clusters

    @abc.abstractmethod
    def features(self) -> frozenset[Feature]: ...

    @abc.abstractmethod
    def apply(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        """Apply Istio/Kubernetes documents in each cluster and return once every proxy has them.

        Raises ManifestError / UnsupportedError for bad documents, ConfigNotApplied when a proxy rejects them.
        """

    @abc.abstractmethod
    def delete(self, docs: Sequence[Mapping[str, Any]], clusters: Sequence[str]) -> None:
        """Remove documents applied earlier (missing ones are ignored) and wait as for apply."""

    @abc.abstractmethod
    def deploy_probe(self, spec: ProbeSpec) -> ProbeHandle:
        """Deploy a probe workload and return once it (and its sidecar) is ready."""

    @abc.abstractmethod
    def delete_namespace(self, namespace: str) -> None:
        """Remove a namespace and everything in it from every cluster (probes and config)."""

    @abc.abstractmethod
    def probe_control(
        self, probe: ProbeHandle, method: str, path: str, body: Mapping[str, Any] | None = None,
        instance: int = 0, timeout_s: float = 60.0,
    ) -> Any:
        """Call the probe's control port (``/forward``, ``/mode``, ``/info``) and return its JSON answer."""

    @abc.abstractmethod
    def forward(self, probe: ProbeHandle, request: Mapping[str, Any], instance: int = 0) -> Any:
        """Make calls FROM ``probe`` (the probe's ``/forward``) the way this environment routes them.

        ``request`` is the probe's forward request; the provider adds what its network needs (the local
        mesh points an in-mesh probe at its sidecar, and resolves names for an out-of-mesh one, as
        iptables capture and kube-proxy do in a cluster). Returns the probe's JSON answer.
        """

    @abc.abstractmethod
    def proxy_admin(self, probe: ProbeHandle, path: str, instance: int = 0) -> str:
        """GET a path on the probe's sidecar Envoy admin (``/config_dump``, ``/stats``, ``/certs``...)."""

    @property
    @abc.abstractmethod
    def faults(self) -> Faults: ...

    @abc.abstractmethod
    def ingress_address(self, cluster: str) -> str:
        """``ip:port`` where the cluster's ingress gateway serves Gateway port 80."""

    @abc.abstractmethod
    def rotate_certificates(self, namespace: str) -> Mapping[str, str]:
        """Force new workload certificates in ``namespace``; returns instance -> new serial (hex)."""

    @abc.abstractmethod
    def mesh_config(self, patch: Mapping[str, Any], clusters: Sequence[str]) -> Mapping[str, Mapping[str, Any]]:
        """Merge ``patch`` (a JSON merge patch of MeshConfig fields, ``conformance.meshconfig``) into the
        MeshConfig of the control plane of each of ``clusters`` (a remote cluster's is its primary's), and
        return once those control planes use it. Needs Feature.MESH_WIDE_CONFIG.

        Returns, per control-plane cluster, the merge patch that restores the previous MeshConfig: pass it
        back (``mesh_config(undo[c], [c])``) to undo the change. Raises UnsupportedError for a field the
        environment cannot honour, UsageError when mesh-wide changes are not allowed.
        """

    @abc.abstractmethod
    def diagnostics(self, dest: Path, namespaces: Sequence[str]) -> list[Path]:
        """Write what an engineer needs to debug a failure under ``dest``; never secrets. Returns files."""

    @abc.abstractmethod
    def environment_problems(self, namespaces: Sequence[str], since: float | None = None) -> list[str]:
        """What broke underneath a check in ``namespaces`` (since ``since``, a time.time() value: when the check
        started) without the check asking for it (a sidecar or probe someone else killed, a crashed gateway),
        one line each naming the process and its last output.
        Asked when a check did not pass: a problem here makes the check *broken*, not *failed*. Raises
        EnvironmentLost when the environment itself is gone."""

