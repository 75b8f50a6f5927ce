"""Signed provenance: what the entry node vouches for, the ``cx-prov`` header, signing and checking.

**What is signed.** The node where a record enters the exchange (a fresh record: empty hop path)
vouches for the envelope fields that never change along the cascade and for the payload:

- in: ``cx-id``, ``cx-resource``, ``cx-source-region``, ``cx-source-dept`` (who published what),
  ``cx-target`` (where it may go: the router reads it at every hop and nobody rewrites it),
  ``cx-grade`` and ``cx-sharing`` (lowering them would pass clearance checks), ``cx-created-ms``,
  ``cx-quality`` (the entry node's verdict, which later hops forward unchecked), ``cx-version``
  and ``cx-corrects`` (consumers keep the highest version of a record: an unsigned version would
  let anyone on the path replace it), each absent counting as absent, and the digest of the value
  bytes;
- out: ``cx-hops`` (every node appends to it), and every other header.

A record's leaf is ``H(0x00 || each field as 4-byte length + raw bytes (0xFFFFFFFF if absent) ||
H(value))`` with H = SHA-256 for Ed25519 keys, SM3 for SM2 keys. The leaves of one batch of fresh
records form a Merkle tree (``node.core.merkle``) and one signature covers
``DOMAIN || key id || signing time || leaf count || root``: one sign per batch, not per record.

**The header** ``cx-prov`` (binary, version 2; big-endian; version 1 signed fewer fields and is
refused, its domain ``...-v1`` never verifies as ``...-v2``)::

    u8 version | u8 n + key id (n ASCII bytes) | u64 signing time ms | u32 leaf index |
    u32 leaf count | u8 k + k 32-byte proof hashes | u16 m + signature (m bytes)

**Checking** (a record from another node: non-empty hop path, and every record on the link from
above): parse the header, find the key trusted for the record's source region at the signing
time (``node.core.trust``), recompute the leaf and fold the proof upwards. The first record of a
batch folds to the root and the signature is verified once; the nodes of its path are then
cached as verified under (public key, region, time, count, signature): the key that was actually
trusted, never the key id the header names. Every later record of that batch stops folding at
the first verified node it meets (about two hashes instead of log2(count)). A fold that reaches
another root must verify the signature over that root itself, so a forged leaf or proof never
borrows a verified one.

Pure: the cryptography sits behind ``Signer`` and ``Verifier`` (``node.signing``); no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from node.core.envelope import (
    CREATED_MS,
    GRADE,
    RECORD_ID,
    RESOURCE,
    SHARING,
    SOURCE_DEPT,
    SOURCE_REGION,
    TARGET,
)  # fmt: skip
from node.core.feedback import CORRECTS
from node.core.feedback import VERSION as CX_VERSION
from node.core.merkle import LEAF_PREFIX, Digest, climb, tree
from node.core.outcome import Delivered, Outcome, Reason, Refused
from node.core.quality import QUALITY_HEADER
from node.core.trust import TrustStore

PROVENANCE = "cx-prov"
VERSION = 2
DOMAIN = b"cx-provenance-root-v2\x00"
SIGNED_FIELDS = (
    RECORD_ID, RESOURCE, SOURCE_REGION, SOURCE_DEPT, TARGET, GRADE, SHARING, CREATED_MS,
    QUALITY_HEADER, CX_VERSION, CORRECTS,
)  # fmt: skip
_ABSENT = b"\xff\xff\xff\xff"
_SHORT = 256
_LENGTHS = tuple(size.to_bytes(4, "big") for size in range(_SHORT))
_FIXED = struct.Struct(">QIIB")  # signing time, leaf index, leaf count, proof length
HASH_SIZE = 32
MAX_LEAVES = 1 << 20


class Signer(Protocol):
    """Signs messages with one private key."""

    @property
    def key_id(self) -> str:
        """The id of the public key that verifies these signatures."""

    @property
    def algorithm(self) -> str:
        """``ed25519`` or ``sm2``."""

    def sign(self, message: bytes) -> bytes:
        """Return the signature of ``message``."""


class Verifier(Protocol):
    """Checks signatures of one algorithm."""

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Tell whether ``signature`` is ``message`` signed by the key ``public_key``."""


def _sha256(data: bytes, sha256: Callable[[bytes], Any] = hashlib.sha256) -> bytes:
    return sha256(data).digest()  # type: ignore[no-any-return]


def _sm3(data: bytes) -> bytes:
    return hashlib.new("sm3", data).digest()


DIGESTS: Mapping[str, Digest] = {"ed25519": _sha256, "sm2": _sm3}
"""The hash of the leaves and the tree, by signature algorithm."""


