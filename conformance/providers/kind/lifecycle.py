"""The control-plane and trust faults on kind, as printed and run steps (``meshconf plan`` shows them after the
bring-up; the lifecycle checks run them through the same runner):

- restart: ``kubectl rollout restart deployment/istiod``, its rollout, then ``istioctl remote-clusters`` until every
  cluster is synced again;
- stop / start: istiod scaled to 0 (its pods gone) and back to 1 (its rollout, every cluster synced);
- status: istiod's ready replicas and ``istioctl remote-clusters``;
- rotate a remote secret: a new token Secret for ``istio-reader-service-account`` in the remote cluster,
  ``istioctl create-remote-secret --secret-name=<it>`` piped into ``kubectl apply`` in the primary, then the token of
  the previous rotation deleted (the install's own token stays: the other primaries' secrets hold it);
- break one: ``istioctl create-remote-secret --server=https://255.255.255.255:6443`` (TestBadRemoteSecret's
  unreachable server); restore: the same with the API server's address on the kind network;
- a root migration step: ``cacerts`` replaced in every cluster (``conformance.certs.MeshCA.migrate``), istiod
  restarted in every primary, then every injected pod of the given namespaces and every gateway pod annotated, as
  Istio's cacert_rotation test does (tests/integration/security/cacert_rotation ``updateTimestampAnnotations``): the
  kubelet refreshes their ``istio-ca-root-cert`` mount and istio-agent re-signs its certificate with the new
  intermediate; the provider then waits until every proxy serves it (``kube/lifecycle.wait_for_identities``).
  The pods are not replaced: the checks' continuous traffic comes from them.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conformance.certs import MeshCA, RootStep
from conformance.meshconfig import ISTIO_NAMESPACE
from conformance.providers.kind import manifests as m
from conformance.providers.kind.plan import SMOKE_NAMESPACE, PlanContext, variable
from conformance.providers.kind.steps import Command, Manifest, Step, Until
from conformance.topology import Role

__all__ = ["READER", "TOKEN_SECRET", "UNREACHABLE_SERVER", "break_secret", "fault_steps", "migrate_root", "restart",
           "restore_secret", "rotate_secret", "start", "status_commands", "stop"]

READER = "istio-reader-service-account"
TOKEN_SECRET = f"{READER}-istio-remote-secret-token"
"""The token Secret ``istioctl create-remote-secret`` creates for the reader (remote_secret.go ``tokenSecretName``)."""
UNREACHABLE_SERVER = "https://255.255.255.255:6443"
"""tests/integration/pilot/multicluster_test.go ``TestBadRemoteSecret``'s unreachable ``--server``."""
GATEWAY_PODS = "app in (istio-ingressgateway,istio-eastwestgateway)"


def _wait_synced(ctx: PlanContext, cluster: str) -> Command:
    return Command(ctx.istioctl_cmd(cluster, "remote-clusters"), cluster=cluster, attempts=60,
                   until=Until("synced", ctx.topology.cluster_names))


def _rollout(ctx: PlanContext, cluster: str, timeout_s: float) -> Command:
    return Command(ctx.kubectl(cluster, "-n", ISTIO_NAMESPACE, "rollout", "status", "deployment/istiod",
                               f"--timeout={timeout_s:.0f}s"), cluster=cluster)


def restart(ctx: PlanContext, cluster: str, timeout_s: float) -> Step:
    return Step(1, "fault-restart", f"Restart {cluster}'s control plane",
                "a new istiod serves proxies once its caches, remote clusters included, have synced",
                (Command(ctx.kubectl(cluster, "-n", ISTIO_NAMESPACE, "rollout", "restart", "deployment/istiod"),
                         cluster=cluster),
                 _rollout(ctx, cluster, timeout_s), _wait_synced(ctx, cluster)))


def stop(ctx: PlanContext, cluster: str, timeout_s: float) -> Step:
    return Step(1, "fault-stop", f"Stop {cluster}'s control plane", "istiod scaled to 0; its proxies keep their config",
                (Command(ctx.kubectl(cluster, "-n", ISTIO_NAMESPACE, "scale", "deployment/istiod", "--replicas=0"),
                         cluster=cluster),
                 Command(ctx.kubectl(cluster, "-n", ISTIO_NAMESPACE, "wait", "--for=delete", "pod", "-l", "app=istiod",
                                     f"--timeout={timeout_s:.0f}s"), cluster=cluster)))


def start(ctx: PlanContext, cluster: str, timeout_s: float) -> Step:
    return Step(1, "fault-start", f"Start {cluster}'s control plane again", "istiod back to one replica",
                (Command(ctx.kubectl(cluster, "-n", ISTIO_NAMESPACE, "scale", "deployment/istiod", "--replicas=1"),
                         cluster=cluster),
                 _rollout(ctx, cluster, timeout_s), _wait_synced(ctx, cluster)))


def status_commands(ctx: PlanContext, cluster: str) -> tuple[Command, Command]:
    """istiod's ready replicas, and its remote clusters."""
    return (Command(ctx.kubectl(cluster, "-n", ISTIO_NAMESPACE, "get", "deployment/istiod", "-o",
                                "jsonpath={.status.readyReplicas}"), cluster=cluster),
            Command(ctx.istioctl_cmd(cluster, "remote-clusters"), cluster=cluster))


def _create_secret(ctx: PlanContext, primary: str, remote: str, token_secret: str, server: str) -> Command:
    return Command(ctx.istioctl_cmd(remote, "create-remote-secret", f"--name={remote}",
                                    f"--secret-name={token_secret}", f"--server={server}"),
                   cluster=primary, pipe_to=ctx.kubectl(primary, "apply", "-f", "-"))


