"""`meshconf upgrade --provider existing`: the user's upgrade between the two catalogue runs, for a CI gate.

Proven here without a cluster: the plan (printed with no cluster access), the usage errors (no command and no
terminal; a provider that cannot upgrade), the user's command (its output streamed, a non-zero exit an
environment error), the check of ``--from`` against what the clusters run, and the restart of meshconf's own
probe deployments (the Kubernetes API is the one seam replaced: the FakeAPI of test_existing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conformance.errors import EnvironmentBroken, UsageError
from conformance.providers.existing.upgrade import check_upgrade_command, run_upgrade_command
from conformance.providers.kube.probes import MANAGED_BY

from .test_existing import FakeAPI, _healthy, _provider

REPO = Path(__file__).resolve().parents[2]


def _meshconf(*args: str) -> subprocess.CompletedProcess[str]:
    """``meshconf`` as a CI job runs it: no terminal on stdin, and no kubeconfig to reach any cluster with."""
    return subprocess.run([sys.executable, "-m", "conformance.cli", *args], cwd=REPO, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120,
                          env={**os.environ, "KUBECONFIG": str(REPO / "no-such-kubeconfig")})


def test_the_existing_plan_prints_the_steps_and_runs_nothing() -> None:
    done = _meshconf("upgrade", "--provider", "existing", "--plan", "--context", "a", "--context", "b",
                     "--to", "1.28.0", "--upgrade-command", "helm upgrade istiod istio/istiod --version 1.28.0")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("meshconf upgrade plan: provider existing, topology multi-primary, contexts a (cluster1), "
                          "b (cluster2); the Istio the clusters run -> 1.28.0")
    steps = [line for line in out.splitlines() if line.startswith("Step ")]
    assert [s.split(".")[0] for s in steps] == [f"Step {n}" for n in range(1, 7)]
    assert "   $ helm upgrade istiod istio/istiod --version 1.28.0" in out
    assert "a non-zero exit stops the gate with exit 3" in out
    assert "Step 5. meshconf restarts its own probe deployments in meshconf-upgrade-restart" in out
    assert "do not restart meshconf-upgrade" in out
    assert "8 keep-alive connections held from holder/meshconf-upgrade on cluster1" in out  # the core's section


def test_the_existing_plan_with_from_and_a_revision() -> None:
    done = _meshconf("upgrade", "--provider", "existing", "--plan", "--context", "a", "--context", "b",
                     "--from", "1.27.3", "--to", "1.28.0", "--revision", "1-27-3", "--upgrade-command", "x")
    assert done.returncode == 0, done.stderr
    assert "the Istio the clusters run -> 1.28.0" in done.stdout and "the mesh must run 1.27.3 (--from)" in done.stdout
    assert "labelled istio.io/rev=1-27-3" in done.stdout


def test_without_an_upgrade_command_and_no_terminal_it_is_a_usage_error() -> None:
    for plan in ((), ("--plan",)):
        done = _meshconf("upgrade", "--provider", "existing", "--context", "a", "--context", "b", "--to", "1.28.0",
                         *plan)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            "meshconf: error: meshconf upgrade --provider existing needs --upgrade-command 'CMD' (the command that "
            "upgrades your clusters, e.g. your helm upgrade) when it does not run in a terminal"]


def test_a_terminal_may_upgrade_by_hand_and_an_empty_command_is_refused() -> None:
    check_upgrade_command(None, interactive=True)  # meshconf will ask, and wait for Enter
    with pytest.raises(UsageError, match="--upgrade-command is empty"):
        check_upgrade_command("  ", interactive=False)


@pytest.mark.parametrize("provider", ["local", "k3s"])
def test_a_provider_that_cannot_upgrade_is_a_usage_error(provider: str, tmp_path: Path) -> None:
    done = _meshconf("upgrade", "--provider", provider, "--from", "1.27.3", "--to", "1.28.0",
                     "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert f"provider {provider} cannot upgrade a mesh" in done.stderr
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_kind_refuses_an_upgrade_command() -> None:
    done = _meshconf("upgrade", "--provider", "kind", "--from", "1.27.3", "--to", "1.28.0", "--plan",
                     "--upgrade-command", "helm upgrade")
    assert done.returncode == 2 and "--upgrade-command is for --provider existing" in done.stderr


def test_the_users_command_is_streamed_and_gets_the_version() -> None:
    lines: list[str] = []
    run_upgrade_command('echo "upgrading to $MESHCONF_UPGRADE_TO"; echo done >&2', "1.28.0", lines.append)
    assert lines == ['$ echo "upgrading to $MESHCONF_UPGRADE_TO"; echo done >&2', "  | upgrading to 1.28.0",
                     "  | done"]


def test_a_failing_command_is_an_environment_error() -> None:
    lines: list[str] = []
    with pytest.raises(EnvironmentBroken, match="the upgrade command exited 4: echo half; exit 4") as caught:
        run_upgrade_command("echo half; exit 4", "1.28.0", lines.append)
    assert caught.value.exit_code == 3 and lines[-1] == "  | half"


def test_upgrade_mesh_runs_the_command_from_the_config(tmp_path: Path) -> None:
    marker = tmp_path / "upgraded"
    provider = _provider(_healthy(), upgrade_command=f"echo $MESHCONF_UPGRADE_TO > {marker}")
    provider.upgrade_mesh("1.28.0", lambda _line: None)
    assert marker.read_text() == "1.28.0\n"


class Deployments(FakeAPI):
    """A FakeAPI that also lists, restarts and waits for Deployments in meshconf's namespaces."""

    def __init__(self, context: str, names: list[str]) -> None:
        super().__init__(context)
        self.names = names
        self.calls: list[str] = []

    def deployments(self, namespace: str, selector: dict[str, str]) -> list[Any]:
        assert selector == MANAGED_BY  # only what meshconf created
        return [SimpleNamespace(metadata=SimpleNamespace(name=n)) for n in self.names]

    def restart_deployment(self, namespace: str, deployment: str) -> None:
        self.calls.append(f"restart {namespace}/{deployment}")

    def wait_rollout(self, namespace: str, deployment: str, timeout_s: float) -> list[Any]:
        self.calls.append(f"wait {namespace}/{deployment}")
        return []


