"""The existing provider against fake API servers: preflight errors, what it may touch, cleanup."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conformance.config import RunConfig
from conformance.errors import EnvironmentBroken, UsageError
from conformance.provider import Feature
from conformance.providers import PROVIDERS
from conformance.providers.existing import ExistingProvider
from conformance.providers.existing.preflight import istiod_version
from conformance.topology import load_topology


class FakeAPI:
    """Answers like a cluster running istiod 1.28.0 with remote secrets for ``secrets``."""

    def __init__(self, context: str, istiod: bool = True, ready: int = 1, secrets: tuple[str, ...] = ()) -> None:
        self.context = context
        self.istiod, self.ready, self.secrets = istiod, ready, secrets
        self.deleted: list[str] = []
        self.applied: list[dict[str, Any]] = []

    def server_version(self) -> str:
        return "v1.34.1"

    def deployment(self, namespace: str, name: str) -> Any:
        if not self.istiod:
            return None
        container = SimpleNamespace(name="discovery", image="docker.io/istio/pilot:1.28.0-distroless")
        return SimpleNamespace(spec=SimpleNamespace(template=SimpleNamespace(spec=SimpleNamespace(
            containers=[container]))), status=SimpleNamespace(ready_replicas=self.ready))

    def secret_names(self, namespace: str, label_selector: str = "") -> list[str]:
        assert label_selector == "istio/multiCluster=true"
        return [f"istio-remote-secret-{s}" for s in self.secrets]

    def delete_namespace(self, namespace: str, timeout_s: float) -> None:
        self.deleted.append(namespace)

    def apply(self, docs: Any) -> None:
        self.applied += list(docs)


def _provider(apis: dict[str, FakeAPI], **flags: Any) -> ExistingProvider:
    config = RunConfig.build(provider="existing", topology="multi-primary", contexts=list(apis), **flags)
    return ExistingProvider(config, load_topology("multi-primary"), api_factory=lambda context: apis[context])  # type: ignore[arg-type,return-value]


def _healthy() -> dict[str, FakeAPI]:
    return {"staging-a": FakeAPI("staging-a", secrets=("cluster2",)),
            "staging-b": FakeAPI("staging-b", secrets=("cluster1",))}


def test_registered() -> None:
    assert PROVIDERS["existing"] == "conformance.providers.existing:ExistingProvider"


def test_preflight_reports_versions_and_cleans_up_its_namespaces(tmp_path: Path) -> None:
    apis = _healthy()
    provider = _provider(apis)
    lines: list[str] = []
    provider.up(progress=lines.append)
    assert lines[0] == "existing: cluster1 = context staging-a, Kubernetes v1.34.1, Istio 1.28.0"
    assert provider.describe().mesh_version == "1.28.0"
    from conformance.runstate import RunState

    assert provider.run_dir is not None
    RunState(provider.run_dir).update(namespaces=["meshconf-check-abc123"])
    provider.down()
    assert apis["staging-a"].deleted == ["meshconf-check-abc123"] == apis["staging-b"].deleted


@pytest.mark.parametrize(("broken", "message"), [
    (FakeAPI("staging-b", istiod=False), "context staging-b: Istio is not installed"),
    (FakeAPI("staging-b", ready=0, secrets=("cluster1",)), "context staging-b: istiod is not ready"),
    (FakeAPI("staging-b"), "context staging-b: istiod has no remote secret for cluster cluster1; run "
                           "`istioctl create-remote-secret --context=staging-a --name=cluster1"),
])
def test_preflight_failures_are_one_line_with_a_fix(broken: FakeAPI, message: str) -> None:
    apis = _healthy()
    apis["staging-b"] = broken
    with pytest.raises(EnvironmentBroken) as raised:
        _provider(apis).up()
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_one_context_per_cluster() -> None:
    with pytest.raises(UsageError, match="give one per cluster"):
        _provider({"only-one": FakeAPI("only-one")})


def test_only_meshconf_namespaces_unless_mesh_wide_is_allowed() -> None:
    policy = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
              "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}
    provider = _provider(_healthy())
    assert Feature.MESH_WIDE_CONFIG not in provider.features()
    with pytest.raises(UsageError, match="--allow-mesh-wide"):
        provider.apply([policy], ["cluster1"])
    with pytest.raises(UsageError, match="only uses its own namespaces"):
        provider.delete_namespace("default")
    allowed = _provider(_healthy(), allow_mesh_wide=True)
    assert Feature.MESH_WIDE_CONFIG in allowed.features()
    allowed.apply([policy], ["cluster1"])
    assert allowed.api("cluster1").applied == [policy]  # type: ignore[attr-defined]


def test_istiod_version_from_image() -> None:
    assert istiod_version("docker.io/istio/pilot:1.28.0-distroless") == "1.28.0"
    assert istiod_version("gcr.io/istio-release/pilot:1.27.3@sha256:abc") == "1.27.3"
