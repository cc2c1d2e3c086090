"""No secrets anywhere in out/: a check fails on the local mesh (so diagnostics are written: Envoy config dumps,
certs, stats, process logs), then every file under out/ is scanned for the run's private keys (PEM blocks,
the base64 of their DER and of their PEM, as SDS carries them), the mesh's API token, and kubeconfig
credentials, and the remote secrets' API server tokens. Envoy's config dump must keep showing inline keys as
``[redacted]``. Workload keys never touch the
disk: they reach Envoy only over its ADS stream (SDS), so the run directory must not hold one."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import run_meshconf

pytestmark = pytest.mark.integration

PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
KUBECONFIG = re.compile(r"client-key-data|client-certificate-data|\bkind:\s*Config\b")


def run_secrets(run_dir: Path) -> dict[str, str]:
    """Every secret of a local mesh run, each as the strings that would betray it."""
    found: dict[str, str] = {"API token": json.loads((run_dir / "request.json").read_text())["token"]}
    pems: list[bytes] = []
    for path in run_dir.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if PEM_KEY.search(data.decode(errors="replace")):
            pems.append(data)
        assert b'"private_key"' not in data, f"{path} holds a workload key (SDS must only be served over ADS)"
    assert len(pems) >= 3, "expected the CA keys: the root and one intermediate per cluster"
    remote_secrets = sorted(run_dir.glob("remote-secrets/*/istio-remote-secret-*.json"))
    assert remote_secrets, "expected each primary's remote secrets"
    for path in remote_secrets:
        found[f"token of {path.parent.name}/{path.name}"] = json.loads(path.read_text())["token"]
    for n, pem in enumerate(pems):
        key = serialization.load_pem_private_key(pem, password=None)
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        body = "".join(line for line in pem.decode().splitlines() if not line.startswith("-----"))
        found[f"key {n}: PEM body"] = body[10:74]
        found[f"key {n}: base64 of its PKCS#8 DER"] = base64.b64encode(der).decode()[10:74]
        found[f"key {n}: base64 of its PEM"] = base64.b64encode(pem).decode()[64:128]
    return found


def test_nothing_under_out_holds_a_secret(tmp_path: Path) -> None:
    out, runs = tmp_path / "out", tmp_path / "runs"
    env = {"MESHCONF_STATE_DIR": str(runs)}
    done = run_meshconf("run", "--out", str(out), "--defect", "ignore-authz-allow", "-k",
                        "test_authz_allow_principal", "--timeout", "consistency_s=4", "--keep", env=env)
    run_dir = next(runs.glob("local-*"))
    try:
        assert done.returncode == 1, done.stdout[-3000:]
        secrets = run_secrets(run_dir)
        files = [p for p in out.rglob("*") if p.is_file()]
        dumps = [p for p in files if p.name == "config_dump.json"]
        assert dumps and any(p.name == "certs.json" for p in files) and any(p.suffix == ".log" for p in files)
        for path in files:
            text = path.read_bytes().decode(errors="replace")
            assert not PEM_KEY.search(text), f"{path} holds a PEM private key"
            assert not KUBECONFIG.search(text), f"{path} holds kubeconfig credentials"
            leaked = [what for what, value in secrets.items() if value in text]
            assert not leaked, f"{path} holds {leaked}"
        for dump in dumps:  # Envoy redacts the keys it serves: keep it so
            secrets_dump = next(c for c in json.loads(dump.read_text())["configs"]
                                if c["@type"].endswith("SecretsConfigDump"))
            served = [s["secret"]["tls_certificate"] for s in secrets_dump.get("dynamic_active_secrets", [])
                      if "tls_certificate" in s["secret"]]  # the other one is ROOTCA, the trust bundle
            assert served
            for certificate in served:
                assert base64.b64decode(certificate["private_key"]["inline_bytes"]) == b"[redacted]"
    finally:
        assert run_meshconf("down", str(run_dir), env=env).returncode == 0
