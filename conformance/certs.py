"""The mesh's identities: one shared root CA, one intermediate CA per cluster, short-lived workload certs.

This is Istio's plug-in CA layout (``cacerts`` secret: ``ca-cert.pem``, ``ca-key.pem``, ``root-cert.pem``,
``cert-chain.pem``), used by the kind provider as that secret and by the local mesh to sign its workloads.
Workload certificates have an empty subject and exactly one URI SAN, ``spiffe://<trust domain>/ns/<ns>/sa/<sa>``,
like the ones istiod issues. Keys are ECDSA P-256 and every key file is written 0600.

The trust bundle (``root-cert.pem``, what every workload trusts) can hold several roots, so the root can be
replaced the way Istio's plug-in CA root rotation does it (tests/integration/security/cacert_rotation: the
``cacerts`` files go from ``root-cert.pem`` to ``root-cert-combined.pem``, then to the ``-alt`` intermediate
signed by the new root, then to ``root-cert-alt.pem`` alone; samples/certs/README.md describes the files):

1. :attr:`RootStep.COMBINED_ROOT`: a new root is made and the bundle holds the old and the new one; the
   intermediates (signed by the old root) stay;
2. :attr:`RootStep.NEW_INTERMEDIATES`: every cluster gets a new intermediate signed by the new root, the bundle
   still holds both;
3. :attr:`RootStep.OLD_ROOT_REMOVED`: the bundle holds the new root only.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["IntermediateCA", "MeshCA", "RootStep", "TrustRoots", "WorkloadCert", "spiffe_id", "write_private"]

ROOT_TTL = dt.timedelta(days=3650)
INTERMEDIATE_TTL = dt.timedelta(days=365)
DEFAULT_WORKLOAD_TTL = dt.timedelta(hours=1)
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock skew, as istiod does


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """Istio's workload identity for a service account."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file with mode 0600 from the first byte (never world-readable, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


class RootStep(StrEnum):
    """The steps of Istio's plug-in CA root migration, in order (see the module docstring)."""

    COMBINED_ROOT = "combined-root"
    NEW_INTERMEDIATES = "new-intermediates"
    OLD_ROOT_REMOVED = "old-root-removed"


@dataclass(frozen=True)
class TrustRoots:
    """The two roots of a root migration (certificates only, no keys)."""

    old_root: bytes
    """PEM of the root the mesh started with."""
    new_root: bytes
    """PEM of the root it moves to."""
    bundle: bytes
    """PEM of every root the mesh trusts after the step (``root-cert.pem``)."""


@dataclass(frozen=True)
class WorkloadCert:
    chain_pem: bytes
    """The workload certificate followed by its cluster's intermediate."""
    key_pem: bytes
    root_pem: bytes
    serial: int
    not_after: dt.datetime
    uri: str


@dataclass(frozen=True)
class IntermediateCA:
    cluster: str
    cert_pem: bytes
    key_pem: bytes
    root_pem: bytes
    """The root that signed this intermediate."""
    bundle_pem: bytes = b""
    """Every root the mesh trusts (``root-cert.pem``); empty: only ``root_pem``."""

    @property
    def chain_pem(self) -> bytes:
        """``cert-chain.pem`` of Istio's plug-in CA: the intermediate, then the root that signed it."""
        return self.cert_pem + self.root_pem

    @property
    def trust_bundle(self) -> bytes:
        return self.bundle_pem or self.root_pem

    def plugin_files(self) -> dict[str, bytes]:
        """The four files of Istio's ``cacerts`` secret."""
        return {
            "ca-cert.pem": self.cert_pem,
            "ca-key.pem": self.key_pem,
            "root-cert.pem": self.trust_bundle,
            "cert-chain.pem": self.chain_pem,
        }

    def issue(
        self,
        trust_domain: str,
        namespace: str,
        service_account: str,
        ttl: dt.timedelta = DEFAULT_WORKLOAD_TTL,
    ) -> WorkloadCert:
        """Sign a workload certificate: empty subject, one URI SAN, client and server auth."""
        ca_cert = x509.load_pem_x509_certificate(self.cert_pem)
        ca_key = serialization.load_pem_private_key(self.key_pem, password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        uri = spiffe_id(trust_domain, namespace, service_account)
        now = dt.datetime.now(dt.UTC)
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + ttl)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_encipherment=True, content_commitment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return WorkloadCert(
            chain_pem=_pem(cert) + self.cert_pem,
            key_pem=_key_pem(key),
            root_pem=self.trust_bundle,
            serial=serial,
            not_after=now + ttl,
            uri=uri,
        )


