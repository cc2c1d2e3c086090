"""Settings declared once: every ``meshconf run`` flag has its pytest twin and profile key, all three land in the
same RunConfig value, and ``meshconf run`` builds the config once and hands it over as one file."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from conformance import cli, plugin
from conformance.config import RunConfig
from conformance.errors import UsageError
from conformance.providers import (
    build_config,
    provider_class,
    provider_settings,
    read_config,
    settings_catalog,
    write_config,
)
from conformance.providers.existing.settings import ExistingSettings
from conformance.providers.kind.settings import KindSettings
from conformance.providers.kube.settings import InstallSettings, KubeSettings
from conformance.providers.local.settings import LocalSettings
from conformance.settings import Settings, catalog, setting

# (CLI arguments, profile entry, pytest arguments, the value RunConfig must hold): one setting per provider and
# one of the core's, each spelled the three ways.
SAME_SETTING = [
    pytest.param(["--topology", "multi-network"], {"topology": "multi-network"}, ["--mesh-topology=multi-network"],
                 lambda c: c.topology == "multi-network", id="core-topology"),
    pytest.param(["--defect", "slow-sidecar"], {"defects": ["slow-sidecar"]}, ["--mesh-defect=slow-sidecar"],
                 lambda c: c.settings_as(LocalSettings).defects == ("slow-sidecar",), id="local-defects"),
    pytest.param(["--provider", "kind", "--istio-version", "1.28.0", "--kind-node-image", "kindest/node:v1.35.8"],
                 {"provider": "kind", "istio_version": "1.28.0", "kind_node_image": "kindest/node:v1.35.8"},
                 ["--mesh-provider=kind", "--mesh-istio-version=1.28.0", "--mesh-kind-node-image=kindest/node:v1.35.8"],
                 lambda c: c.settings_as(KindSettings).kind_node_image == "kindest/node:v1.35.8", id="kind-node-image"),
    pytest.param(["--provider", "k3s", "--istio-version", "1.28.0", "--image-hub", "mirror.gcr.io"],
                 {"provider": "k3s", "istio_version": "1.28.0", "image_hub": "mirror.gcr.io"},
                 ["--mesh-provider=k3s", "--mesh-istio-version=1.28.0", "--mesh-image-hub=mirror.gcr.io"],
                 lambda c: c.settings_as(InstallSettings).image_hub == "mirror.gcr.io", id="k3s-image-hub"),
    pytest.param(["--provider", "existing", "--context", "a", "--context", "b", "--revision", "1-28-0"],
                 {"provider": "existing", "contexts": ["a", "b"], "revision": "1-28-0"},
                 ["--mesh-provider=existing", "--mesh-context=a", "--mesh-context=b", "--mesh-revision=1-28-0"],
                 lambda c: c.settings_as(ExistingSettings).contexts == ("a", "b"), id="existing-contexts"),
    pytest.param(["--budget", "in_cluster_p99_ms=12"], {"budgets": {"in_cluster_p99_ms": 12}},
                 ["--mesh-budget=in_cluster_p99_ms=12"], lambda c: c.budgets.in_cluster_p99_ms == 12, id="core-budget"),
]


class _PytestOptions:
    """Just enough of pytest's option parser to run the plugin's ``pytest_addoption`` into argparse."""

    def __init__(self) -> None:
        self.parser = argparse.ArgumentParser()
        self.names: list[str] = []

    def getgroup(self, *_args: Any) -> _PytestOptions:
        return self

    def addoption(self, *names: str, **kwargs: Any) -> None:
        self.names += names
        self.parser.add_argument(*names, **kwargs)

    def config(self, argv: list[str]) -> Any:
        """A stand-in for pytest.Config: ``getoption`` by dest or by option name, as pytest answers it."""
        values = vars(self.parser.parse_args(argv))
        return SimpleNamespace(getoption=lambda name: values[name.removeprefix("--").replace("-", "_")])


def _pytest_options() -> _PytestOptions:
    options = _PytestOptions()
    plugin.pytest_addoption(options)  # type: ignore[arg-type]
    return options


def _flags(command: str) -> list[str]:
    parser = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return [flag for action in parser._actions for flag in action.option_strings]


OWN_FLAGS = {  # how a command works, not settings of the mesh under test
    "run": {"-h", "--help", "-n", "--workers", "-k", "--attach", "--suites"},
    "up": {"-h", "--help"},
    "plan": {"-h", "--help", "--provider"},
    "upgrade": {"-h", "--help", "--provider", "--from", "--to", "--out", "--plan"},
}


@pytest.mark.parametrize("command", sorted(OWN_FLAGS))
def test_every_flag_of_a_command_that_is_a_setting_is_declared_for_it(command: str) -> None:
    declared = {flag for d in settings_catalog() if command in d.commands for flag in (d.flag, *d.aliases)}
    assert set(_flags(command)) - OWN_FLAGS[command] == declared, f"a meshconf {command} flag that is no " \
        "declared setting of that command (or the reverse)"


def test_every_run_flag_that_is_a_setting_has_its_pytest_twin_and_profile_key() -> None:
    declared = {flag: d for d in settings_catalog() for flag in (d.flag, *d.aliases)}
    assert set(_flags("run")) - OWN_FLAGS["run"] == {f for f, d in declared.items() if "run" in d.commands}
    twins = set(_pytest_options().names)
    fields = {f.name for f in dataclasses.fields(RunConfig)} | {
        f.name for cls in provider_settings().values() for f in dataclasses.fields(cls)}
    for d in settings_catalog():
        assert d.pytest_option == "--mesh-" + d.flag.removeprefix("--") and d.pytest_option in twins, d.flag
        assert d.name in fields, f"{d.flag}: its profile key {d.name} is no RunConfig / Settings field"
    assert "--mesh-defect" in declared and declared["--mesh-defect"].flag == "--defect"  # the old CLI spelling


@pytest.mark.parametrize(("argv", "profile", "pytest_argv", "holds"), SAME_SETTING)
def test_cli_flag_profile_key_and_pytest_option_land_in_the_same_value(
        tmp_path: Path, argv: list[str], profile: dict[str, Any], pytest_argv: list[str], holds: Any) -> None:
    from_cli = cli._config(cli._parser().parse_args(["run", *argv]))
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    from_profile = dataclasses.replace(build_config(profile=path), profile=None)
    from_pytest = plugin._run_config(_pytest_options().config(pytest_argv))
    assert holds(from_cli) and from_cli == from_profile == from_pytest


def test_a_shared_setting_is_declared_once_with_every_provider_that_reads_it() -> None:
    by_name = {d.name: d for d in settings_catalog()}
    assert by_name["image_hub"].owners == ("kind", "existing", "k3s")
    assert by_name["istio_version"].owners == ("kind", "k3s")
    assert by_name["defects"].owners == ("local",) and by_name["provider"].owners == ()
    assert [d.flag for d in settings_catalog()].count("--image-hub") == 1
    for name, cls in provider_settings().items():
        assert provider_class(name).Settings is cls and issubclass(cls, Settings)
    assert issubclass(KindSettings, InstallSettings) and issubclass(ExistingSettings, KubeSettings)


def test_two_providers_declaring_one_name_differently_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Other(Settings):
        image_hub: str | None = setting(None, help="something else")

    with pytest.raises(TypeError, match="declare a shared setting once"):
        catalog(RunConfig, {"kind": KindSettings, "other": Other})


# -- built once ----------------------------------------------------------------------------------------------


def test_the_config_file_round_trips_for_every_provider(tmp_path: Path) -> None:
    for config in (build_config(defects=["slow-sidecar"], envoy_binary=sys.executable, keep=True, out="x"),
                   build_config(provider="kind", istio_version="1.28.0", reuse=True, istioctl="/opt/istioctl"),
                   build_config(provider="k3s", istio_version="1.28.0", load_overrides=["users=7"]),
                   build_config(provider="existing", contexts=["a", "b"], allow_mesh_wide=True)):
        assert read_config(write_config(config, tmp_path / "meshconf-config.json")) == config


def test_reading_the_file_does_not_build_or_validate_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the daemon and pytest read is the config as it was built: an Envoy that is no longer executable is
    not checked again (build_config would refuse it), and the plugin never calls build_config."""
    envoy = tmp_path / "envoy"
    envoy.write_text("#!/bin/sh\n")
    envoy.chmod(0o755)
    config = build_config(envoy_binary=str(envoy))
    path = write_config(config, tmp_path / "meshconf-config.json")
    envoy.chmod(0o644)
    with pytest.raises(UsageError, match="is not an executable file"):
        build_config(envoy_binary=str(envoy))
    assert RunConfig.from_dict(json.loads(path.read_text()), {"local": LocalSettings}) == config  # the daemon's read

    def no_build(**_: Any) -> RunConfig:
        raise AssertionError("pytest built the config again")

    monkeypatch.setattr(plugin, "build_config", no_build)
    assert plugin._run_config(_pytest_options().config([f"--mesh-config-file={path}"])) == config
    with pytest.raises(UsageError, match="--mesh-topology cannot be combined with --mesh-config-file"):
        plugin._run_config(_pytest_options().config([f"--mesh-config-file={path}", "--mesh-topology=multi-network"]))


