"""istioctl for ``--istio-version``: given (``--istioctl``), on PATH at that version, or downloaded once.

A download goes into ``~/.cache/meshconf/istioctl/<version>/`` (``$XDG_CACHE_HOME`` is honoured): the release
archive ``istioctl-<version>-<os>-<arch>.tar.gz`` from Istio's GitHub release, checked against the
``.sha256`` file published beside it before anything is unpacked. A mismatch deletes the download and stops.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import httpx

from conformance.errors import EnvironmentBroken, UsageError

__all__ = ["RELEASES", "archive_name", "cache_dir", "download_istioctl", "given_istioctl_problem", "istioctl_version",
           "resolve_istioctl"]

RELEASES = "https://github.com/istio/istio/releases/download"
_VERSION = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$")


def cache_dir(version: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "meshconf" / "istioctl" / version


def archive_name(version: str, system: str | None = None, machine: str | None = None) -> str:
    """``istioctl-1.28.0-linux-amd64.tar.gz`` for this machine (or the given one)."""
    system = (system or platform.system()).lower()
    machine = (machine or platform.machine()).lower()
    os_part = {"linux": "linux", "darwin": "osx"}.get(system)
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if os_part is None or arch is None:
        raise UsageError(f"no istioctl release for {system}/{machine}; pass --istioctl PATH")
    return f"istioctl-{version}-{os_part}-{arch}.tar.gz"


def istioctl_version(binary: Path) -> str | None:
    """The client version ``istioctl version --remote=false --short`` reports, or None if it cannot run."""
    try:
        done = subprocess.run([str(binary), "version", "--remote=false", "--short"], capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.strip().splitlines()
    return text[0].strip() if done.returncode == 0 and text else None


def given_istioctl_problem(given: Path | None, version: str | None) -> str | None:
    """Why ``--istioctl`` cannot install ``--istio-version`` (it is another version, or does not run), or None."""
    if given is None or not version:
        return None
    found = istioctl_version(given)
    if found == version:
        return None
    return (f"--istioctl {given} is " + (f"istioctl {found}" if found else "not an istioctl that runs")
            + f", not --istio-version {version}; pass the matching istioctl, or leave --istioctl out to download it")


def resolve_istioctl(version: str, given: Path | None = None, base_url: str = RELEASES) -> Path:
    """The istioctl to use for ``version``: ``given``, a cached download, PATH's if it is that version, or a
    fresh verified download. Raises UsageError / EnvironmentBroken with the fix in one line."""
    if not _VERSION.match(version):
        raise UsageError(f"--istio-version {version!r} must look like 1.28.0")
    if given is not None:
        if not os.access(given, os.X_OK):
            raise UsageError(f"--istioctl {given} is not an executable file")
        return given
    cached = cache_dir(version) / "istioctl"
    if os.access(cached, os.X_OK):
        return cached
    on_path = shutil.which("istioctl")
    if on_path and istioctl_version(Path(on_path)) == version:
        return Path(on_path)
    return download_istioctl(version, base_url=base_url)


def download_istioctl(version: str, base_url: str = RELEASES, system: str | None = None,
                      machine: str | None = None, timeout_s: float = 300.0) -> Path:
    """Download, verify against the published sha256, unpack into the cache; return the binary's path."""
    name = archive_name(version, system, machine)
    url = f"{base_url}/{version}/{name}"
    try:
        with httpx.Client(follow_redirects=True, timeout=timeout_s) as http:
            published = http.get(url + ".sha256")
            published.raise_for_status()
            archive = http.get(url)
            archive.raise_for_status()
    except httpx.HTTPError as exc:
        raise EnvironmentBroken(f"cannot download {url}: {exc} (or pass --istioctl PATH)") from None
    expected = published.text.strip().split()[0].lower() if published.text.strip() else ""
    actual = hashlib.sha256(archive.content).hexdigest()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise EnvironmentBroken(f"{url}.sha256 does not hold a sha256 digest; refusing to use the download")
    if actual != expected:
        raise EnvironmentBroken(f"{name} failed its sha256 check (published {expected}, got {actual}); "
                                "nothing was installed")
    folder = cache_dir(version)
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.isfile() and Path(m.name).name == "istioctl"), None)
        if member is None:
            raise EnvironmentBroken(f"{name} holds no istioctl binary")
        source = tar.extractfile(member)
        assert source is not None
        temporary = folder / ".istioctl.tmp"
        temporary.write_bytes(source.read())
    temporary.chmod(0o755)
    os.replace(temporary, folder / "istioctl")
    (folder / f"{name}.sha256").write_text(f"{expected}  {name}\n")
    return folder / "istioctl"