class MeshCA:
    """A root (and, during a root migration, a second one) and one intermediate per cluster, kept on disk in
    ``directory`` (keys 0600): ``root-cert.pem`` / ``root-key.pem`` sign the intermediates, ``trust-bundle.pem``
    (when present) is every root the mesh trusts, ``<cluster>/`` holds each cluster's intermediate."""

    def __init__(self, directory: Path, root_pem: bytes, root_key_pem: bytes, bundle_pem: bytes | None = None) -> None:
        self.directory = directory
        self.root_pem = root_pem
        """The root that signs the intermediates."""
        self._root_key_pem = root_key_pem
        self._bundle_pem = bundle_pem

    @property
    def trust_bundle(self) -> bytes:
        """Every root the mesh trusts, PEM concatenated (Istio's ``root-cert.pem``)."""
        return self._bundle_pem or self.root_pem

    @classmethod
    def create(cls, directory: Path, org: str = "meshconf") -> MeshCA:
        """Create a new root CA under ``directory`` (``root-cert.pem``, ``root-key.pem``)."""
        cert_pem, key_pem = _new_root(org, "Root CA")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "root-cert.pem").write_bytes(cert_pem)
        write_private(directory / "root-key.pem", key_pem)
        return cls(directory, cert_pem, key_pem)

    @classmethod
    def load(cls, directory: Path) -> MeshCA:
        bundle = directory / "trust-bundle.pem"
        return cls(directory, (directory / "root-cert.pem").read_bytes(), (directory / "root-key.pem").read_bytes(),
                   bundle.read_bytes() if bundle.is_file() else None)

    def intermediate(self, cluster: str) -> IntermediateCA:
        """The cluster's intermediate CA, created on first use and kept in ``<directory>/<cluster>/``."""
        folder = self.directory / cluster
        if (folder / "ca-key.pem").exists():
            return IntermediateCA(cluster, (folder / "ca-cert.pem").read_bytes(), (folder / "ca-key.pem").read_bytes(),
                                  self.root_pem, self.trust_bundle)
        root_cert = x509.load_pem_x509_certificate(self.root_pem)
        root_key = serialization.load_pem_private_key(self._root_key_pem, password=None)
        assert isinstance(root_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshconf"),
                             x509.NameAttribute(NameOID.COMMON_NAME, "Intermediate CA"),
                             x509.NameAttribute(NameOID.LOCALITY_NAME, cluster)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            _ca_builder(subject, root_cert.subject, key.public_key(), now, INTERMEDIATE_TTL, path_length=0)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256())
        )
        ca = IntermediateCA(cluster, _pem(cert), _key_pem(key), self.root_pem, self.trust_bundle)
        folder.mkdir(parents=True, exist_ok=True)
        for file_name, data in ca.plugin_files().items():
            if file_name == "ca-key.pem":
                write_private(folder / file_name, data)
            else:
                (folder / file_name).write_bytes(data)
        return ca

    # -- root migration --------------------------------------------------------------------------------------

    def migrate(self, step: RootStep) -> TrustRoots:
        """Take one step of the root migration (see the module docstring); a step already taken changes nothing.

        Raises ValueError when ``step`` comes before the steps it needs."""
        migration = self.directory / "migration"
        if step is RootStep.COMBINED_ROOT:
            if not (migration / "new-root-cert.pem").is_file():
                cert_pem, key_pem = _new_root("meshconf", "Root CA 2")
                migration.mkdir(parents=True, exist_ok=True)
                (migration / "old-root-cert.pem").write_bytes(self.root_pem)
                (migration / "new-root-cert.pem").write_bytes(cert_pem)
                write_private(migration / "new-root-key.pem", key_pem)
                self._set_bundle(self.root_pem + cert_pem)
        elif not (migration / "new-root-cert.pem").is_file():
            raise ValueError(f"root migration step {step} needs step {RootStep.COMBINED_ROOT} first")
        old, new = (migration / "old-root-cert.pem").read_bytes(), (migration / "new-root-cert.pem").read_bytes()
        if step is RootStep.NEW_INTERMEDIATES and self.root_pem != new:
            self.root_pem, self._root_key_pem = new, (migration / "new-root-key.pem").read_bytes()
            (self.directory / "root-cert.pem").write_bytes(new)
            write_private(self.directory / "root-key.pem", self._root_key_pem)
            for folder in [p for p in self.directory.iterdir() if (p / "ca-key.pem").is_file()]:
                shutil.rmtree(folder)  # re-created, signed by the new root, on next use
        if step is RootStep.OLD_ROOT_REMOVED:
            if self.root_pem != new:
                raise ValueError(f"root migration step {step} needs step {RootStep.NEW_INTERMEDIATES} first")
            self._set_bundle(new)
        return TrustRoots(old, new, self.trust_bundle)

    def _set_bundle(self, bundle: bytes) -> None:
        self._bundle_pem = bundle
        (self.directory / "trust-bundle.pem").write_bytes(bundle)
        for folder in [p for p in self.directory.iterdir() if (p / "root-cert.pem").is_file() and p.is_dir()]:
            (folder / "root-cert.pem").write_bytes(bundle)


def _new_root(org: str, common_name: str) -> tuple[bytes, bytes]:
    """A self-signed root CA certificate and its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        _ca_builder(name, name, key.public_key(), now, ROOT_TTL, path_length=None)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem(cert), _key_pem(key)


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: dt.datetime,
    ttl: dt.timedelta,
    path_length: int | None,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, content_commitment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
