"""The ``meshconf`` command.

Exit codes (every command): 0 success / every check passed; 1 a check found the mesh non-conformant;
2 usage or configuration error (nothing was started); 3 the environment broke (no verdict); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conformance.config import RunConfig
from conformance.errors import EXIT_ENVIRONMENT, EXIT_USAGE, ConformanceError, UsageError

__all__ = ["main"]

EXIT_INTERRUPTED = 130


def _suites_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "suites"


def _add_mesh_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", default=None, help="local (default), kind or existing")
    parser.add_argument("--topology", default=None,
                        help="multi-primary (default), multi-network, primary-remote, or a topology file")
    parser.add_argument("--profile", default=None, help="YAML file of settings, budgets and timeouts")
    parser.add_argument("--mesh-defect", action="append", default=[], metavar="NAME",
                        help="local provider: start the mesh with this deliberate bug (repeatable)")
    parser.add_argument("--budget", action="append", default=[], metavar="NAME=VALUE",
                        help="override a budget, e.g. in_cluster_p99_ms=12 (repeatable)")
    parser.add_argument("--timeout", action="append", default=[], metavar="NAME=VALUE",
                        help="override a timeout, e.g. consistency_s=60 (repeatable)")
    parser.add_argument("--envoy-binary", default=None, help="local provider: Envoy binary to use")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshconf",
        description="End-to-end conformance suite for Istio multi-cluster service meshes.",
        epilog="Exit codes: 0 passed, 1 non-conformant, 2 usage error, 3 environment broken, 130 interrupted.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="bring a mesh up, run the conformance checks, tear it down",
                              description="Run the conformance suites. Extra arguments after -- go to pytest.")
    _add_mesh_options(run)
    run.add_argument("--out", default="out", help="reports and diagnostics directory (default: out)")
    run.add_argument("-n", "--workers", default="0",
                     help="pytest-xdist workers (0: run in this process; checks are parallel-safe)")
    run.add_argument("-k", dest="select", default=None, help="only checks matching this pytest -k expression")
    run.add_argument("--keep", action="store_true", help="leave the mesh running afterwards (see meshconf down)")
    run.add_argument("--attach", default=None, metavar="RUN_DIR", help="use a mesh started by `meshconf up`")
    run.add_argument("--suites", default=None, help="directory of checks (default: the suites/ that ship)")
    run.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then extra pytest arguments")

    up = commands.add_parser("up", help="bring a mesh up and leave it running")
    _add_mesh_options(up)

    down = commands.add_parser("down", help="tear down meshes left running (by `up`, --keep or a crash)")
    down.add_argument("run_dirs", nargs="*", help="run directories (default: every local run meshconf knows)")

    defects = commands.add_parser("defects", help="list the local mesh's deliberate defects (self-validation)")
    defects.add_argument("--json", action="store_true", help="machine-readable output")

    checks = commands.add_parser("checks", help="list the conformance checks")
    checks.add_argument("--json", action="store_true", help="machine-readable output")
    checks.add_argument("--suites", default=None, help="directory of checks (default: the suites/ that ship)")
    return parser


def _config(args: argparse.Namespace, **extra: Any) -> RunConfig:
    return RunConfig.build(
        profile=args.profile, budget_overrides=args.budget, timeout_overrides=args.timeout,
        provider=args.provider, topology=args.topology, defects=args.mesh_defect or None,
        envoy_binary=args.envoy_binary, **extra,
    )


def _run(args: argparse.Namespace) -> int:
    import pytest

    config = _config(args, out=args.out, keep=args.keep or None)
    from conformance.topology import load_topology

    load_topology(config.topology)  # a bad topology is a usage error before pytest starts
    suites = Path(args.suites) if args.suites else _suites_dir()
    if not suites.is_dir():
        raise UsageError(f"no suites directory at {suites}; pass --suites DIR")
    out = config.out
    pytest_args = [
        str(suites), f"--mesh-out={out}", f"--alluredir={out / 'allure-results'}",
        f"--junitxml={out / 'junit.xml'}", "-p", "no:locust", "-p", "no:cacheprovider", "-rfEs",
    ]
    for flag, value in (("--mesh-provider", args.provider), ("--mesh-topology", args.topology),
                        ("--mesh-profile", args.profile), ("--envoy-binary", args.envoy_binary),
                        ("--mesh-attach", args.attach)):
        if value:
            pytest_args.append(f"{flag}={value}")
    pytest_args += [f"--mesh-defect={d}" for d in args.mesh_defect]
    pytest_args += [f"--mesh-budget={b}" for b in args.budget]
    pytest_args += [f"--mesh-timeout={t}" for t in args.timeout]
    if args.keep:
        pytest_args.append("--mesh-keep")
    if args.select:
        pytest_args += ["-k", args.select]
    if str(args.workers) not in ("0", ""):
        pytest_args += ["-n", str(args.workers)]
    extra = list(args.pytest_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    pytest_args += extra
    _clear_previous(out)
    print(f"meshconf: provider {config.provider}, topology {config.topology}, out {out}/"
          + (f", defects {', '.join(config.defects)}" if config.defects else ""), flush=True)
    code = int(pytest.main(pytest_args))
    return {0: 0, 1: 1, 2: EXIT_INTERRUPTED, 3: EXIT_ENVIRONMENT, 4: EXIT_USAGE, 5: EXIT_USAGE}.get(code, code)


def _clear_previous(out: Path) -> None:
    """Old results would mix into this run's Allure report: remove the files meshconf writes, nothing else."""
    import shutil

    for name in ("allure-results", "diagnostics"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("junit.xml", "conformance-report.json", "conformance-report.md"):
        (out / name).unlink(missing_ok=True)


def _up(args: argparse.Namespace) -> int:
    from conformance.providers import create_provider
    from conformance.topology import load_topology

    config = _config(args)
    provider = create_provider(config, load_topology(config.topology))
    provider.up(progress=lambda line: print(line, flush=True))
    run_dir = getattr(provider, "run_dir", None)
    print(f"mesh is up. Run checks against it:  meshconf run --attach {run_dir}")
    print(f"tear it down:                      meshconf down {run_dir}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from conformance.providers import leftover_runs, teardown_run

    if args.run_dirs:
        runs = []
        for given in args.run_dirs:
            path = Path(given)
            if not (path / "state.json").is_file() or not (path / ".meshconf-run").is_file():
                raise UsageError(f"{path} is not a meshconf run directory (no state.json); nothing was touched")
            runs.append(("local", path))
    else:
        runs = leftover_runs()
    if not runs:
        print("no meshes to tear down")
        return 0
    for provider, path in runs:
        stopped = teardown_run(provider, path)
        print(f"{path}: stopped {len(stopped)} leftover process(es); removed")
    return 0


def _checks(args: argparse.Namespace) -> int:
    suites = Path(args.suites) if args.suites else _suites_dir()
    infos = list_checks(suites)
    if args.json:
        print(json.dumps([i.as_dict() for i in infos], indent=1))
        return 0
    width = max((len(i.id) for i in infos), default=10)
    for info in infos:
        features = f" [needs {', '.join(sorted(info.features))}]" if info.features else ""
        print(f"{info.id:<{width}}  {info.area:<8}  {info.description}{features}")
    print(f"{len(infos)} checks")
    return 0


def list_checks(suites: Path) -> list[Any]:
    """Every check declared under ``suites`` (imports the test modules, runs nothing)."""
    found = []
    for path in sorted(suites.rglob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"meshconf_suite_{path.stem}", path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for value in vars(module).values():
            info = getattr(value, "__meshconf_check__", None)
            if info is not None:
                found.append(info)
    return sorted(found, key=lambda i: (str(i.area), i.id))


def _defects(args: argparse.Namespace) -> int:
    from conformance.providers import provider_defects

    defects = provider_defects("local")
    if args.json:
        print(json.dumps(defects, indent=1))
        return 0
    width = max(len(name) for name in defects)
    for name, meaning in defects.items():
        print(f"{name:<{width}}  {meaning}")
    return 0


COMMANDS = {"run": _run, "up": _up, "down": _down, "checks": _checks, "defects": _defects}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConformanceError as exc:
        print(f"meshconf: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("meshconf: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
