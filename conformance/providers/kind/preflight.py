"""Preflight for kind: what would stop ``up()`` on this machine, found before any cluster is created.

- Everything ``meshconf doctor`` marks as needed by kind (the docker client and a reachable daemon, kind,
  kubectl, the Python packages, and whatever else doctor checks): the same findings, one line each.
- Versions: kind at least the release the node images are pinned for (``manifests.KIND_VERSION``); kubectl
  within one minor version of the clusters' Kubernetes (the Kubernetes version skew policy,
  https://kubernetes.io/releases/version-skew-policy/#kubectl); a ``--istioctl`` of exactly ``--istio-version``.
- Disk: free space where Docker keeps images and containers (``docker info``'s DockerRootDir), when that
  directory is on this machine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from conformance.config import RunConfig
from conformance.doctor import Finding, examine
from conformance.providers.kind import manifests as m
from conformance.providers.kind.settings import KindSettings
from conformance.providers.kube.istioctl import given_istioctl_problem
from conformance.topology import Topology

__all__ = ["MIN_DOCKER_FREE_GB", "preflight", "version_problems"]

MIN_DOCKER_FREE_GB = 10.0
"""An estimate, not a measurement (no Docker here): the node image (kindest/node, about 1 GB unpacked) once,
and per cluster Istio's pilot and proxyv2 images, MetalLB and python:3.12-alpine pulled into the node (about
1 GB), plus container logs; 10 GB leaves room for a three-cluster topology and `kind export logs`."""
DOCTOR = "see `meshconf doctor --provider kind`"


def preflight(config: RunConfig, topology: Topology) -> list[str]:
    """One line per problem, each saying how to fix it; empty when kind can bring the mesh up here."""
    findings = examine()
    problems = [f"{f.name} {f.version}: {f.hint}; {DOCTOR}" for f in findings
                if "kind" in f.needed_by and not f.found]
    problems += version_problems(findings, config)
    daemon = next((f for f in findings if f.name == "docker daemon"), None)
    if daemon is not None and daemon.found:
        disk = _docker_disk()
        if disk:
            problems.append(disk)
    return problems


def version_problems(findings: Sequence[Finding], config: RunConfig) -> list[str]:
    """kind, kubectl and --istioctl versions against what the install needs."""
    problems = []
    found = {f.name: f for f in findings if f.found}
    if "kind" in found:
        kind, minimum = _semver(found["kind"].version), _semver(m.KIND_VERSION)
        if kind is not None and minimum is not None and kind < minimum:
            problems.append(f"{found['kind'].version.split(' go')[0]} is older than {m.KIND_VERSION}, which the pinned "
                            f"node images are built for; install kind {m.KIND_VERSION}: "
                            "https://kind.sigs.k8s.io/docs/user/quick-start/#installation")
    if "kubectl" in found:
        kubectl = _semver(found["kubectl"].version)
        image = config.settings_as(KindSettings).kind_node_image or m.NODE_IMAGES[m.DEFAULT_KUBERNETES]
        server = _semver(image.partition(":")[2])
        if kubectl is not None and server is not None and abs(kubectl[1] - server[1]) > 1:
            problems.append(f"kubectl {found['kubectl'].version} is more than one minor version away from the "
                            f"clusters' Kubernetes {server[0]}.{server[1]} (kubectl's version skew policy allows one); "
                            f"install kubectl {server[0]}.{server[1]}")
    settings = config.settings_as(KindSettings)
    istioctl = given_istioctl_problem(settings.istioctl, settings.istio_version)
    return [*problems, istioctl] if istioctl else problems


def _semver(text: str) -> tuple[int, int, int] | None:
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def _docker_disk() -> str | None:
    try:
        done = subprocess.run(["docker", "info", "--format", "{{.DockerRootDir}}"], capture_output=True, text=True,
                              timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    root = Path(done.stdout.strip() or "/nonexistent")
    if done.returncode != 0 or not root.is_absolute() or not root.is_dir():
        return None  # a remote daemon (DOCKER_HOST), or not readable here: nothing to measure
    free_gb = shutil.disk_usage(root).free / 1e9
    if free_gb < MIN_DOCKER_FREE_GB:
        return (f"only {free_gb:.1f} GB free where Docker keeps images ({root}); kind clusters with Istio need about "
                f"{MIN_DOCKER_FREE_GB:.0f} GB: free some space (e.g. `docker system prune`)")
    return None
