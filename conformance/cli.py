"""The ``meshconf`` command.

Exit codes (every command): 0 success / every check passed; 1 a check found the mesh non-conformant;
2 usage or configuration error (nothing was started); 3 the environment broke (no verdict); 128 + N stopped by
signal N (130 Ctrl-C / SIGINT, 143 SIGTERM). Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from conformance.config import RunConfig
from conformance.errors import (
    EXIT_ENVIRONMENT,
    EXIT_SIGNAL_BASE,
    EXIT_USAGE,
    ConformanceError,
    PreflightFailed,
    UsageError,
)

__all__ = ["main"]

EXIT_INTERRUPTED = EXIT_SIGNAL_BASE + 2  # SIGINT


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is meshconf's own one line (exit 2), not the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _workers(value: str) -> str:
    """``-n``: a number of pytest-xdist workers, or ``auto`` / ``logical`` (xdist's own choices)."""
    if value in ("auto", "logical") or (value.isdigit() and int(value) <= 512):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is not a number of workers (0 runs in this process; 1, 2, ... "
                                     "or auto)")


def _suites_dir() -> Path:
    """The repository's ``suites/``, or the copy bundled in the wheel."""
    repo = Path(__file__).resolve().parent.parent / "suites"
    return repo if repo.is_dir() else Path(__file__).resolve().parent / "_bundled" / "suites"


def _add_settings(parser: argparse.ArgumentParser, command: str) -> None:
    """The settings ``command`` takes, generated from their declarations (``conformance.settings``): the core's
    on RunConfig and each provider's Settings class. A new setting is one field there, never a line here."""
    from conformance.providers import settings_catalog

    for declared in settings_catalog():
        if command in declared.commands:
            parser.add_argument(declared.flag, *declared.aliases, **declared.parser_arguments())


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, as ``build_config`` keywords (None: not given)."""
    from conformance.providers import settings_catalog

    return {d.keyword: getattr(args, d.dest) for d in settings_catalog() if hasattr(args, d.dest)}


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="meshconf",
        description="End-to-end conformance suite for Istio multi-cluster service meshes.",
        epilog="Exit codes: 0 passed, 1 non-conformant, 2 usage error, 3 environment broken, 130 / 143 stopped by "
               "SIGINT / SIGTERM.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="bring a mesh up, run the conformance checks, tear it down",
                              description="Run the conformance suites. Extra arguments after -- go to pytest.")
    _add_settings(run, "run")
    run.add_argument("-n", "--workers", default="0", type=_workers,
                     help="pytest-xdist workers (0: one pytest process; checks are parallel-safe)")
    run.add_argument("-k", dest="select", default=None, help="only checks matching this pytest -k expression")
    run.add_argument("--attach", default=None, metavar="RUN_DIR", help="use a mesh started by `meshconf up`")
    run.add_argument("--suites", default=None, help="directory of checks (default: the suites/ that ship)")
    run.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then extra pytest arguments")

    up = commands.add_parser("up", help="bring a mesh up and leave it running")
    _add_settings(up, "up")

    down = commands.add_parser("down", help="tear down meshes left running (by `up`, --keep or a crash)")
    down.add_argument("run_dirs", nargs="*", help="run directories (default: every local run meshconf knows)")

    defects = commands.add_parser("defects", help="list the local mesh's deliberate defects (self-validation)")
    defects.add_argument("--provider", default="local", help="the provider whose defects to list (only local has any)")
    defects.add_argument("--json", action="store_true", help="machine-readable output")

    checks = commands.add_parser("checks", help="list the conformance checks")
    checks.add_argument("--json", action="store_true", help="machine-readable output")
    checks.add_argument("--suites", default=None, help="directory of checks (default: the suites/ that ship)")
    _add_real_cluster_commands(commands)
    _add_report_command(commands)
    _add_compare_command(commands)
    _add_selftest_command(commands)
    return parser


def _config(args: argparse.Namespace) -> RunConfig:
    from conformance.providers import build_config

    return build_config(**_given(args))


def _run(args: argparse.Namespace) -> int:
    from conformance.preflight import check_out
    from conformance.providers import validate_provider
    from conformance.run import RunPlan, execute
    from conformance.topology import load_topology

    config = _config(args)  # built once: pytest and the local mesh read this one (see conformance.run)
    topology = load_topology(config.topology)  # a bad topology is a usage error before anything starts
    validate_provider(config, topology)  # so is a setting only the provider understands (e.g. a defect name)
    suites = Path(args.suites) if args.suites else _suites_dir()
    if not suites.is_dir():
        raise UsageError(f"no suites directory at {suites}; pass --suites DIR")
    out = config.out
    check_out(out)
    selection = [str(suites), "-p", "no:locust"]
    if args.select:
        selection += ["-k", args.select]
    extra = list(args.pytest_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    selection += extra
    session = [f"--alluredir={out / 'allure-results'}", f"--junitxml={out / 'junit.xml'}", "-p", "no:cacheprovider",
               "-rfEs"]
    if str(args.workers) not in ("0", ""):
        session += ["-n", str(args.workers)]
    _clear_previous(out)
    given = {k: v for k, v in config.settings.as_dict().items() if v not in (None, False, [])}  # the provider's own
    print(f"meshconf: provider {config.provider}, topology {config.topology}, out {out}/"
          + "".join(f", {k} {', '.join(v) if isinstance(v, list) else v}" for k, v in given.items()), flush=True)
    plan = RunPlan(config, topology, selection, session, Path(args.attach) if args.attach else None)
    return execute(plan)


def _clear_previous(out: Path) -> None:
    """Old results would mix into this run's Allure report: remove the files meshconf writes, nothing else."""
    import shutil

    from conformance.preflight import OUT_DIRS, OUT_FILES

    for name in OUT_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)
    for name in OUT_FILES:
        (out / name).unlink(missing_ok=True)


