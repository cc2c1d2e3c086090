"""Secrets are scrubbed from everything diagnostics write, on every provider: the redaction itself, and the kind
and existing providers' diagnostics writers fed by clusters whose logs, events and dumps say too much."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conformance.plugin import collect_diagnostics
from conformance.providers import build_config
from conformance.providers.existing.provider import ExistingProvider
from conformance.providers.kind.provider import KindProvider
from conformance.providers.kind.runner import Result, Runner
from conformance.providers.kube.api import Pod
from conformance.redact import REDACTED, redact_text, redact_tree
from conformance.topology import load_topology

KEY_PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
KEY_BODY = KEY_PEM.splitlines()[1]
TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im1lc2hjb25mIn0.c2VjcmV0LXRva2Vu.c2lnbmF0dXJl"
KUBECONFIG = f"""apiVersion: v1
kind: Config
users:
- name: kind-cluster1
  user:
    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t
    client-key-data: {base64.b64encode(KEY_PEM.encode()).decode()}
    token: {TOKEN}
"""
ENVOY_DUMP_UNREDACTED = json.dumps({"configs": [{"dynamic_active_secrets": [{"secret": {"tls_certificate": {
    "private_key": {"inline_bytes": base64.b64encode(KEY_PEM.encode()).decode()}}}}]}]})
SECRETS = {"PEM body": KEY_BODY, "token": TOKEN, "base64 PEM": base64.b64encode(KEY_PEM.encode()).decode()[64:128]}


def _leaks(text: str) -> list[str]:
    return [what for what, value in SECRETS.items() if value in text] + (["PEM"] if "PRIVATE KEY-----" in text else [])


@pytest.mark.parametrize("text", [
    KEY_PEM,
    f"log line\n{KEY_PEM.replace('PRIVATE KEY', 'EC PRIVATE KEY')}\nnext line",
    json.dumps({"key": KEY_PEM}),
    KUBECONFIG,
    json.dumps({"users": [{"user": {"client-key-data": base64.b64encode(KEY_PEM.encode()).decode(), "token": TOKEN}}]}),
    f"GET / HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n",
    json.dumps({"headers": {"authorization": f"Bearer {TOKEN}"}}),
    ENVOY_DUMP_UNREDACTED,
])
def test_secrets_are_redacted(text: str) -> None:
    redacted, count = redact_text(text)
    assert count >= 1 and _leaks(redacted) == [], redacted
    assert REDACTED in redacted or "redacted by meshconf" in redacted


def test_what_is_no_secret_is_left_alone() -> None:
    certificate = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ\n-----END CERTIFICATE-----\n"
    redacted_by_envoy = json.dumps({"private_key": {"inline_bytes": "W3JlZGFjdGVkXQ=="}})
    histogram = "HISTFAAAACl4nJNpmSzMwMDAxQABzFCaEUrzMTBwMDGwMjIzMHJxMTAwsDIyMjKxcnKxAQBo8gR/" * 3
    for text in (certificate, redacted_by_envoy, histogram, "tokens: 3 calls, 0 errors", "password-less"):
        assert redact_text(text) == (text, 0)


def test_redact_tree_leaves_binary_files_and_links_alone(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text(f"x\n{KEY_PEM}")
    (tmp_path / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0" + KEY_PEM.encode())
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text(KEY_PEM)
    (tmp_path / "link.txt").symlink_to(outside)
    assert redact_tree([tmp_path]) == 1
    assert _leaks((tmp_path / "a.log").read_text()) == []
    assert KEY_PEM.encode() in (tmp_path / "plot.png").read_bytes()
    assert outside.read_text() == KEY_PEM  # never followed out of the directory


class LeakyAPI:
    """A cluster whose pods log a key and a bearer token, and whose Envoy does not redact its config dump."""

    def __init__(self, context: str) -> None:
        self.context = context

    def events(self, namespace: str) -> list[str]:
        return [f"Normal Pulled pod/probe-1 with token: {TOKEN}"]

    def pods(self, namespace: str, selector: Any) -> list[Pod]:
        return [Pod("probe-1", "10.10.0.5", "node", True, {"app": "probe"})]

    def logs(self, namespace: str, pod: str, container: str, previous: bool = False) -> str:
        return f"starting\n{KEY_PEM}\nGET / Authorization: Bearer {TOKEN}\n"

    def exec(self, namespace: str, pod: str, container: str, command: Sequence[str]) -> str:
        return ENVOY_DUMP_UNREDACTED


class KindRunner(Runner):
    """``kind export logs`` writes a node's kubeconfig and kubelet log; istioctl prints a token."""

    def run(self, argv: Sequence[str], stdin: str | None = None, timeout_s: float = 600.0) -> Result:
        if list(argv[:3]) == ["kind", "export", "logs"]:
            folder = Path(argv[3]) / "cluster1-control-plane"
            folder.mkdir(parents=True)
            (folder / "kubeconfig").write_text(KUBECONFIG)
            (folder / "kubelet.log").write_text(f"I1129 started\n{KEY_PEM}")
            return Result(0, "", "")
        return Result(0, f"cluster1 synced token: {TOKEN}\n", "")


def _written(dest: Path) -> dict[Path, str]:
    return {p: p.read_text() for p in dest.rglob("*") if p.is_file()}


def test_existing_provider_diagnostics_hold_no_secrets(tmp_path: Path) -> None:
    config = build_config(provider="existing", topology="multi-primary", contexts=["a", "b"])
    provider = ExistingProvider(config, load_topology("multi-primary"), api_factory=LeakyAPI)  # type: ignore[arg-type]
    collect_diagnostics(provider, tmp_path / "diag", ["meshconf-check-1"])
    written = _written(tmp_path / "diag")
    assert any(p.name == "config_dump.json" for p in written) and any(p.name == "probe.log" for p in written)
    assert {str(p): _leaks(text) for p, text in written.items() if _leaks(text)} == {}


def test_kind_provider_diagnostics_hold_no_secrets(tmp_path: Path) -> None:
    config = build_config(provider="kind", topology="multi-primary", istio_version="1.28.0")
    topology = load_topology("multi-primary")
    provider = KindProvider(config, topology, run_dir=tmp_path / "run", runner=KindRunner())
    provider._apis = {name: LeakyAPI(name) for name in topology.cluster_names}  # type: ignore[misc]
    collect_diagnostics(provider, tmp_path / "diag", ["meshconf-check-1"])
    written = _written(tmp_path / "diag")
    assert any(p.name == "kubelet.log" for p in written) and any(p.name == "remote-clusters.txt" for p in written)
    assert {str(p): _leaks(text) for p, text in written.items() if _leaks(text)} == {}
