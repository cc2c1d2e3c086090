"""An upgrade the user performs on their own clusters, between the two catalogue runs of ``meshconf upgrade``.

meshconf never upgrades clusters it does not own: the user's ``--upgrade-command`` (their helm or istioctl
upgrade, and the restarts of their own workloads) does, while ``conformance.upgrade`` measures traffic and held
connections. Without a command, and only in a terminal, meshconf waits for the user to upgrade by hand; a CI job
(no terminal) must pass the command. meshconf then restarts its own probes (``meshconf-upgrade-restart``), and
nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

from conformance.errors import EnvironmentBroken, UsageError
from conformance.upgrade import HELD_CONNECTIONS, RESTART_NAMESPACE, UPGRADE_NAMESPACE

__all__ = ["check_upgrade_command", "run_upgrade_command", "upgrade_plan_text", "wait_for_manual_upgrade"]

TO_VERSION_ENV = "MESHCONF_UPGRADE_TO"
"""Set for the user's command: the ``--to`` version."""


def check_upgrade_command(command: str | None, interactive: bool) -> None:
    """UsageError when there is no way to perform the upgrade: no command, and no terminal to ask in."""
    if command is not None and not command.strip():
        raise UsageError("--upgrade-command is empty; give the shell command that upgrades your clusters")
    if command is None and not interactive:
        raise UsageError("meshconf upgrade --provider existing needs --upgrade-command 'CMD' (the command that "
                         "upgrades your clusters, e.g. your helm upgrade) when it does not run in a terminal")


def upgrade_plan_text(contexts: Mapping[str, str], topology: str, to_version: str, command: str | None,
                      revision: str | None) -> str:
    """The steps of an upgrade on the user's clusters, as printable lines; runs nothing."""
    clusters = ", ".join(f"{context} ({cluster})" for cluster, context in contexts.items())
    upgrade = (f"   $ {command}\n   (run by `sh -c` with {TO_VERSION_ENV}={to_version}; its output is streamed; "
               "a non-zero exit stops the gate with exit 3)" if command is not None else
               "   meshconf asks you to perform the upgrade now and waits for Enter (a terminal only; in CI pass "
               "--upgrade-command)")
    injection = (f"labelled istio.io/rev={revision}" if revision else "labelled istio-injection=enabled")
    lines = [
        f"meshconf upgrade plan: provider existing, topology {topology}, contexts {clusters}; "
        f"the Istio the clusters run -> {to_version}, upgraded by your command",
        "Nothing below has been run. meshconf creates only meshconf-* namespaces and deletes them at the end; "
        "nothing you own is changed except by your own command.",
        "",
        "Step 1. Attach: read each cluster's Istio version, revision and cluster ID (read-only); with --from, "
        "the clusters must run it",
        "Step 2. The catalogue runs on the installed version (out/before)",
        f"Step 3. meshconf deploys its upgrade probes in {UPGRADE_NAMESPACE} and {RESTART_NAMESPACE} (namespaces "
        f"{injection}), then holds {HELD_CONNECTIONS} connections and sends traffic between clusters",
        "Step 4. Your upgrade:",
        upgrade,
        f"   Restart your own workloads in it, as your upgrade needs; do not restart {UPGRADE_NAMESPACE} (its "
        "held connections must survive the upgrade)",
        f"Step 5. meshconf restarts its own probe deployments in {RESTART_NAMESPACE} (rolling), so they come back "
        f"with the proxies your upgrade now injects into namespaces {injection}",
        f"Step 6. The catalogue runs on {to_version} (out/after), then `meshconf gate`; meshconf deletes its "
        "meshconf-* namespaces",
        "",
    ]
    return "\n".join(lines)


def run_upgrade_command(command: str, to_version: str, say: Callable[[str], None]) -> None:
    """Run the user's command through ``sh -c``, streaming its output line by line; EnvironmentBroken (exit 3)
    when it exits non-zero. It is never killed: stopping a helm upgrade midway would leave their mesh half done."""
    say(f"$ {command}")
    with subprocess.Popen(["sh", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          stdin=subprocess.DEVNULL, env={**os.environ, TO_VERSION_ENV: to_version}) as process:
        assert process.stdout is not None
        for line in process.stdout:
            say(f"  | {line.rstrip()}")
        code = process.wait()
    if code != 0:
        raise EnvironmentBroken(f"the upgrade command exited {code}: {command} (its output is above); the mesh may "
                                "be half upgraded, and the gate stopped")


def wait_for_manual_upgrade(to_version: str, contexts: Sequence[str], ask: Callable[[str], str] = input) -> None:
    """Ask the user at the terminal to upgrade now, and wait for Enter."""
    if not sys.stdin.isatty():
        raise UsageError("meshconf upgrade --provider existing needs --upgrade-command 'CMD' when it does not run "
                         "in a terminal")
    ask(f"Upgrade Istio to {to_version} in {', '.join(contexts)} now (restart your workloads as your upgrade needs; "
        f"not {UPGRADE_NAMESPACE}); press Enter when done: ")