def _up(args: argparse.Namespace) -> int:
    from conformance.preflight import preflight
    from conformance.providers import create_provider, validate_provider
    from conformance.topology import load_topology

    config = _config(args)
    topology = load_topology(config.topology)
    validate_provider(config, topology)
    preflight(config, topology)
    provider = create_provider(config, topology)
    provider.up(progress=lambda line: print(line, flush=True))
    run_dir = provider.run_dir
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
            runs.append((_provider_of(path), path))
    else:
        runs = leftover_runs()
    if not runs:
        print("no meshes to tear down")
        return 0
    for provider, path in runs:
        stopped = teardown_run(provider, path)
        by_pid = f"; {len(stopped)} process(es) that outlived it stopped by PID" if stopped else ""
        print(f"{path}: {provider} mesh torn down, run directory removed{by_pid}")
    return 0


def _checks(args: argparse.Namespace) -> int:
    suites = Path(args.suites) if args.suites else _suites_dir()
    infos = list_checks(suites)
    if args.json:
        print(json.dumps([{**i.as_dict(), **providers_for(i)} for i in infos], indent=1))
        return 0
    width = max((len(i.id) for i in infos), default=10)
    for info in infos:
        features = f" [needs {', '.join(sorted(info.features))}]" if info.features else ""
        print(f"{info.id:<{width}}  {info.area:<8}  {info.description}{features}")
        print(f"{'':<{width}}  {'':<8}  {runs_on(info)}")
    print(f"{len(infos)} checks")
    return 0


def providers_for(info: Any) -> dict[str, Any]:
    """Which providers can run a check (they can offer every feature it needs), and what the others lack."""
    from conformance.providers import PROVIDERS, provider_offers

    lacking = {name: sorted(str(f) for f in info.features - provider_offers(name)) for name in PROVIDERS}
    return {"providers": [name for name, missing in lacking.items() if not missing],
            "lacking": {name: missing for name, missing in lacking.items() if missing}}


def runs_on(info: Any) -> str:
    """``runs on: local, kind (existing lacks sidecar-entry)``."""
    found = providers_for(info)
    why = "; ".join(f"{name} lacks {', '.join(missing)}" for name, missing in found["lacking"].items())
    return f"runs on: {', '.join(found['providers']) or 'no provider'}" + (f" ({why})" if why else "")


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

    defects = provider_defects(args.provider)
    if args.json:
        print(json.dumps(defects, indent=1))
        return 0
    width = max(len(name) for name in defects)
    for name, meaning in defects.items():
        print(f"{name:<{width}}  {meaning}")
    return 0


# -- real clusters: kind and existing providers, plan, doctor, gate, upgrade -------------------------------