def test_meshconf_run_hands_pytest_one_config_file_and_no_setting_options(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def collect(selection: list[str]) -> list[dict[str, Any]]:
        files = [a.removeprefix("--mesh-config-file=") for a in selection if a.startswith("--mesh-config-file=")]
        seen["file"] = json.loads(Path(files[0]).read_text()) if len(files) == 1 else files
        seen["options"] = [a for a in selection if a.startswith("--mesh-") and not a.startswith("--mesh-config")]
        raise UsageError("stop here")

    monkeypatch.setattr("conformance.run.collect_checks", collect)
    monkeypatch.setenv("MESHCONF_STATE_DIR", str(tmp_path / "state"))
    out = tmp_path / "out"
    assert cli.main(["run", "--out", str(out), "--topology", "multi-network", "--defect", "slow-sidecar",
                     "--budget", "in_cluster_p99_ms=12"]) == 2
    expected = build_config(out=str(out), topology="multi-network", defects=["slow-sidecar"],
                            budget_overrides=["in_cluster_p99_ms=12"])
    assert seen["file"] == expected.as_dict() and seen["options"] == []
    assert not [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("meshconf-session-*")
                if (p / "meshconf-config.json").exists() and str(out) in (p / "meshconf-config.json").read_text()]


def test_the_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("| flag | provider | meaning |"):]
    table = table[:table.index("\n\n")]
    rows = table.splitlines()[2:]
    documented = {row.split("`")[1].split()[0] for row in rows}
    assert documented == {d.flag for d in settings_catalog()}
    for row in rows:
        declared = next(d for d in settings_catalog() if d.flag == row.split("`")[1].split()[0])
        assert row.split("|")[2].strip() == ", ".join(sorted(declared.owners, key=["local", "kind", "k3s",
                                                                                  "existing"].index)), row
