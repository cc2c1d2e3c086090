import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from conformance.certs import MeshCA, RootStep, spiffe_id


def _load(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def test_plugin_ca_layout_and_key_modes(tmp_path: Path) -> None:
    ca = MeshCA.create(tmp_path)
    intermediate = ca.intermediate("cluster1")
    assert set(intermediate.plugin_files()) == {"ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"}
    for key_file in (tmp_path / "root-key.pem", tmp_path / "cluster1" / "ca-key.pem"):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    chain = _load(intermediate.chain_pem)
    root = _load(ca.root_pem)[0]
    assert chain[1] == root
    chain[0].verify_directly_issued_by(root)
    assert chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # the same intermediate comes back from disk
    assert MeshCA.load(tmp_path).intermediate("cluster1").cert_pem == intermediate.cert_pem


def test_workload_cert_is_an_istio_identity(tmp_path: Path) -> None:
    ca = MeshCA.create(tmp_path)
    intermediate = ca.intermediate("cluster2")
    cert = intermediate.issue("cluster.local", "ns1", "frontend", ttl=dt.timedelta(minutes=10))
    leaf, issuer = _load(cert.chain_pem)
    assert leaf.subject == x509.Name([])
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/ns1/sa/frontend"]
    assert len(list(sans)) == 1
    leaf.verify_directly_issued_by(issuer)
    issuer.verify_directly_issued_by(_load(ca.root_pem)[0])
    lifetime = leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=9) < lifetime <= dt.timedelta(minutes=10)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert cert.serial == leaf.serial_number
    assert cert.uri == spiffe_id("cluster.local", "ns1", "frontend")


def test_clusters_get_distinct_intermediates(tmp_path: Path) -> None:
    ca = MeshCA.create(tmp_path)
    assert ca.intermediate("cluster1").cert_pem != ca.intermediate("cluster2").cert_pem


def test_root_migration_follows_istios_three_steps(tmp_path: Path) -> None:
    """tests/integration/security/cacert_rotation: combined root, intermediates of the new root, new root alone."""
    ca = MeshCA.create(tmp_path)
    old_root = _load(ca.root_pem)[0]
    first = ca.intermediate("cluster1")

    step1 = ca.migrate(RootStep.COMBINED_ROOT)
    new_root = _load(step1.new_root)[0]
    assert _load(step1.old_root) == [old_root] and new_root != old_root
    assert _load(ca.trust_bundle) == [old_root, new_root]
    combined = ca.intermediate("cluster1")
    assert combined.cert_pem == first.cert_pem  # the intermediates stay
    assert _load(combined.plugin_files()["root-cert.pem"]) == [old_root, new_root]
    assert stat.S_IMODE((tmp_path / "migration" / "new-root-key.pem").stat().st_mode) == 0o600
    assert ca.migrate(RootStep.COMBINED_ROOT).new_root == step1.new_root  # taken once

    ca.migrate(RootStep.NEW_INTERMEDIATES)
    second = ca.intermediate("cluster1")
    assert second.cert_pem != first.cert_pem
    _load(second.cert_pem)[0].verify_directly_issued_by(new_root)
    assert _load(second.chain_pem)[1] == new_root
    assert _load(second.plugin_files()["root-cert.pem"]) == [old_root, new_root]
    leaf = second.issue("cluster.local", "ns1", "sa1")
    assert _load(leaf.chain_pem)[1] == _load(second.cert_pem)[0]

    step3 = ca.migrate(RootStep.OLD_ROOT_REMOVED)
    assert _load(step3.bundle) == [new_root]
    assert _load(ca.intermediate("cluster1").plugin_files()["root-cert.pem"]) == [new_root]
    reloaded = MeshCA.load(tmp_path)  # the state is on disk, as the kind provider reads it back
    assert reloaded.trust_bundle == ca.trust_bundle and reloaded.root_pem == step1.new_root


def test_root_migration_steps_come_in_order(tmp_path: Path) -> None:
    ca = MeshCA.create(tmp_path)
    with pytest.raises(ValueError, match="needs step combined-root"):
        ca.migrate(RootStep.NEW_INTERMEDIATES)
    ca.migrate(RootStep.COMBINED_ROOT)
    with pytest.raises(ValueError, match="needs step new-intermediates"):
        ca.migrate(RootStep.OLD_ROOT_REMOVED)
