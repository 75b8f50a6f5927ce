"""The cryptography behind ``node.core.provenance``'s Signer and Verifier seam.

- ``ed25519`` (the default): the ``cryptography`` package; private keys as PKCS#8 PEM files.
- ``sm2`` (optional extra ``sm``: ``gmssl``): SM2 signatures with SM3 (GB/T 32918, the signer's
  identity hashed in as ``Z``, default id ``1234567812345678``). gmssl is pure Python (a sign
  or verify costs milliseconds, amortised like Ed25519 by the Merkle tree) and draws its nonce
  from ``random``; this module gives it a nonce from ``secrets`` instead, and checks ``r, s`` lie
  in ``[1, n-1]`` before gmssl verifies. Private keys are a PEM-like text file holding the
  32-byte scalar in hex (``-----BEGIN SM2 PRIVATE KEY-----``).

A key id is the first 16 hex digits of SHA-256(algorithm, ":", raw public key)
(``node.core.trust.key_id_of``), so the same key always has the same id. Loading a key that is
missing, unreadable or not of the configured algorithm raises ConfigError naming
``provenance.key_file``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from node.core.provenance import Verifier
from node.core.trust import key_id_of
from node.errors import ConfigError

KEY_FIELD = "provenance.key_file"
_SM2_BEGIN = "-----BEGIN SM2 PRIVATE KEY-----"
_SM2_END = "-----END SM2 PRIVATE KEY-----"
_SM2_N = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123", 16)


@dataclass(frozen=True, slots=True)
class Ed25519Signer:
    """Signs with one Ed25519 private key."""

    private_key: Ed25519PrivateKey
    key_id: str
    public_key: bytes
    algorithm: str = "ed25519"

    @classmethod
    def of(cls, private_key: Ed25519PrivateKey) -> Ed25519Signer:
        """Wrap a private key, deriving its public key and key id."""
        public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(private_key, key_id_of("ed25519", public), public)

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte signature of ``message``."""
        return self.private_key.sign(message)


class Ed25519Verifier:
    """Verifies Ed25519 signatures, keeping each parsed public key."""

    def __init__(self) -> None:
        self._keys: dict[bytes, Ed25519PublicKey] = {}

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Tell whether ``signature`` is ``message`` signed by ``public_key`` (32 raw bytes)."""
        key = self._keys.get(public_key)
        try:
            if key is None:
                if len(self._keys) >= 1024:
                    self._keys.clear()
                key = self._keys[public_key] = Ed25519PublicKey.from_public_bytes(public_key)
            key.verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True, slots=True)
class Sm2Signer:
    """Signs with one SM2 private key (SM2 with SM3, signature ``r || s``, 64 bytes)."""

    scalar: int
    key_id: str
    public_key: bytes
    algorithm: str = "sm2"

    @classmethod
    def of(cls, scalar: int) -> Sm2Signer:
        """Wrap a private scalar, deriving its public key (``x || y``, 64 bytes) and key id."""
        from gmssl import sm2  # noqa: PLC0415 - an optional extra

        if not 1 <= scalar < _SM2_N - 1:
            raise ValueError("SM2 private key out of range")
        crypt = sm2.CryptSM2(private_key=f"{scalar:064x}", public_key="")
        public = bytes.fromhex(crypt._kg(scalar, sm2.default_ecc_table["g"]))
        return cls(scalar, key_id_of("sm2", public), public)

    def sign(self, message: bytes) -> bytes:
        """Return ``r || s`` of ``message``, with a nonce from ``secrets``."""
        from gmssl import sm2  # noqa: PLC0415 - an optional extra

        crypt = sm2.CryptSM2(private_key=f"{self.scalar:064x}", public_key=self.public_key.hex())
        while True:
            nonce = f"{secrets.randbelow(_SM2_N - 1) + 1:064x}"
            signature = crypt.sign_with_sm3(message, nonce)
            if signature is not None:
                return bytes.fromhex(signature)


class Sm2Verifier:
    """Verifies SM2-with-SM3 signatures (``r || s``)."""

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Tell whether ``signature`` is ``message`` signed by ``public_key`` (``x || y``)."""
        from gmssl import sm2  # noqa: PLC0415 - an optional extra

        if len(signature) != 64 or len(public_key) != 64:
            return False
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        if not (0 < r < _SM2_N and 0 < s < _SM2_N):
            return False
        crypt = sm2.CryptSM2(private_key="", public_key=public_key.hex())
        try:
            return bool(crypt.verify_with_sm3(signature.hex(), message))
        except (ValueError, TypeError, AttributeError):
            return False


KeyPair = Ed25519Signer | Sm2Signer
"""A loaded private key: a Signer that also knows its public key (to publish it)."""


def sm2_available() -> bool:
    """Tell whether the optional ``gmssl`` package is installed."""
    try:
        import gmssl.sm2  # noqa: F401, PLC0415 - probing the optional extra
    except ImportError:
        return False
    return True


def verifiers() -> Mapping[str, Verifier]:
    """Every verifier this installation has, by algorithm."""
    found: dict[str, Verifier] = {"ed25519": Ed25519Verifier()}
    if sm2_available():
        found["sm2"] = Sm2Verifier()
    return found


def new_key_text(algorithm: str) -> bytes:
    """Generate a private key of ``algorithm`` as the text of a key file."""
    if algorithm == "ed25519":
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    if algorithm == "sm2":
        if not sm2_available():
            raise ValueError("sm2 needs the optional extra: pip install 'exchange-node[sm]'")
        scalar = secrets.randbelow(_SM2_N - 2) + 1
        return f"{_SM2_BEGIN}\n{scalar:064x}\n{_SM2_END}\n".encode()
    raise ValueError(f"unknown algorithm {algorithm!r} (expected ed25519 or sm2)")


def write_new_key(path: Path, algorithm: str) -> KeyPair:
    """Write a new private key to ``path`` (mode 0600, never over an existing file)."""
    text = new_key_text(algorithm)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(text)
    return parse_key(text, algorithm, str(path))


def load_signer(path: Path, algorithm: str) -> KeyPair:
    """Read the private key file; raise ConfigError naming ``provenance.key_file``."""
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ConfigError(KEY_FIELD, f"cannot read {path}: {error.strerror}") from None
    return parse_key(text, algorithm, str(path))


def parse_key(text: bytes, algorithm: str, where: str) -> KeyPair:
    """Parse a private key file's text; raise ConfigError naming ``provenance.key_file``."""
    if algorithm == "sm2":
        if not sm2_available():
            raise ConfigError("provenance.algorithm", "sm2 needs the optional extra 'sm' (gmssl)")
        lines = text.decode("ascii", "replace").split()
        if len(lines) != 9 or " ".join(lines[:4]) != _SM2_BEGIN or len(lines[4]) != 64:
            raise ConfigError(KEY_FIELD, f"{where} is not an SM2 private key file")
        try:
            return Sm2Signer.of(int(lines[4], 16))
        except ValueError as error:
            raise ConfigError(KEY_FIELD, f"{where}: {error}") from None
    try:
        key = serialization.load_pem_private_key(text, password=None)
    except (ValueError, TypeError) as error:
        raise ConfigError(KEY_FIELD, f"{where} is not an unencrypted PEM private key") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(KEY_FIELD, f"{where} holds a {type(key).__name__}, not an Ed25519 key")
    return Ed25519Signer.of(key)