def leaf(headers: Mapping[str, bytes], value: bytes | None, digest: Digest) -> bytes:
    """Return the Merkle leaf of a record: its signed envelope fields and its value's digest."""
    get = headers.get
    parts = [LEAF_PREFIX]
    for name in SIGNED_FIELDS:
        field = get(name)
        if field is None:
            parts.append(_ABSENT)
        else:
            size = len(field)
            parts += (_LENGTHS[size] if size < _SHORT else size.to_bytes(4, "big"), field)
    parts.append(b"\x01" if value is None else b"\x00" + digest(value))
    return digest(b"".join(parts))


def signed_message(key_id: str, signed_ms: int, count: int, root: bytes) -> bytes:
    """Return the bytes one signature covers for a tree of ``count`` leaves."""
    key = key_id.encode("ascii")
    return DOMAIN + bytes((len(key),)) + key + struct.pack(">QI", signed_ms, count) + root


@dataclass(frozen=True, slots=True)
class Stamp:
    """A parsed ``cx-prov`` header."""

    key_id: str
    signed_ms: int
    index: int
    count: int
    proof: bytes
    """The proof hashes, concatenated (``hashes()`` splits them)."""
    signature: bytes

    def hashes(self) -> Iterator[bytes]:
        """Yield the proof hashes from the leaf upwards (lazily: a climb may stop early)."""
        proof = self.proof
        return (proof[i : i + HASH_SIZE] for i in range(0, len(proof), HASH_SIZE))

    def encode(self) -> bytes:
        """Render as the binary header value."""
        key = self.key_id.encode("ascii")
        return b"".join((
            bytes((VERSION, len(key))), key,
            _FIXED.pack(self.signed_ms, self.index, self.count, len(self.proof) // HASH_SIZE),
            self.proof,
            len(self.signature).to_bytes(2, "big"), self.signature,
        ))  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> Stamp:
        """Parse a header value; raise ValueError saying what is malformed."""
        if len(data) < 2 or data[0] != VERSION:
            raise ValueError(f"version {data[:1].hex() or 'missing'} is not {VERSION}")
        at = 2 + data[1]
        try:
            key_id = data[2:at].decode("ascii")
            signed_ms, index, count, proof_length = _FIXED.unpack_from(data, at)
        except (UnicodeDecodeError, struct.error):
            raise ValueError("truncated or non-ASCII key id") from None
        at += _FIXED.size
        end = at + proof_length * HASH_SIZE
        proof = data[at:end]
        if len(data) < end + 2:
            raise ValueError("truncated proof")
        size = int.from_bytes(data[end : end + 2], "big")
        signature = data[end + 2 :]
        if not key_id or len(signature) != size:
            raise ValueError("empty key id or truncated signature")
        return cls(key_id, signed_ms, index, count, proof, signature)


class Stamper:
    """Signs batches of fresh records: one Merkle tree and one signature per batch."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self._digest = DIGESTS[signer.algorithm]

    def stamp(
        self, records: Sequence[tuple[Mapping[str, bytes], bytes | None]], now_ms: int
    ) -> list[bytes]:
        """Return the ``cx-prov`` header value of each (headers, value), in order."""
        if not records:
            return []
        digest, signer = self._digest, self.signer
        leaves = [leaf(headers, value, digest) for headers, value in records]
        root, proofs = tree(leaves, digest)
        count = len(leaves)
        signature = signer.sign(signed_message(signer.key_id, now_ms, count, root))
        return [
            Stamp(signer.key_id, now_ms, index, count, b"".join(proof), signature).encode()
            for index, proof in enumerate(proofs)
        ]


Signed = tuple[bytes, str, int, int, bytes]
"""What a verified batch is known by: the public key and region it was trusted for, signing time,
leaf count, signature (never the key id a header names: ids are the signer's to choose)."""


class RootCache:
    """Verified trees: the nodes known to lie under a verified signature, per signed batch.

    Bounded twice, least recently used out: at most ``size`` trees and ``max_nodes`` nodes.
    """

    def __init__(self, size: int, max_nodes: int = 1 << 18) -> None:
        if size < 1:
            raise ValueError("the verified root cache holds at least one root")
        self.size = size
        self.max_nodes = max_nodes
        self.hits = 0
        self.misses = 0
        self._nodes = 0
        self._trees: OrderedDict[Signed, set[bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._trees)

    def nodes(self, signed: Signed) -> set[bytes] | None:
        """Return the verified nodes of the batch signed as ``signed`` (None: none here)."""
        found = self._trees.get(signed)
        if found is None:
            self.misses += 1
            return None
        self._trees.move_to_end(signed)
        self.hits += 1
        return found

    def add(self, signed: Signed, nodes: Sequence[bytes]) -> None:
        """Remember ``nodes`` as verified under ``signed``; forget the least recently used."""
        known = self._trees.setdefault(signed, set())
        self._trees.move_to_end(signed)
        before = len(known)
        known.update(nodes)
        self._nodes += len(known) - before
        while len(self._trees) > self.size or (
            self._nodes > self.max_nodes and len(self._trees) > 1
        ):
            _, dropped = self._trees.popitem(last=False)
            self._nodes -= len(dropped)


class Checker:
    """Checks the provenance of records that arrive from other nodes, against a trust store.

    ``require``: a record without ``cx-prov`` is refused (else it passes unchecked). The trust
    store is swapped whole (``swap``) when the shell reads new keys.
    """

    def __init__(
        self,
        trust: TrustStore,
        verifiers: Mapping[str, Verifier],
        *,
        require: bool,
        cache_size: int,
    ) -> None:
        self.trust = trust
        self.require = require
        self.cache = RootCache(cache_size)
        self._verifiers = verifiers

    def swap(self, trust: TrustStore) -> None:
        """Use ``trust`` from the next record on."""
        self.trust = trust

    def check(self, headers: Mapping[str, bytes], value: bytes | None) -> Refused | None:
        """Return why the record's provenance is refused, or None if it is vouched for."""
        data = headers.get(PROVENANCE)
        if data is None:
            return _refused("record carries no cx-prov signature") if self.require else None
        try:
            stamp = Stamp.decode(data)
        except ValueError as error:
            return _refused(f"header cx-prov is malformed: {error}")
        if not 0 < stamp.count <= MAX_LEAVES:
            return _refused(f"header cx-prov: leaf count {stamp.count} out of range")
        region = (headers.get(SOURCE_REGION) or b"").decode("ascii", "replace")
        key = self.trust.trusted(stamp.key_id, region, stamp.signed_ms)
        if isinstance(key, str):
            return _refused(key)
        digest = DIGESTS[key.algorithm]
        signed = (key.public_key, key.region, stamp.signed_ms, stamp.count, stamp.signature)
        known = self.cache.nodes(signed)
        record_leaf = leaf(headers, value, digest)
        climbed = climb(record_leaf, stamp.index, stamp.count, stamp.hashes(), digest, known or ())
        if climbed is None:
            return _refused("cx-prov inclusion proof does not fit its tree")
        path, reached = climbed
        if reached or (not path and known is not None and record_leaf in known):
            if len(path) > 1:  # below a node of this batch's verified tree: verified too
                self.cache.add(signed, path[:-1])
            return None
        root = path[-1] if path else record_leaf
        verifier = self._verifiers.get(key.algorithm)
        if verifier is None:
            return _refused(f"no verifier for {key.algorithm} here (key {stamp.key_id})")
        message = signed_message(stamp.key_id, stamp.signed_ms, stamp.count, root)
        if not verifier.verify(key.public_key, message, stamp.signature):
            return _refused(
                f"signature of key {stamp.key_id} does not match: envelope, payload, proof or "
                "signature altered"
            )
        self.cache.add(signed, path or [root])
        return None


def _refused(message: str) -> Refused:
    return Refused(Reason.PROVENANCE, message)


@dataclass(frozen=True, slots=True)
class Provenance:
    """What one link does about provenance: sign fresh records, check the others (None: not)."""

    stamper: Stamper | None
    checker: Checker | None


class _Seen(Protocol):
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...

    @property
    def value(self) -> bytes | None: ...


def vouch(
    provenance: Provenance | None,
    records: Sequence[_Seen],
    route_keys: Sequence[tuple[bytes | None, bytes | None]],
    outcomes: list[Outcome],
    *,
    now_ms: int,
    entry: bool,
    settled: Collection[int] = (),
) -> None:
    """Check records from other nodes (refusing in ``outcomes``); sign the fresh ones delivered.

    ``route_keys`` holds each record's ``cx-target`` and ``cx-hops`` values (hops empty or None:
    fresh). With ``entry`` (the link from below) records with a hop path are checked and every
    fresh record that is delivered gets a ``cx-prov`` annotation, all of them under one
    signature; without it (the link from above) every record is checked and none is signed.
    ``settled`` holds the indices already refused for good (forged, unreadable): neither checked
    nor signed. Changes ``outcomes`` in place; does nothing without ``provenance``.
    """
    if provenance is None:
        return
    checker, stamper = provenance.checker, provenance.stamper
    fresh: list[int] = []
    for index, record in enumerate(records):
        if index in settled:
            continue
        if route_keys[index][1] or not entry:
            if checker is not None:
                refused = checker.check(dict(record.headers), record.value)
                if refused is not None:
                    outcomes[index] = refused
        elif stamper is not None and isinstance(outcomes[index], Delivered):
            fresh.append(index)
    if not fresh or stamper is None:
        return
    signed: list[tuple[Mapping[str, bytes], bytes | None]] = []
    for index in fresh:
        found = dict(records[index].headers)
        found.update(outcomes[index].annotations)  # type: ignore[union-attr]
        signed.append((found, records[index].value))
    for index, header in zip(fresh, stamper.stamp(signed, now_ms), strict=True):
        delivered = outcomes[index]
        assert isinstance(delivered, Delivered)
        outcomes[index] = Delivered(
            delivered.copies, delivered.withheld, delivered.projects,
            (*delivered.annotations, (PROVENANCE, header)),
        )  # fmt: skip
