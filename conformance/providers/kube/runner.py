"""The command seam: every external tool an installing provider (kind, k3s) runs goes through a Runner.

:class:`SubprocessRunner` executes argv (never through a shell); :class:`Recorder` records argv and answers
from a script, so tests check the exact commands without Docker. A command meant for a node container goes
to :meth:`Runner.exec_in`, which only a runner that holds the containers implements (k3s's).
:func:`run_steps` executes a plan's steps in order (a parallel step runs each cluster's commands in its own
thread), writing manifests first.
Output of a piped command (``istioctl create-remote-secret | kubectl apply -f -``) is never logged: it is a
kubeconfig with credentials.
"""

from __future__ import annotations

import abc
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from conformance.certs import write_private
from conformance.errors import EnvironmentBroken, ProviderError, TimeoutExpired
from conformance.providers.kube.steps import Command, Step, manifest_file, render_argv

__all__ = ["OUTPUT_CHECKS", "Recorder", "Result", "Runner", "SubprocessRunner", "run_command", "run_steps"]


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


class Runner(abc.ABC):
    """Runs one argv. Subclasses: SubprocessRunner (real), Recorder (tests)."""

    @abc.abstractmethod
    def run(self, argv: Sequence[str], stdin: str | None = None, timeout_s: float = 600.0) -> Result:
        """Run ``argv`` and return what it printed and its exit code."""

    def exec_in(self, container: str, argv: Sequence[str], timeout_s: float = 600.0) -> Result:
        """Run ``argv`` inside a node container. Raises ProviderError: this runner has no containers."""
        raise ProviderError(f"internal: {type(self).__name__} cannot run commands in container {container}")


class SubprocessRunner(Runner):
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = {**os.environ, **(env or {})}

    def run(self, argv: Sequence[str], stdin: str | None = None, timeout_s: float = 600.0) -> Result:
        try:
            done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout_s,
                                  env=self.env, check=False)
        except FileNotFoundError:
            raise EnvironmentBroken(f"{argv[0]} is not installed or not on PATH (run `meshconf doctor`)") from None
        except subprocess.TimeoutExpired:
            raise TimeoutExpired(f"{render_argv(argv)} did not finish within {timeout_s:.0f}s") from None
        return Result(done.returncode, done.stdout, done.stderr)


@dataclass
class Recorder(Runner):
    """Records every argv and answers from a script.

    ``answers`` maps a regex on the rendered command to what to give back: stdout (exit 0), a Result, or a list
    of those handed out in turn (the last one repeats). The first pattern that matches answers; anything else
    gets exit 0 and no output.
    """

    answers: Mapping[str, str | Result | list[str | Result]] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    stdins: list[str | None] = field(default_factory=list)
    _turns: dict[str, int] = field(default_factory=dict)

    def run(self, argv: Sequence[str], stdin: str | None = None, timeout_s: float = 600.0) -> Result:
        self.calls.append(tuple(argv))
        self.stdins.append(stdin)
        text = render_argv(argv)
        for pattern, answer in self.answers.items():
            if re.search(pattern, text):
                if isinstance(answer, list):
                    turn = self._turns.get(pattern, 0)
                    self._turns[pattern] = turn + 1
                    answer = answer[min(turn, len(answer) - 1)]
                return answer if isinstance(answer, Result) else Result(0, answer, "")
        return Result(0, "", "")

    def exec_in(self, container: str, argv: Sequence[str], timeout_s: float = 600.0) -> Result:
        """Recorded and answered as ``docker exec <container> <argv>``."""
        return self.run(("docker", "exec", container, *argv), timeout_s=timeout_s)

    def rendered(self) -> list[str]:
        return [render_argv(c) for c in self.calls]


def _synced(output: str, clusters: Sequence[str]) -> bool:
    """``istioctl remote-clusters`` (istioctl/pkg/proxyconfig/clusters.go) prints ``NAME SECRET STATUS ISTIOD``,
    one row per cluster each istiod knows; the local cluster has no secret, and remote clusters appear only
    once istiod has read their secrets. So every expected cluster needs a row of its own that says synced;
    rows of clusters that are still syncing, or a table with only the local cluster, do not pass."""
    rows = [line.split() for line in output.strip().splitlines()[1:] if line.strip()]
    synced = {row[0] for row in rows if "synced" in row[1:]}
    pending = {row[0] for row in rows if "synced" not in row[1:]}
    return all(name in synced and name not in pending for name in clusters)


