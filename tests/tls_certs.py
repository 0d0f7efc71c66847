"""Certificates made at test time for the TLS tests (``cryptography``): a CA, server and client
certificates it issues, expired or not yet valid ones, keys that match nothing.

``CA(folder, "name")`` writes ``name-ca.crt`` and issues: ``ca.server(["a.example", ...])``,
``ca.client("alice")``, each written as PEM files and returned as ``Issued(cert, key)`` paths;
``ca.intermediate("sub")`` is a CA it issues (whose certificates are written with the chain of
intermediates up to the root, the root left out).
The fixture ``certs`` (tests/conftest.py) gives a ``CertFactory`` in the test's temp folder.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_NOW = datetime.datetime.now(datetime.UTC)


def _key(kind: str = "ec"):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@dataclass
class Issued:
    """A certificate and its key, as PEM files (``cert`` may hold the chain)."""

    cert: Path
    key: Path
    name: str


class CA:
    """A certificate authority made now, written to ``folder/NAME-ca.crt``."""

    def __init__(
        self, folder: Path, name: str = "test", parent: CA | None = None, days: float = 30
    ) -> None:
        self.folder = folder
        self.name = name
        self.parent = parent
        self.key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        self.subject = subject
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(parent.subject if parent else subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOW - datetime.timedelta(days=1))
            .not_valid_after(_NOW + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(parent.key if parent else self.key, hashes.SHA256())
        )
        self.path = folder / f"{name}-ca.crt"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _issue(
        self,
        file: str,
        common_name: str,
        sans: list[x509.GeneralName],
        usage,
        days: tuple[float, float],
        kind: str,
        crl_url: str | None = None,
    ) -> Issued:
        key = _key(kind)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOW + datetime.timedelta(days=days[0]))
            .not_valid_after(_NOW + datetime.timedelta(days=days[1]))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            cert = cert.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if crl_url:
            point = x509.DistributionPoint(
                [x509.UniformResourceIdentifier(crl_url)], None, None, None
            )
            cert = cert.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        cert = cert.sign(self.key, hashes.SHA256())
        cert_path = self.folder / f"{file}.crt"
        pem = cert.public_bytes(serialization.Encoding.PEM)
        ca = self
        while ca.parent is not None:  # the chain: the intermediate CAs after the certificate
            pem += ca.cert.public_bytes(serialization.Encoding.PEM)
            ca = ca.parent
        cert_path.write_bytes(pem)
        return Issued(cert_path, _write_key(self.folder / f"{file}.key", key), common_name)

    def server(
        self,
        names: list[str],
        file: str | None = None,
        days: tuple[float, float] = (-1, 30),
        kind: str = "ec",
        crl_url: str | None = None,
    ) -> Issued:
        """A server certificate for ``names`` (and 127.0.0.1); ``days``: (not before, not
        after) from now, in days (``(-10, -1)``: expired); ``crl_url``: a CRL distribution
        point to name."""
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        return self._issue(
            file or names[0].replace("*", "star"),
            names[0],
            sans,
            ExtendedKeyUsageOID.SERVER_AUTH,
            days,
            kind,
            crl_url,
        )

    def intermediate(self, name: str) -> CA:
        """A CA this one issues: what it issues is written with the chain (the certificate,
        then the intermediate's)."""
        return CA(self.folder, name, parent=self)

    def client(
        self, name: str, file: str | None = None, days: tuple[float, float] = (-1, 30)
    ) -> Issued:
        """A client certificate with common name ``name``; ``days`` as for ``server``."""
        return self._issue(
            file or f"client-{name}", name, [], ExtendedKeyUsageOID.CLIENT_AUTH, days, "ec"
        )


def stray_key(folder: Path, name: str = "stray") -> Path:
    """A private key that belongs to no certificate."""
    return _write_key(folder / f"{name}.key", _key())


class CertFactory:
    """Certificates in one folder: ``ca(name)`` makes (and keeps) a CA by name."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._cas: dict[str, CA] = {}

    def ca(self, name: str = "test") -> CA:
        if name not in self._cas:
            self._cas[name] = CA(self.folder, name)
        return self._cas[name]

    def stray_key(self, name: str = "stray") -> Path:
        return stray_key(self.folder, name)