def _provider_of(run_dir: Path) -> str:
    """Which provider recorded a run directory (local runs predate the ``provider`` field)."""
    try:
        return str(json.loads((run_dir / "state.json").read_text()).get("provider") or "local")
    except (OSError, ValueError):
        return "local"


def _add_real_cluster_commands(commands: Any) -> None:
    plan = commands.add_parser("plan", help="print every install step (commands and manifests); runs nothing")
    plan.add_argument("--provider", default="kind", help="kind (default) or k3s: the providers that install a mesh")
    _add_settings(plan, "plan")

    doctor = commands.add_parser("doctor", help="report the tools and packages a provider needs (exit 3: missing)")
    doctor.add_argument("--provider", default="kind", help="kind (default), k3s, existing or local")

    gate = commands.add_parser("gate", help="compare two conformance reports; exit 1 on any regression")
    gate.add_argument("--before", required=True, help="conformance-report.json before the change")
    gate.add_argument("--after", required=True, help="conformance-report.json after the change")

    upgrade = commands.add_parser("upgrade", help="upgrade Istio between two catalogue runs, under measured traffic",
                                  description="Run the catalogue, upgrade the mesh while traffic and held connections "
                                              "between clusters are measured, run the catalogue again, gate. Exit 1 "
                                              "on any regression or budget overrun.")
    upgrade.add_argument("--provider", default="kind",
                         help="kind (installs --from, canary-upgrades by revision) or existing (your clusters; "
                              "your --upgrade-command upgrades them)")
    upgrade.add_argument("--from", dest="from_version", default=None,
                         help="kind: the Istio to install first, e.g. 1.27.3 (existing: what the clusters run)")
    upgrade.add_argument("--to", dest="to_version", required=True, help="the Istio to upgrade to, e.g. 1.28.0")
    upgrade.add_argument("--out", default="out-upgrade", help="before/, after/, upgrade.json, gate.txt")
    upgrade.add_argument("--plan", action="store_true", help="print the steps only; run nothing")
    _add_settings(upgrade, "upgrade")


def _plan(args: argparse.Namespace) -> int:
    from conformance.providers import build_config, plan_provider
    from conformance.topology import load_topology

    config = build_config(**_given(args), provider=args.provider)
    sys.stdout.write(plan_provider(config, load_topology(config.topology)))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from conformance.doctor import examine, render_findings

    text, ready = render_findings(examine(), args.provider)
    sys.stdout.write(text)
    return 0 if ready else EXIT_ENVIRONMENT


def _gate(args: argparse.Namespace) -> int:
    from conformance.report.gate import compare_reports, render_gate
    from conformance.report.model import Report

    before, after = Report.load(Path(args.before)), Report.load(Path(args.after))
    rows = compare_reports(before, after)
    sys.stdout.write(render_gate(before, after, rows))
    return 1 if any(r.regression for r in rows) else 0


def _upgrade(args: argparse.Namespace) -> int:
    from conformance.providers import build_config, create_provider, provider_class
    from conformance.topology import load_topology
    from conformance.upgrade import run_upgrade, upgrade_plan

    # --provider, --from and --to are the upgrade's own (kind by default); the provider says what --from means
    # for its config (kind: the Istio it installs first)
    config = build_config(**_given(args), provider=args.provider)
    kind = provider_class(config.provider)
    config = kind.at_version(config, args.from_version)
    topology = load_topology(config.topology)
    if args.plan:
        sys.stdout.write(upgrade_plan(kind, config, topology, args.to_version, args.from_version))
        return 0
    kind.upgrade_plan(config, topology, args.to_version)  # usage errors: nothing runs
    return run_upgrade(config, topology, args.to_version, Path(args.out), lambda line: print(line, flush=True),
                       create_provider(config, topology), from_version=args.from_version)


# -- reading reports: the Allure HTML report, the matrix of many runs -----------------------------------------


def _add_report_command(commands: Any) -> None:
    report = commands.add_parser("report", help="render OUT/allure-results into OUT/allure-report (Allure 3, Node.js)",
                                 description="Render the Allure report of a run with the Allure 3 CLI, run through "
                                             "npx (exit 3 if Node.js is missing).")
    report.add_argument("out", metavar="OUT", help="the run's --out directory (default of `meshconf run`: out)")
    report.add_argument("--single-file", action=argparse.BooleanOptionalAction, default=None,
                        help="one index.html that opens from file:// (default, unless --serve)")
    report.add_argument("--serve", action="store_true",
                        help="render the multi-file report and serve it on 127.0.0.1 until Ctrl-C")
    report.add_argument("--port", type=int, default=0, help="port for --serve (default: any free port)")


