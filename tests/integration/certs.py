"""Throw-away certificate authorities and certificates for TLS tests, made with ``cryptography``.

``Authority.create(directory, name)`` makes a self-signed CA; ``authority.issue(...)`` signs a
server certificate (with IP and DNS subject alternative names) or a client certificate, and
writes PEM files the node (Python's ssl) and a Kafka broker (``ssl.keystore.type=PEM``) read.
Keys are P-256 ECDSA in PKCS#8. A client key may be encrypted (PBES2, which Python's ssl reads);
a broker's must not be: Kafka's PEM key store on Java 17 fails on PBES2 ("PBES2 SecretKeyFactory
not available"), and ``cryptography`` writes no older PKCS#8 scheme.

What it must not do: anything but write files under the directory it is given.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 2
_CA_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its key as PEM files; ``bundle`` holds the key then the chain."""

    cert: Path
    key: Path
    bundle: Path
    key_password: str | None


@dataclass(frozen=True, slots=True)
class Authority:
    """A certificate authority whose certificate is in ``cert`` (the trust store to give out)."""

    name: str
    cert: Path
    directory: Path
    _key: ec.EllipticCurvePrivateKey
    _certificate: x509.Certificate

    @classmethod
    def create(cls, directory: Path, name: str) -> Authority:
        """Make a self-signed CA called ``name``; write its certificate to ``DIRECTORY/NAME.pem``."""
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = (
            _builder(subject, subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        path = directory / f"{name}.pem"
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(name, path, directory, key, certificate)

    def issue(
        self,
        name: str,
        *,
        server: bool = False,
        hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
        key_password: str | None = None,
    ) -> Issued:
        """Sign a certificate for ``name`` (its CN); a server one names ``hosts`` as SANs.

        Writes ``NAME.crt`` (leaf then CA), ``NAME.key`` (PKCS#8, encrypted with
        ``key_password`` if given) and ``NAME.bundle.pem`` (key then chain, Kafka's PEM key store).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            _builder(subject, self._certificate.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_alternative_name(host) for host in hosts]), False
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        chain = b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (certificate, self._certificate)
        )
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(key_password.encode())
            if key_password
            else serialization.NoEncryption()
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        cert, key_path = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        bundle = self.directory / f"{name}.bundle.pem"
        cert.write_bytes(chain)
        key_path.write_bytes(key_pem)
        bundle.write_bytes(key_pem + chain)
        return Issued(cert, key_path, bundle, key_password)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def _alternative_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
