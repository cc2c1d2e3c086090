"""One ``meshconf run``: the selected checks, preflight, the mesh brought up here, the checks run by pytest in
a child process attached to it, and the mesh torn down again, whatever happens.

Failing well is the point of doing it here rather than inside pytest:

- A mesh that cannot come up is one event: one message (what, why, where its log is), exit 3, and a
  ``conformance-report.json`` with the run's ``error`` and every selected check *broken* with that reason.
- Signals. SIGINT and SIGTERM mean the same (the exit code says which: 128 + the signal, 130 / 143):

  ==================  ==========================================================================================
  while               a signal
  ==================  ==========================================================================================
  checking, preflight stops the run; nothing was started
  bringing it up      interrupts ``up()``, which undoes what it started; the report says so
  checks running      is passed on as SIGINT to pytest's whole process group (its controller and every xdist
                      worker, as Ctrl-C in a terminal would): the running checks stop and clean up, the report
                      of those that finished is written (``run.error`` says it was interrupted); then the mesh
                      is torn down and the run directory removed. The wait is bounded (``teardown_s``).
  a second one        kills pytest's process group at once, skipping the report; the mesh is still torn down
  after the checks    is noted and ignored: the tear-down is bounded and must finish
  ==================  ==========================================================================================

  pytest runs in its own session, so a terminal's Ctrl-C reaches only this process, which decides; if this
  process is killed outright, pytest gets SIGINT (``PR_SET_PDEATHSIG``) and the mesh stops with its owner.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from conformance.config import RunConfig
from conformance.errors import (
    EXIT_ENVIRONMENT,
    EXIT_SIGNAL_BASE,
    EXIT_USAGE,
    ConformanceError,
    PreflightFailed,
    UsageError,
)
from conformance.lifetime import die_with_parent
from conformance.provider import Provider
from conformance.topology import Topology

__all__ = ["RunPlan", "collect_checks", "execute"]

_PYTEST_EXIT = {0: 0, 1: 1, 2: EXIT_ENVIRONMENT, 3: EXIT_ENVIRONMENT, 4: EXIT_USAGE, 5: EXIT_USAGE}
"""pytest's exit codes as meshconf's (2, interrupted, is a signal only when one was received here)."""


@dataclass(frozen=True)
class RunPlan:
    config: RunConfig
    topology: Topology
    selection: list[str]
    """pytest arguments that choose the checks: the suites, ``-k``, extra arguments (the mesh's settings go as
    one file, ``--mesh-config-file``: the config is built once, here)."""
    session: list[str]
    """The rest of the session's pytest arguments: reports, workers."""
    attach: Path | None = None
    """A mesh started by ``meshconf up``: used, never torn down."""