def _add_compare_command(commands: Any) -> None:
    compare = commands.add_parser("compare", help="a matrix of many runs' conformance reports (not a gate: exit 0)")
    compare.add_argument("reports", nargs="+", metavar="REPORT", help="conformance-report.json files, two or more")
    compare.add_argument("--markdown", action="store_true", help="a Markdown table (for a PR or a wiki page)")


def _report(args: argparse.Namespace) -> int:
    from conformance.report.render import render_report, report_server

    single_file = args.single_file if args.single_file is not None else not args.serve
    index = render_report(Path(args.out), single_file=single_file)
    if not args.serve:
        print(f"report: {index}" + ("  (one file: open it in a browser)" if single_file else
                                    "  (several files: open it over HTTP, e.g. with --serve)"))
        return 0
    server = report_server(index.parent, args.port)
    print(f"serving {index.parent} at http://127.0.0.1:{server.server_address[1]}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _compare(args: argparse.Namespace) -> int:
    from conformance.report.compare import build_matrix, load_reports, render_markdown, render_text

    if len(args.reports) < 2:
        raise UsageError("compare needs two or more conformance-report.json files")
    matrix = build_matrix(load_reports([Path(p) for p in args.reports]))
    sys.stdout.write(render_markdown(matrix) if args.markdown else render_text(matrix))
    return 0


# -- self-validation: every check can fail, at the shipped settings --------------------------------------------


def _add_selftest_command(commands: Any) -> None:
    selftest = commands.add_parser(
        "selftest", help="prove every check can fail: a clean run, then every local-mesh defect (shipped settings)",
        description="Run the whole catalogue on a clean local mesh at the shipped settings (it must pass), then "
                    "each deliberate defect against the checks that claim to catch it: a catch counts only when "
                    "the check failed on the expectation named for it, not on a precondition.",
        epilog="Exit codes: 0 the clean run passed and every defect was caught; 1 a check failed without a "
               "defect, or a defect was not caught on its expectation; 2 usage error; 3 only the environment "
               "kept it from a verdict (a run broke or wrote no report); 130 interrupted.")
    selftest.add_argument("--topology", default=None,
                          help="only the rows (and the clean run) on this topology (default: every topology)")
    selftest.add_argument("-n", dest="parallel", type=int, default=None, metavar="N",
                          help="at most N checks at once while defect runs go side by side (default 12); "
                               "load-measuring runs always run alone")
    output = selftest.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the result as JSON (progress goes to stderr)")
    output.add_argument("--markdown", action="store_true", help="print the defect x check table (for the README)")
    selftest.add_argument("--out", default="out-selftest",
                          help="each run's reports, one directory per run, and the result as selftest.json and "
                               "selftest.md (default: out-selftest)")


def _selftest(args: argparse.Namespace) -> int:
    from conformance.selftest import SelftestPlan, render_markdown, render_text, run_selftest

    infos = list_checks(_suites_dir())
    catalogue = {info.id: str(info.area) for info in infos}
    plan = SelftestPlan.build(catalogue, topology=args.topology, parallel=args.parallel,
                              serial=[info.id for info in infos if info.serial])
    out = Path(args.out)
    def progress(text: str) -> None:
        for line in text.splitlines():
            print(f"selftest: {line}", file=sys.stderr, flush=True)

    result = run_selftest(plan, out, progress)
    (out / "selftest.json").write_text(json.dumps(result.as_dict(), indent=1) + "\n")
    (out / "selftest.md").write_text(render_markdown(result))
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
    else:
        sys.stdout.write(render_markdown(result) if args.markdown else render_text(result))
    return result.exit_code


COMMANDS = {"run": _run, "up": _up, "down": _down, "checks": _checks, "defects": _defects,
            "plan": _plan, "doctor": _doctor, "gate": _gate, "upgrade": _upgrade,
            "report": _report, "compare": _compare, "selftest": _selftest}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PreflightFailed as exc:
        print(f"meshconf: error: preflight for --provider {exc.provider} failed; nothing was started:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return exc.exit_code
    except ConformanceError as exc:
        print(f"meshconf: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("meshconf: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
