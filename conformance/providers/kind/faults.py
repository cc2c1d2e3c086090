"""Faults on kind: through the probe, through the API server, and inside the node containers.

- 503 / delay, kill, scale: :class:`WorkloadFaults` (shared with the existing provider).
- East-west gateway down: scale ``istio-eastwestgateway`` to 0 (and back), or delete its pod.
- Link latency and partition between two clusters: inside every node container of both clusters (the nodes
  ``kind get nodes`` lists), on traffic to the other cluster's nodes, pods, services and load balancers
  (``links.py``). Latency changes the netem qdiscs the plan's ``links`` step set up; ``reset`` puts the
  topology's round trip back, not zero.
- Control planes, remote secrets and the root CA: the kubectl and istioctl commands of ``lifecycle.py`` (what
  ``meshconf plan`` prints after the bring-up), run through the provider's runner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conformance.certs import MeshCA
from conformance.errors import ProviderError
from conformance.provider import ControlPlaneStatus, RootStep, TrustRoots
from conformance.providers.kind import lifecycle, links
from conformance.providers.kind.manifests import EAST_WEST_GATEWAY
from conformance.providers.kind.mesh import KindMesh
from conformance.providers.kind.plan import SMOKE_NAMESPACE
from conformance.providers.kind.runner import run_steps
from conformance.providers.kind.steps import Command, Step
from conformance.providers.kube.faults import WorkloadFaults
from conformance.providers.kube.lifecycle import STOPPED_KEY, parse_remote_clusters, wait_for_identities
from conformance.runstate import RunState

__all__ = ["BROKEN_KEY", "ROTATIONS_KEY", "TOKENS_KEY", "KindFaults"]

TOKENS_KEY = "remoteSecretTokens"
"""Run-state key: "primary/remote" -> the reader token Secret its remote secret holds now (the install's until a
rotation)."""
ROTATIONS_KEY = "remoteSecretRotations"
BROKEN_KEY = "brokenRemoteSecrets"
"""Run-state key: "primary/remote" of every remote secret broken and not restored yet."""


class KindFaults(WorkloadFaults):
    """Workload faults, plus the east-west gateway and the links between clusters."""

    def __init__(self, provider: KindMesh) -> None:
        super().__init__(provider)
        self.provider = provider
        self._cut: set[tuple[str, str]] = set()
        self._changed: set[tuple[str, str]] = set()
        self._gateways_down: set[str] = set()

    def set_gateway(self, cluster: str, up: bool) -> None:
        if up:
            self.gateway_up(cluster)
            self._gateways_down.discard(cluster)
        else:
            self.gateway_down(cluster)
            self._gateways_down.add(cluster)

    def set_link(self, a: str, b: str, rtt_ms: float | None = None, cut: bool | None = None) -> None:
        """Latency: half the round trip on each side's nodes (tc netem); cut: DROP both ways (iptables)."""
        if rtt_ms is not None:
            self.set_delay(a, b, rtt_ms / 2)
            self.set_delay(b, a, rtt_ms / 2)
            self._changed.add((a, b))
        if cut is True:
            self.partition(a, b)
            self._cut.add((a, b))
        elif cut is False:
            self.heal(a, b)
            self._cut.discard((a, b))

    def reset(self) -> None:
        """Every link healed and back at the topology's round trip, every east-west gateway up."""
        for a, b in list(self._cut):
            self.set_link(a, b, cut=False)
        baseline = self.provider.topology.link_rtt_ms
        for a, b in list(self._changed):
            self.set_link(a, b, rtt_ms=baseline)
        self._changed.clear()
        for cluster in list(self._gateways_down):
            self.set_gateway(cluster, up=True)
        for cluster in list(self._state().get(STOPPED_KEY) or {}):
            self.set_control_plane(cluster, True)
        for key in list(self._state().get(BROKEN_KEY) or []):
            primary, _, remote = str(key).partition("/")
            self.restore_remote_secret(primary, remote)

    # -- the control planes' lifecycle (lifecycle.py) --------------------------------------------------------

    def restart_control_plane(self, cluster: str) -> None:
        self._run(lifecycle.restart(self.provider.fault_context(), self._primary(cluster), self._timeout))

    def set_control_plane(self, cluster: str, up: bool) -> None:
        primary = self._primary(cluster)
        stopped = dict(self._state().get(STOPPED_KEY) or {})
        if up:
            self._run(lifecycle.start(self.provider.fault_context(), primary, self._timeout))
            stopped.pop(primary, None)
        else:
            stopped[primary] = {"deployment": "istiod", "replicas": 1}  # recorded first: down() brings it back
            self._update(**{STOPPED_KEY: stopped})
            self._run(lifecycle.stop(self.provider.fault_context(), primary, self._timeout))
        self._update(**{STOPPED_KEY: stopped})

    def control_plane_status(self, cluster: str) -> ControlPlaneStatus:
        ready, clusters = lifecycle.status_commands(self.provider.fault_context(), self._primary(cluster))
        variables = self.provider.variables()
        captured = [Command(c.argv, c.cluster, capture=name) for c, name in ((ready, "READY"), (clusters, "CLUSTERS"))]
        self._run(Step(1, "fault-status", f"Read {cluster}'s control plane", "", tuple(captured)), variables)
        rows = parse_remote_clusters(variables["CLUSTERS"], cluster)
        return ControlPlaneStatus(cluster, (variables["READY"] or "0").isdigit() and int(variables["READY"] or 0) > 0,
                                  rows)

    def rotate_remote_secret(self, cluster: str, remote: str) -> None:
        key = self._secret_key(cluster, remote)
        tokens = dict(self._state().get(TOKENS_KEY) or {})
        rotations = dict(self._state().get(ROTATIONS_KEY) or {})
        rotations[key] = int(rotations.get(key, 0)) + 1
        new = f"{lifecycle.READER}-meshconf-{cluster}-{rotations[key]}"
        self._run(lifecycle.rotate_secret(self.provider.fault_context(), cluster, remote, new, tokens.get(key)))
        tokens[key] = new
        self._update(**{TOKENS_KEY: tokens, ROTATIONS_KEY: rotations})

    def break_remote_secret(self, cluster: str, remote: str) -> None:
        key = self._secret_key(cluster, remote)
        broken = sorted({*(self._state().get(BROKEN_KEY) or []), key})
        self._update(**{BROKEN_KEY: broken})
        self._run(lifecycle.break_secret(self.provider.fault_context(), cluster, remote, self._token(key)))

    def restore_remote_secret(self, cluster: str, remote: str) -> None:
        key = self._secret_key(cluster, remote)
        self._run(lifecycle.restore_secret(self.provider.fault_context(), cluster, remote, self._token(key)))
        self._update(**{BROKEN_KEY: [k for k in self._state().get(BROKEN_KEY) or [] if k != key]})

    def migrate_root(self, step: RootStep, namespaces: Sequence[str]) -> TrustRoots:
        """``cacerts`` replaced, istiod restarted, the pods of ``namespaces`` (and meshconf's smoke probes and the
        gateways) annotated; returns once every one of them serves a chain of its cluster's new intermediate."""
        assert self.provider.run_dir is not None
        ca = MeshCA.load(self.provider.run_dir / "ca")
        roots = ca.migrate(step)
        every = [*namespaces, SMOKE_NAMESPACE]
        self._run(lifecycle.migrate_root(self.provider.fault_context(), step, every, self._timeout))
        # a remote cluster's workloads are signed by its primary's istiod, with the primary's cacerts
        signers = {c.name: ca.intermediate(c.config_cluster).cert_pem for c in self.provider.topology.clusters}
        wait_for_identities(self.provider, every, signers, ca.trust_bundle, self._timeout)
        return roots

    @property
    def _timeout(self) -> float:
        return self.provider.config.timeouts.control_plane_s

    def _primary(self, cluster: str) -> str:
        found = self.provider.topology.cluster(cluster)
        if found.config_cluster != found.name:
            raise ProviderError(f"cluster {cluster} is a remote cluster: its control plane is "
                                f"{found.config_cluster}'s")
        return found.name

    def _secret_key(self, cluster: str, remote: str) -> str:
        self._primary(cluster)
        if self.provider.topology.cluster(remote).name == cluster:
            raise ProviderError(f"cluster {cluster} holds no remote secret for itself")
        return f"{cluster}/{remote}"

    def _token(self, key: str) -> str:
        return str((self._state().get(TOKENS_KEY) or {}).get(key) or lifecycle.TOKEN_SECRET)

    def _state(self) -> dict[str, Any]:
        return RunState(self.provider.run_dir).read() if self.provider.run_dir else {}

    def _update(self, **values: object) -> None:
        if self.provider.run_dir is not None:
            RunState(self.provider.run_dir).update(**values)

    def _run(self, step: Step, variables: dict[str, str] | None = None) -> None:
        assert self.provider.run_dir is not None
        log = self.provider.run_dir / "faults.log"

        def say(line: str) -> None:
            with log.open("a") as out:
                out.write(line + "\n")

        run_steps(self.provider.runner, [step], self.provider.run_dir,
                  variables if variables is not None else self.provider.variables(), say)

    def gateway_down(self, cluster: str) -> None:
        self.provider.api(cluster).scale("istio-system", EAST_WEST_GATEWAY, 0)

    def gateway_up(self, cluster: str) -> None:
        api = self.provider.api(cluster)
        api.scale("istio-system", EAST_WEST_GATEWAY, 1)
        api.wait_rollout("istio-system", EAST_WEST_GATEWAY, self.provider.probe_wait_s)

    def delete_gateway_pod(self, cluster: str) -> list[str]:
        return self.provider.api(cluster).delete_pods("istio-system", {"app": EAST_WEST_GATEWAY})

    def set_delay(self, source: str, destination: str, delay_ms: float) -> None:
        """Delay every packet ``source``'s nodes send to ``destination`` by ``delay_ms`` (one way)."""
        others = self._others(source)
        for node in self.provider.nodes(source):
            self.provider.docker(node, *links.change_delay(others, destination, delay_ms))

    def partition(self, one: str, other: str) -> None:
        """Drop traffic between two clusters, both ways, on every node of each."""
        for source, destination in ((one, other), (other, one)):
            targets = self.provider.link_targets(destination)
            for node in self.provider.nodes(source):
                for argv in links.partition(targets):
                    self.provider.docker(node, *argv)

    def heal(self, one: str, other: str) -> None:
        for source, destination in ((one, other), (other, one)):
            targets = self.provider.link_targets(destination)
            for node in self.provider.nodes(source):
                for argv in links.heal(targets):
                    self.provider.docker(node, *argv, ignore_failure=True)

    def _others(self, cluster: str) -> list[str]:
        return [name for name in self.provider.topology.cluster_names if name != cluster]