def token_secret(name: str) -> dict[str, Any]:
    """A new service-account token for the reader (Kubernetes fills ``data.token``)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": name, "namespace": ISTIO_NAMESPACE,
                         "annotations": {"kubernetes.io/service-account.name": READER},
                         "labels": {"app.kubernetes.io/managed-by": "meshconf"}}}


def rotate_secret(ctx: PlanContext, primary: str, remote: str, new_token: str, old_token: str | None) -> Step:
    manifest = Manifest(f"faults/{remote}/{new_token}.yaml", (token_secret(new_token),))
    commands = [Command(ctx.kubectl(remote, "apply", "-f", manifest.shown_path), cluster=remote),
                _create_secret(ctx, primary, remote, new_token, f"https://${{{variable(remote)}}}:6443")]
    if old_token is not None and old_token != TOKEN_SECRET:
        commands.append(Command(ctx.kubectl(remote, "-n", ISTIO_NAMESPACE, "delete", "secret", old_token,
                                            "--ignore-not-found"), cluster=remote))
    return Step(1, "fault-rotate-secret", f"Rotate {primary}'s remote secret for {remote}",
                "a new token, the secret written again with it, the previous rotation's token deleted",
                tuple(commands), (manifest,))


def break_secret(ctx: PlanContext, primary: str, remote: str, token: str) -> Step:
    return Step(1, "fault-break-secret", f"Break {primary}'s remote secret for {remote}",
                "the same credential, an API server address that answers nothing",
                (_create_secret(ctx, primary, remote, token, UNREACHABLE_SERVER),))


def restore_secret(ctx: PlanContext, primary: str, remote: str, token: str) -> Step:
    return Step(1, "fault-restore-secret", f"Restore {primary}'s remote secret for {remote}",
                "the secret as the install wrote it", (_create_secret(ctx, primary, remote, token,
                                                                      f"https://${{{variable(remote)}}}:6443"),))


def migrate_root(ctx: PlanContext, step: RootStep, namespaces: Sequence[str], timeout_s: float) -> Step:
    """One root migration step; ``ctx.ca`` must have taken it already (``MeshCA.migrate``)."""
    commands, manifests = [], []
    for cluster in ctx.topology.clusters:
        secret = Manifest(f"faults/root-{step}/{cluster.name}/cacerts.yaml",
                          (m.cacerts_secret(ctx.ca.intermediate(cluster.name)),), sensitive=True)
        manifests.append(secret)
        commands.append(Command(ctx.kubectl(cluster.name, "apply", "-f", secret.shown_path), cluster=cluster.name))
    for cluster in ctx.topology.clusters:
        if cluster.role is Role.PRIMARY:
            commands += [Command(ctx.kubectl(cluster.name, "-n", ISTIO_NAMESPACE, "rollout", "restart",
                                             "deployment/istiod"), cluster=cluster.name),
                         _rollout(ctx, cluster.name, timeout_s)]
    stamp = f"meshconf.io/root-migration={step}"
    for cluster in ctx.topology.clusters:
        for namespace in namespaces:
            commands.append(Command(ctx.kubectl(cluster.name, "-n", namespace, "annotate", "pods", "--all", stamp,
                                                "--overwrite"), cluster=cluster.name))
        commands.append(Command(ctx.kubectl(cluster.name, "-n", ISTIO_NAMESPACE, "annotate", "pods", "-l",
                                            GATEWAY_PODS, stamp, "--overwrite"), cluster=cluster.name))
    return Step(1, "fault-root", f"Root migration, step {step}",
                "cacerts replaced, istiod restarted, pods annotated so istio-agent re-signs its certificate; then "
                "every proxy of the namespaces and every gateway must serve a chain of the new intermediate",
                tuple(commands), tuple(manifests))


def fault_steps(ctx: PlanContext, timeout_s: float) -> list[Step]:
    """What the lifecycle checks run, for the plan: on the first primary and the last other cluster. The root
    migration is rehearsed on a copy of ``ctx.ca``, which stays as it is."""
    with tempfile.TemporaryDirectory(prefix="meshconf-plan-ca-") as scratch:
        shutil.copytree(ctx.ca.directory, Path(scratch) / "ca")
        return _fault_steps(dataclasses.replace(ctx, ca=MeshCA.load(Path(scratch) / "ca")), timeout_s)


def _fault_steps(ctx: PlanContext, timeout_s: float) -> list[Step]:
    primary = ctx.topology.primaries[0].name
    others = [c for c in ctx.topology.cluster_names if c != primary]
    steps = [restart(ctx, primary, timeout_s), stop(ctx, primary, timeout_s), start(ctx, primary, timeout_s)]
    ready, clusters = status_commands(ctx, primary)
    steps.append(Step(1, "fault-status", f"Read {primary}'s control plane", "ready replicas, remote clusters",
                      (ready, clusters)))
    if others:
        remote = others[-1]
        steps += [rotate_secret(ctx, primary, remote, f"{READER}-meshconf-{primary}-1", TOKEN_SECRET),
                  break_secret(ctx, primary, remote, TOKEN_SECRET), restore_secret(ctx, primary, remote, TOKEN_SECRET)]
    for step in RootStep:
        ctx.ca.migrate(step)
        steps.append(migrate_root(ctx, step, ["<check namespace>", SMOKE_NAMESPACE], timeout_s))
    return [Step(n, s.key, s.title, s.why, s.commands, s.manifests, s.parallel) for n, s in enumerate(steps, 1)]