def test_meshconf_restarts_only_its_own_probe_deployments() -> None:
    apis = {"a": Deployments("a", []), "b": Deployments("b", ["upgraded-v1"])}
    provider = _provider(apis)  # type: ignore[arg-type]
    said: list[str] = []
    provider.restart_probes("meshconf-upgrade-restart", said.append)
    assert apis["b"].calls == ["restart meshconf-upgrade-restart/upgraded-v1",
                               "wait meshconf-upgrade-restart/upgraded-v1"]
    assert apis["a"].calls == [] and said == ["restart meshconf-upgrade-restart/upgraded-v1 on cluster2"]
    with pytest.raises(UsageError, match="only in its own meshconf-\\* namespaces"):
        provider.restart_probes("payments", said.append)
    assert apis["b"].calls[2:] == []


def test_in_a_terminal_without_a_command_meshconf_waits_for_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.providers.existing import upgrade

    asked: list[str] = []
    monkeypatch.setattr(upgrade.sys, "stdin", SimpleNamespace(isatty=lambda: True))
    upgrade.wait_for_manual_upgrade("1.28.0", ["a", "b"], ask=lambda prompt: asked.append(prompt) or "")
    assert asked == ["Upgrade Istio to 1.28.0 in a, b now (restart your workloads as your upgrade needs; not "
                     "meshconf-upgrade); press Enter when done: "]
    monkeypatch.setattr(upgrade.sys, "stdin", SimpleNamespace(isatty=lambda: False))
    with pytest.raises(UsageError, match="needs --upgrade-command"):
        upgrade.wait_for_manual_upgrade("1.28.0", ["a", "b"], ask=lambda prompt: asked.append(prompt) or "")
    assert len(asked) == 1