def _nodes(output: str, nodes: Sequence[str]) -> bool:
    """``kind get nodes --name <cluster>`` prints one node name a line."""
    return sorted(line.strip() for line in output.splitlines() if line.strip()) == sorted(nodes)


OUTPUT_CHECKS: dict[str, Callable[[str, Sequence[str]], bool]] = {
    "synced": _synced,
    "nodes": _nodes,
}


def _substitute(argv: Iterable[str], variables: Mapping[str, str], run_dir: Path) -> list[str]:
    def one(arg: str) -> str:
        arg = arg.replace("$RUN", str(run_dir))
        for name in re.findall(r"\$\{([A-Z0-9_]+)\}", arg):
            if name not in variables:
                raise ProviderError(f"internal: ${{{name}}} is used before a command captured it")
            arg = arg.replace(f"${{{name}}}", variables[name])
        return arg
    return [one(a) for a in argv]


def run_command(runner: Runner, command: Command, variables: dict[str, str], run_dir: Path,
                say: Callable[[str], None], poll_interval_s: float = 5.0) -> None:
    """Run one command (with its pipe, capture, retries and polling); raise ProviderError on failure."""
    if command.api:
        raise ProviderError(f"internal: `{command.render()}` is a Docker API call the provider makes, not a command")
    argv = _substitute(command.argv, variables, run_dir)
    if command.skip_if and runner.run(_substitute(command.skip_if, variables, run_dir)).returncode == 0:
        say(f"  (skipped: `{render_argv(command.skip_if)}` succeeded)")
        return
    last = Result(0, "", "")
    for attempt in range(1, command.attempts + 1):
        say(f"  $ {command.render()}" + (f"  (attempt {attempt})" if attempt > 1 else ""))
        last = runner.exec_in(command.container, argv) if command.container else runner.run(argv)
        if command.pipe_to and last.returncode == 0:
            piped = runner.run(_substitute(command.pipe_to, variables, run_dir), stdin=last.stdout)
            last = Result(piped.returncode, piped.stdout, piped.stderr)  # the secret never leaves this frame
        ok = last.returncode == 0 and (command.until is None
                                       or OUTPUT_CHECKS[command.until.check](last.stdout, command.until.args))
        if ok:
            if command.capture:
                variables[command.capture] = last.stdout.strip()
            return
        if attempt < command.attempts:
            if command.before_retry:
                runner.run(_substitute(command.before_retry, variables, run_dir))
            time.sleep(poll_interval_s if command.until else 2.0)
    if command.ignore_failure:
        return
    reason = (last.stderr or last.stdout).strip().splitlines()[-1:] or [f"exit {last.returncode}"]
    what = f"output did not show that {command.until}" if command.until and last.returncode == 0 else reason[0][:300]
    hint = f"; {command.hint}" if command.hint else ""
    raise ProviderError(f"`{command.render()}` failed after {command.attempts} attempt(s): {what}{hint}")


def run_steps(runner: Runner, steps: Sequence[Step], run_dir: Path, variables: dict[str, str],
              say: Callable[[str], None], poll_interval_s: float = 5.0) -> None:
    """Execute ``steps`` in order: write each step's manifests, then run its commands."""
    for step in steps:
        say(f"step {step.number}: {step.title}")
        for manifest in step.manifests:
            if manifest.location:
                continue  # a shipped file, used as it is
            path = manifest_file(run_dir, manifest)
            if manifest.sensitive:
                write_private(path, manifest.text().encode())
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(manifest.text())
        if step.parallel:
            by_cluster: dict[str | None, list[Command]] = {}
            for command in step.commands:
                by_cluster.setdefault(command.cluster, []).append(command)

            def sequence(commands: list[Command]) -> None:
                for command in commands:
                    run_command(runner, command, variables, run_dir, say, poll_interval_s)

            with ThreadPoolExecutor(max_workers=max(1, len(by_cluster))) as pool:
                for future in [pool.submit(sequence, cmds) for cmds in by_cluster.values()]:
                    future.result()
        else:
            for command in step.commands:
                run_command(runner, command, variables, run_dir, say, poll_interval_s)