class RunInterrupted(KeyboardInterrupt):
    """A signal stopped the run before its checks started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """SIGINT / SIGTERM during a run: what each does depends on the phase (see the module's table)."""

    def __init__(self, tell: Callable[[str], None]) -> None:
        self.tell = tell
        self.first: int | None = None
        self.count = 0
        self.pytest: subprocess.Popen[bytes] | None = None
        self.tearing_down = False
        self.skipped_report = False

    @property
    def name(self) -> str:
        return signal.Signals(self.first).name if self.first is not None else ""

    @contextlib.contextmanager
    def installed(self) -> Iterator[Signals]:
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.tearing_down:  # the checks are over: nothing to stop, and the tear-down must finish
            self.tell(f"meshconf: {name}: still tearing the mesh down (bounded); it will not be left behind")
            return
        self.count += 1
        self.first = self.first or signum
        if self.pytest is not None and self.pytest.poll() is None:
            if self.count == 1:
                self.tell(f"meshconf: {name}: stopping the running checks, then writing the report of those that "
                         "finished and tearing the mesh down (signal again to skip the report)")
                _signal_group(self.pytest.pid, signal.SIGINT)
            elif not self.skipped_report:
                self.skipped_report = True
                self.tell(f"meshconf: {name} again: skipping the report; tearing the mesh down")
                _signal_group(self.pytest.pid, signal.SIGKILL)
            return
        if self.pytest is None:
            raise RunInterrupted(signum)


CONFIG_FILE = "meshconf-config.json"
"""The run's config as ``meshconf run`` built it, in the session directory: pytest (controller and xdist
workers, through ``--mesh-config-file``) reads it instead of building the config again from options."""


def execute(plan: RunPlan) -> int:
    """Run the plan; return the exit code. Raises UsageError (exit 2) for what is wrong before anything starts.

    Progress goes to stdout; meshconf's own notices and errors to stderr."""
    from conformance.providers import write_config

    shared = Path(tempfile.mkdtemp(prefix="meshconf-session-"))
    try:
        write_config(plan.config, shared / CONFIG_FILE)
        return _execute(plan, shared)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _execute(plan: RunPlan, shared: Path) -> int:
    started = time.time()
    config = plan.config
    selection = [*plan.selection, f"--mesh-config-file={shared / CONFIG_FILE}"]
    signals = Signals(tell)
    with signals.installed():
        try:
            try:
                checks = collect_checks(selection)
            finally:
                if signals.first is not None:  # pytest caught it while collecting
                    raise RunInterrupted(signals.first)
            if plan.attach is not None:
                from conformance.providers import attach_provider

                attach_provider(config, plan.topology, plan.attach)  # is it there, before pytest starts?
                return _session(plan, signals, None, shared, selection)
            from conformance.preflight import preflight

            preflight(config, plan.topology)
        except RunInterrupted as stop:
            tell(f"meshconf: {stop}: stopped before anything started")
            return EXIT_SIGNAL_BASE + stop.signum
        except PreflightFailed as exc:
            tell(f"meshconf: preflight for --provider {exc.provider} failed; nothing was started:")
            for problem in exc.problems:
                tell(f"  {problem}")
            return _not_run(plan, checks, str(exc), started)
        except UsageError:
            raise
        except ConformanceError as exc:  # e.g. the mesh to attach to is not there
            tell(f"meshconf: error: {exc}")
            return _not_run(plan, checks, str(exc), started)
        provider: Provider | None = None
        try:
            from conformance.providers import create_provider

            provider = create_provider(config, plan.topology)
            provider.up(owner_pid=None if config.keep else os.getpid(), progress=say)
            return _session(plan, signals, provider, shared, selection)
        except RunInterrupted as stop:
            tell(f"meshconf: {stop}: the mesh was still coming up; tearing down what was started")
            _not_run(plan, [], f"interrupted by {stop} while the mesh was coming up", started)
            return EXIT_SIGNAL_BASE + stop.signum
        except UsageError:
            raise
        except ConformanceError as exc:
            from conformance.session import bring_up_failure

            message = bring_up_failure(exc, config.out)
            tell(f"meshconf: error: {message}")
            return _not_run(plan, checks, message, started)
        finally:
            signals.tearing_down = True
            if provider is not None and not config.keep:
                provider.down()


def _session(plan: RunPlan, signals: Signals, provider: Provider | None, shared: Path, selection: list[str]) -> int:
    """pytest in a child process, attached to ``provider``'s mesh (or ``plan.attach``); ``shared`` is the
    session directory (the config file is in it), removed by the caller."""
    config = plan.config
    args = [*selection, *plan.session]
    if provider is not None:
        pointer = {"run_dir": str(provider.run_dir or ""), "description": provider.describe().as_dict(),
                   "owner": "meshconf run"}
        (shared / "meshconf-mesh.json").write_text(json.dumps(pointer))
    else:
        args.append(f"--mesh-attach={plan.attach}")
    env = {**os.environ, "MESHCONF_SESSION_DIR": str(shared)}
    signals.pytest = subprocess.Popen([sys.executable, "-m", "pytest", *args], env=env, start_new_session=True,
                                      preexec_fn=die_with_parent(signal.SIGINT))
    code = _wait(signals, config.timeouts.teardown_s)
    signals.tearing_down = True  # from here on a signal changes nothing: the checks are over
    if signals.first is None:
        if provider is not None and config.keep:
            run_dir = provider.run_dir
            say(f"meshconf: mesh kept: meshconf run --attach {run_dir}   (tear it down: meshconf down "
                        f"{run_dir})")
        return _PYTEST_EXIT.get(code, code)
    if not signals.skipped_report:
        from conformance.report.conformance import read_report, record_run_error, run_metadata

        written = read_report(config.out)
        said = str(written.run.get("error") or "") if written is not None else ""
        error = (f"{said.replace('interrupted', f'interrupted by {signals.name}', 1)}" if said.startswith("interrupted")
                 else f"interrupted by {signals.name} before any check finished")
        try:
            record_run_error(config.out, run_metadata(config, None, time.time()), error)
            signals.tell(f"meshconf: {error}; report in {config.out / 'conformance-report.json'}")
        except OSError as exc:
            signals.tell(f"meshconf: error: the report could not be written in {config.out}/: {exc.strerror or exc}")
    return EXIT_SIGNAL_BASE + signals.first


def _wait(signals: Signals, stop_s: float) -> int:
    """Wait for pytest; once it was told to stop, give it ``stop_s`` to finish, then kill its group."""
    child = signals.pytest
    assert child is not None
    deadline: float | None = None
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return child.wait(0.2)
        if signals.first is not None and deadline is None:
            deadline = time.monotonic() + stop_s
        if deadline is not None and time.monotonic() > deadline and not signals.skipped_report:
            signals.tell(f"meshconf: pytest did not stop within {stop_s:.0f}s; killing it (no report)")
            signals.skipped_report = True
            _signal_group(child.pid, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # start_new_session: pytest's group id is its PID


def say(line: str) -> None:
    """Progress, on stdout."""
    print(line, flush=True)


def tell(line: str) -> None:
    """meshconf's own notices and errors, on stderr."""
    print(line, file=sys.stderr, flush=True)


def _not_run(plan: RunPlan, checks: list[dict[str, Any]], reason: str, started: float) -> int:
    """The report of a run in which no check could start: every check in ``checks`` broken with ``reason``."""
    from conformance.report.conformance import not_run, run_metadata, write_reports

    out = plan.config.out
    try:
        write_reports(out, run_metadata(plan.config, None, started, reason), not_run(checks, reason))
    except OSError as exc:
        tell(f"meshconf: error: the report could not be written in {out}/: {exc.strerror or exc}")
        return EXIT_ENVIRONMENT
    if checks:
        which = "the selected check is" if len(checks) == 1 else f"all {len(checks)} selected checks are"
        tell(f"meshconf: no check ran; {which} broken with that reason in {out / 'conformance-report.json'} (and .md)")
    return EXIT_ENVIRONMENT


def collect_checks(selection: list[str]) -> list[dict[str, Any]]:
    """The checks ``selection`` chooses (pytest collects them; nothing runs), as ``CheckInfo.as_dict()`` plus
    ``nodeid``. UsageError when none is chosen or they cannot be collected."""
    import pytest

    from conformance.check import check_info

    class Grab:
        def __init__(self) -> None:
            self.checks: list[dict[str, Any]] = []

        @pytest.hookimpl(trylast=True)
        def pytest_collection_finish(self, session: pytest.Session) -> None:
            for item in session.items:
                info = check_info(item)
                if info is not None:
                    self.checks.append({**info.as_dict(), "nodeid": item.nodeid})

    grab = Grab()
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = pytest.main([*selection, "--collect-only", "-q", "-p", "no:cacheprovider"], plugins=[grab])
    text = output.getvalue()
    if code == pytest.ExitCode.NO_TESTS_COLLECTED or (code == pytest.ExitCode.OK and not grab.checks):
        chosen = next((a for a in selection[selection.index("-k") + 1:][:1]), "") if "-k" in selection else ""
        raise UsageError("no check matches" + (f" -k {chosen!r}" if chosen else "") + "; `meshconf checks` lists them")
    if code != pytest.ExitCode.OK:
        raise UsageError(f"the checks could not be collected: {_first_error(text)}")
    return grab.checks


def _first_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("E ", "ERROR:", "error:")):
            return line.removeprefix("E ").strip()
    return lines[-1] if lines else "pytest said nothing"
