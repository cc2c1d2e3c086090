"""The mesh's identities: one shared root CA, one intermediate CA per cluster, short-lived workload certs.

This is Istio's plug-in CA layout (``cacerts`` secret: ``ca-cert.pem``, ``ca-key.pem``, ``root-cert.pem``,
``cert-chain.pem``), used by the kind provider as that secret and by the local mesh to sign its workloads.
Workload certificates have an empty subject and exactly one URI SAN, ``spiffe://<trust domain>/ns/<ns>/sa/<sa>``,
like the ones istiod issues. Keys are ECDSA P-256 and every key file is written 0600.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["IntermediateCA", "MeshCA", "WorkloadCert", "spiffe_id", "write_private"]

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

    @property
    def chain_pem(self) -> bytes:
        """``cert-chain.pem`` of Istio's plug-in CA: the intermediate, then the root."""
        return self.cert_pem + self.root_pem

    def plugin_files(self) -> dict[str, bytes]:
        """The four files of Istio's ``cacerts`` secret."""
        return {
            "ca-cert.pem": self.cert_pem,
            "ca-key.pem": self.key_pem,
            "root-cert.pem": self.root_pem,
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
            root_pem=self.root_pem,
            serial=serial,
            not_after=now + ttl,
            uri=uri,
        )


class MeshCA:
    """A shared root and one intermediate per cluster, kept on disk in ``directory`` (keys 0600)."""

    def __init__(self, directory: Path, root_pem: bytes, root_key_pem: bytes) -> None:
        self.directory = directory
        self.root_pem = root_pem
        self._root_key_pem = root_key_pem

    @classmethod
    def create(cls, directory: Path, org: str = "meshconf") -> MeshCA:
        """Create a new root CA under ``directory`` (``root-cert.pem``, ``root-key.pem``)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                          x509.NameAttribute(NameOID.COMMON_NAME, "Root CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            _ca_builder(name, name, key.public_key(), now, ROOT_TTL, path_length=None)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "root-cert.pem").write_bytes(_pem(cert))
        write_private(directory / "root-key.pem", _key_pem(key))
        return cls(directory, _pem(cert), _key_pem(key))

    @classmethod
    def load(cls, directory: Path) -> MeshCA:
        return cls(directory, (directory / "root-cert.pem").read_bytes(), (directory / "root-key.pem").read_bytes())

    def intermediate(self, cluster: str) -> IntermediateCA:
        """The cluster's intermediate CA, created on first use and kept in ``<directory>/<cluster>/``."""
        folder = self.directory / cluster
        if (folder / "ca-key.pem").exists():
            return IntermediateCA(
                cluster, (folder / "ca-cert.pem").read_bytes(), (folder / "ca-key.pem").read_bytes(), self.root_pem
            )
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
        ca = IntermediateCA(cluster, _pem(cert), _key_pem(key), self.root_pem)
        folder.mkdir(parents=True, exist_ok=True)
        for file_name, data in ca.plugin_files().items():
            if file_name == "ca-key.pem":
                write_private(folder / file_name, data)
            else:
                (folder / file_name).write_bytes(data)
        return ca


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
