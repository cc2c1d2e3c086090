"""Steps, commands and manifests: an install plan as data, and how it prints (kind and k3s share it).

A :class:`Step` is one numbered stage of the install (Istio's guide order). It writes its manifests into the
run directory, then runs its commands: exact argv, each for one cluster, optionally capturing stdout into a
variable (``${CLUSTER1_API_IP}``) that later argv use, piping into a second command, retrying, or polling
until its output passes a named check. A command may run inside a node container instead of on the host
(``container``: k3s runs those through the Docker API); it prints as the ``docker exec`` that does the same.
Printing a plan shows all of it; a Secret's data is never shown, only ``<redacted: N bytes>``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Command", "Manifest", "Step", "Until", "redacted", "render_argv", "render_plan"]

_VARIABLE = re.compile(r"\$\{[A-Z0-9_]+\}|\$RUN")


@dataclass(frozen=True)
class Manifest:
    """YAML documents written to ``path`` (relative to the run directory) before the step's commands run."""

    path: str
    docs: tuple[Mapping[str, Any], ...]
    sensitive: bool = False
    """Holds key material: written 0600, its data never printed."""
    elide: Mapping[str, str] = field(default_factory=dict)
    """ConfigMap data keys printed as a placeholder (e.g. probe.py: its source is not worth printing)."""
    location: str | None = None
    """Where the file lives if not in the run directory (e.g. a shipped kind config)."""

    @property
    def shown_path(self) -> str:
        return self.location or f"$RUN/{self.path}"

    def text(self) -> str:
        """The real file content."""
        return yaml.safe_dump_all([dict(d) for d in self.docs], sort_keys=False)


@dataclass(frozen=True)
class Until:
    """A check on a command's output (``runner.OUTPUT_CHECKS[check]``) with the values it needs."""

    check: str
    args: tuple[str, ...] = ()

    def __str__(self) -> str:
        listed = ", ".join(self.args)
        return {"synced": f"it lists {listed} as synced",
                "nodes": f"it lists exactly the nodes {listed}"}.get(self.check, self.check)


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    cluster: str | None = None
    capture: str | None = None
    """Store stripped stdout in this variable for later commands (``${NAME}``)."""
    pipe_to: tuple[str, ...] | None = None
    """Feed stdout into this argv instead of keeping it (the output is never logged)."""
    attempts: int = 1
    before_retry: tuple[str, ...] | None = None
    until: Until | None = None
    """Poll (every 5 s, ``attempts`` times) until the output passes this check."""
    ignore_failure: bool = False
    skip_if: tuple[str, ...] | None = None
    """Not run when this command succeeds (e.g. ``docker image inspect``: the host has the image already)."""
    hint: str | None = None
    """How to fix a failure: appended to the error."""
    container: str | None = None
    """Run ``argv`` inside this node container (through the Docker API), not on the host."""
    api: str | None = None
    """Not a process: the provider makes this Docker API call itself (k3s, through testcontainers); ``argv`` is
    the docker CLI line that does the same, printed with this note."""

    def render(self) -> str:
        text = render_argv(("docker", "exec", self.container, *self.argv) if self.container else self.argv)
        if self.pipe_to:
            text += " | " + render_argv(self.pipe_to)
        return text


@dataclass(frozen=True)
class Step:
    number: int
    key: str
    """Stable name for tests and resuming: clusters, kubeconfig, load-balancers, routes, ca, install, ..."""
    title: str
    why: str
    commands: tuple[Command, ...] = ()
    manifests: tuple[Manifest, ...] = ()
    parallel: bool = False
    """Clusters' command sequences run side by side."""


def render_argv(argv: Sequence[str]) -> str:
    """Shell-quoted argv; ``$RUN`` and ``${VARS}`` stay visible as the values filled in at run time."""
    return " ".join(_quote(a) for a in argv)


def _quote(arg: str) -> str:
    if _VARIABLE.search(arg) and not re.search(r"[\s'\"\\`]", arg):
        return arg
    return shlex.quote(arg)


def redacted(doc: Mapping[str, Any], elide: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A copy of ``doc`` safe to print: Secret data as ``<redacted: N bytes>``, elided ConfigMap keys replaced."""
    shown = dict(doc)
    if doc.get("kind") == "Secret":
        for key in ("data", "stringData"):
            if isinstance(doc.get(key), Mapping):
                shown[key] = {name: f"<redacted: {_size(key, value)} bytes>" for name, value in doc[key].items()}
    if elide and isinstance(doc.get("data"), Mapping):
        shown["data"] = {name: elide.get(name, value) for name, value in doc["data"].items()}
    return shown


def _size(key: str, value: Any) -> int:
    import base64
    import binascii

    if key == "data":
        try:
            return len(base64.b64decode(str(value), validate=True))
        except (binascii.Error, ValueError):
            return len(str(value))
    return len(str(value).encode())


def render_plan(header: Sequence[str], steps: Sequence[Step], show_manifests: bool = True,
                verification: Mapping[str, tuple[str, str]] | None = None) -> str:
    """The plan as text; ``verification`` (step key -> what is verified here, what is not) adds a footer to
    every step."""
    lines = list(header)
    for step in steps:
        lines += ["", f"Step {step.number}. {step.title}" + ("  [clusters in parallel]" if step.parallel else ""),
                  f"  # {step.why}"]
        for manifest in step.manifests:
            lines.append(f"  write {manifest.shown_path}" + ("  (0600, key material)" if manifest.sensitive else ""))
        for command in step.commands:
            notes = []
            if command.attempts > 1:
                notes.append(f"{'polled' if command.until else 'tried'} up to {command.attempts} times")
            if command.until:
                notes.append(f"until {command.until}")
            if command.capture:
                notes.append(f"output -> ${{{command.capture}}}")
            if command.before_retry:
                notes.append(f"before a retry: `{render_argv(command.before_retry)}`")
            if command.skip_if:
                notes.append(f"skipped if `{render_argv(command.skip_if)}` succeeds")
            if command.ignore_failure:
                notes.append("a failure is ignored")
            if command.api:
                notes.append(command.api)
            suffix = f"    # {'; '.join(notes)}" if notes else ""
            lines.append(f"  $ {command.render()}{suffix}")
        if not step.commands:
            lines.append("  (nothing to run for this topology)")
        if show_manifests:
            for manifest in step.manifests:
                lines += ["", f"  --- {manifest.shown_path}"]
                text = yaml.safe_dump_all([redacted(d, manifest.elide) for d in manifest.docs], sort_keys=False)
                lines += ["    " + line for line in text.rstrip().splitlines()]
        if verification is not None:
            verified, not_verified = verification[step.key]
            lines += ["", f"  verified here: {verified}", f"  not verified here: {not_verified}"]
    return "\n".join(lines) + "\n"


def manifest_file(run_dir: Path, manifest: Manifest) -> Path:
    return Path(manifest.location) if manifest.location else run_dir / manifest.path
