"""The meshconf pytest plugin: options, the session mesh, the ``scenario`` fixture, reports, exit codes.

The mesh is brought up once per test session, lazily, by the first test that needs it: under pytest-xdist
the first worker to get there brings it up (under a file lock) and every other worker attaches to it, as
clients of one control API. The controller (the process that started pytest) tears it down at the end
and writes the run-level reports from the results every worker sent it.

``meshconf run`` brings the mesh up itself and hands it over in the session directory
(``MESHCONF_SESSION_DIR``, holding ``meshconf-mesh.json``); it tears it down itself too.

Outcomes: an AssertionError in a check (raised by ``expect_*``) is *failed*; any other error is *broken*. A
check that did not pass while something underneath it died (a sidecar someone killed) is *broken*, naming the
dead process. When the mesh cannot come up, or is lost mid-run, that is one event: one message, recorded
once, and every check not yet run is broken with it in one line. ``meshconf run`` exits 0 (all passed),
1 (a check failed), 3 (none failed, something broke).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conformance.check import CheckInfo, check_id_for_file, check_info
from conformance.collector import RunCollector
from conformance.config import RunConfig
from conformance.errors import (
    BringUpFailed,
    CannotRun,
    ConformanceError,
    EnvironmentBroken,
    EnvironmentLost,
    PreflightFailed,
    UsageError,
)
from conformance.locks import file_lock
from conformance.preflight import check_out, preflight
from conformance.provider import Provider
from conformance.providers import (
    attach_provider,
    build_config,
    create_provider,
    read_config,
    settings_catalog,
    validate_provider,
)
from conformance.redact import redact_tree
from conformance.report.allure import label_check
from conformance.report.model import Status
from conformance.scenario import Scenario
from conformance.session import (
    SESSION_DIR_ENV,
    SHARED,
    bring_up_failure,
    lost_reason,
    record_lost,
    session_mesh,
    shared_dir,
)
from conformance.topology import load_topology

__all__ = ["scenario"]

_CONFIG = pytest.StashKey[RunConfig]()
_ONE_LINE = (PreflightFailed, BringUpFailed, EnvironmentLost)
"""Errors that are the same for every check they stop: shown as one line, never as a traceback."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """Every setting's pytest twin: its ``meshconf`` flag with a ``--mesh-`` prefix (``--istio-version`` ->
    ``--mesh-istio-version``), generated from the same declarations as the CLI (``conformance.settings``)."""
    group = parser.getgroup("meshconf", "meshconf: the mesh under test")
    for declared in settings_catalog():
        group.addoption(declared.pytest_option, **declared.parser_arguments())
    group.addoption("--mesh-attach", default=None, help="use a mesh started by `meshconf up` (its run directory)")
    group.addoption("--mesh-config-file", default=None, metavar="PATH",
                    help="the config `meshconf run` built (its session's meshconf-config.json), instead of the "
                         "options above")


def pytest_configure(config: pytest.Config) -> None:
    # the markers @check sets, also for suites outside this repository (no pyproject.toml of ours there)
    config.addinivalue_line("markers", "check: a conformance check (set by @check)")
    config.addinivalue_line("markers", "serial: a check that never runs beside another one")
    try:
        run_config = _run_config(config)
    except ConformanceError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_CONFIG] = run_config
    if not hasattr(config, "workerinput"):
        given = os.environ.get(SESSION_DIR_ENV)
        config.stash[SHARED] = Path(given) if given else Path(tempfile.mkdtemp(prefix="meshconf-session-"))
        config.pluginmanager.register(RunCollector(config, run_config, owns_shared=not given),
                                      "meshconf-run-collector")
        _stop_on_sigterm()


def _run_config(config: pytest.Config) -> RunConfig:
    """The config ``meshconf run`` built and handed over as a file (read as it was, not built again), or, for a
    plain ``pytest suites --mesh-...``, built here from the options. xdist workers get the same options, so
    they read the same file (or build the same config)."""
    given = {d: config.getoption(d.dest) for d in settings_catalog()}
    file = config.getoption("--mesh-config-file")
    if file:
        extra = [d.pytest_option for d, value in given.items() if value is not None]
        if extra:
            raise UsageError(f"{extra[0]} cannot be combined with --mesh-config-file (the file holds every "
                             "setting); drop one of them")
        return read_config(Path(file))
    run_config = build_config(**{d.keyword: value for d, value in given.items()})
    validate_provider(run_config, load_topology(run_config.topology))
    return run_config


def _stop_on_sigterm() -> None:
    """SIGTERM (CI cancelling a job, ``timeout``) stops the session like Ctrl-C does: the running check is
    interrupted, the reports of those that finished are written, the mesh is torn down. Only where nobody
    else handles SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def interrupt(signum: int, _frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")

    signal.signal(signal.SIGTERM, interrupt)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    seen: dict[str, str] = {}
    for item in items:
        info = check_info(item)
        if info is None:
            continue
        expected = check_id_for_file(item.path.name)
        if info.id != expected:
            raise pytest.UsageError(f"{item.path}: check id {info.id!r} must match its file name ({expected!r})")
        other = seen.setdefault(info.id, str(item.path))
        if other != str(item.path):
            raise pytest.UsageError(f"check id {info.id} is declared twice: {other} and {item.path}")


# -- the session mesh ------------------------------------------------------------------------------------


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: tell each worker where the session's shared directory is."""
    node.workerinput["meshconf_shared"] = str(shared_dir(node.config))


def _controller_pid(config: pytest.Config) -> int:
    return os.getppid() if hasattr(config, "workerinput") else os.getpid()


@pytest.fixture(scope="session")
def mesh(pytestconfig: pytest.Config) -> Provider:
    """The mesh under test, up for the whole session: the one ``meshconf run`` (or ``--mesh-attach``) names,
    or brought up here on first use."""
    run_config = pytestconfig.stash[_CONFIG]
    topology = load_topology(run_config.topology)
    attach = pytestconfig.getoption("--mesh-attach")
    shared = shared_dir(pytestconfig)
    pointer = shared / "meshconf-mesh.json"
    with file_lock(shared / "meshconf-mesh.lock"):
        if pointer.exists():
            data = json.loads(pointer.read_text())
            if data.get("error"):
                raise BringUpFailed(data["error"])
            return attach_provider(run_config, topology, Path(data["run_dir"]))
        if attach:
            try:
                provider = attach_provider(run_config, topology, Path(attach))
            except ConformanceError as exc:
                pointer.write_text(json.dumps({"error": str(exc)}))
                raise BringUpFailed(str(exc)) from None
            pointer.write_text(json.dumps({"run_dir": attach, "description": _describe(provider), "owner": "attach"}))
            return provider
        try:
            check_out(run_config.out)
            preflight(run_config, topology)
            provider = create_provider(run_config, topology)
            # a kept mesh must outlive this session; otherwise it stops when the session's process does
            owner = None if run_config.keep else _controller_pid(pytestconfig)
            provider.up(owner_pid=owner, progress=_progress(pytestconfig))
        except ConformanceError as exc:
            message = bring_up_failure(exc, run_config.out)
            pointer.write_text(json.dumps({"error": message}))
            raise BringUpFailed(message) from None
        run_dir = provider.run_dir
        pointer.write_text(json.dumps({"run_dir": str(run_dir), "description": _describe(provider)}))
        return provider


def _progress(config: pytest.Config) -> Any:
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def say(message: str) -> None:
        if reporter is not None:
            reporter.write_line(message)
        else:  # an xdist worker: its stdout is captured, stderr reaches the terminal
            print(message, file=sys.stderr, flush=True)

    return say


def _describe(provider: Provider) -> dict[str, Any]:
    return provider.describe().as_dict()


# -- a check -------------------------------------------------------------------------------------------------


@pytest.fixture
def scenario(request: pytest.FixtureRequest, mesh: Provider) -> Generator[Scenario, None, None]:
    """The check's own namespace, probes and config, removed when the check ends."""
    info = check_info(request.node)
    if info is None:
        raise EnvironmentBroken(f"{request.node.nodeid} uses `scenario` but is not declared with @check(...)")
    lost = lost_reason(request.config)
    if lost:  # an earlier check found the environment gone: do not try again, say why at once
        raise EnvironmentLost(lost)
    missing = sorted(str(f) for f in info.features - mesh.features())
    if missing:
        pytest.skip(f"requires {', '.join(missing)}; provider {mesh.name} "
                    f"({request.config.stash[_CONFIG].topology}) lacks it")
    run_config = request.config.stash[_CONFIG]
    label_check(info, session_mesh(request.config).get("description") or _describe(mesh))
    with _serial_lock(request.config, info):
        current = Scenario(mesh, info, run_config, request.node.path.parent,
                           load_lock=shared_dir(request.config) / "meshconf-load.lock")
        request.node.stash[_SCENARIO] = current
        try:
            yield current
        finally:
            current.cleanup()


_SCENARIO = pytest.StashKey[Scenario]()


@contextmanager
def _serial_lock(config: pytest.Config, info: CheckInfo) -> Iterator[None]:
    """Serial checks run alone: they take the lock exclusively, every other check takes it shared."""
    with file_lock(shared_dir(config) / "meshconf-serial.lock", exclusive=info.serial):
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """A check that did not pass while something underneath it died is broken, not failed: ask the provider
    (its answer names the dead process and its last output), and raise that instead."""
    started = time.time()
    try:
        return (yield)
    except CannotRun as exc:
        pytest.skip(str(exc))
    except Exception as exc:
        current = item.stash.get(_SCENARIO, None)
        if current is None or isinstance(exc, _ONE_LINE):
            raise
        try:
            problems = current.mesh.environment_problems([current.namespace], since=started)
        except EnvironmentLost as lost:
            raise lost from exc
        except ConformanceError:
            problems = []  # cannot tell: the check's own outcome stands
        if problems:
            raise EnvironmentBroken("not a verdict: the environment broke underneath the check: "
                                    + "; ".join(problems)) from exc
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report: pytest.TestReport = yield
    info = check_info(item)
    if info is None:
        return report
    if call.excinfo is not None and call.excinfo.errisinstance(_ONE_LINE):
        error = call.excinfo.value
        report.longrepr = str(error)
        if isinstance(error, EnvironmentLost):
            record_lost(item.config, str(error))
    status = _status(report, call)
    report.user_properties.append(("meshconf.check", info.as_dict()))
    report.user_properties.append(("meshconf.status", status.value))  # plain str: xdist serializes only builtins
    if status is Status.FAILED and call.excinfo is not None:
        failure = call.excinfo.value
        report.user_properties.append(("meshconf.failed_on", {
            "expectation": getattr(failure, "expectation", None),
            "precondition": bool(getattr(failure, "precondition", False)),
        }))
    current = item.stash.get(_SCENARIO, None)
    if current is not None and report.when == "call":
        for measurement in current.measurements:
            report.user_properties.append(("meshconf.measurement", measurement.as_dict()))
        if status in (Status.FAILED, Status.BROKEN):
            _collect_diagnostics(item, current, info)
    return report


def _status(report: pytest.TestReport, call: pytest.CallInfo[None]) -> Status:
    if report.skipped:
        return Status.SKIPPED
    if report.passed:
        return Status.PASSED
    if report.when == "call" and call.excinfo is not None and call.excinfo.errisinstance(AssertionError):
        return Status.FAILED
    return Status.BROKEN


def _collect_diagnostics(item: pytest.Item, current: Scenario, info: CheckInfo) -> None:
    import allure

    dest = item.config.stash[_CONFIG].out / "diagnostics" / info.id
    try:
        files = collect_diagnostics(current.mesh, dest, [current.namespace])
    except (ConformanceError, OSError) as exc:
        allure.attach(f"could not collect diagnostics: {exc}", name="diagnostics",
                      attachment_type=allure.attachment_type.TEXT)
        return
    summary = next((f for f in files if f.name == "mesh.json"), None)
    if summary is not None:
        allure.attach.file(str(summary), name="diagnostics: mesh state", attachment_type=allure.attachment_type.JSON)
    allure.attach("\n".join(str(f) for f in files), name=f"diagnostics written to {dest}",
                  attachment_type=allure.attachment_type.TEXT)


def collect_diagnostics(mesh: Provider, dest: Path, namespaces: list[str]) -> list[Path]:
    """The provider's diagnostics of ``namespaces`` in ``dest``, scrubbed of secrets: logs and dumps copy text
    meshconf does not control (``conformance.redact``)."""
    files = mesh.diagnostics(dest, namespaces)
    redact_tree([dest])
    return files


# -- the controller's view of the run -----------------------------------------------------------------------



