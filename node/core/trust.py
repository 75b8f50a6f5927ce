"""The trust store: which public keys vouch for records of which region, and when.

A ``TrustedKey`` binds one public key (``key_id``, ``algorithm``, raw bytes) to one region and a
validity window ``[valid_from_ms, valid_until_ms]`` (open-ended when ``valid_until_ms`` is None).
A key record whose ``key_id`` is not ``key_id_of(algorithm, public_key)`` is refused when read,
so one id never names two public keys. A record's provenance is accepted only if its key is
trusted for the record's ``cx-source-region`` and the window covers the signing time the record
carries. The node that signs is the node of the region where records enter the exchange, so a
region's keys are exactly the keys of that region's node.

Rotation: a node that starts with a new key publishes it, and re-publishes each previous key with
``valid_until_ms = now + rotation_grace_s`` so records signed just before the switch still pass.
Of two versions of one key the one issued later (``issued_ms``) wins, so the shortened window
replaces the open one wherever both arrive.

Where keys may come from (``acceptable``) is what makes the store sound: the node reads keys from
its own ``PREFIX.trust`` (only it writes there), from each child's hand-up topic (a child may
speak only for regions inside its own subtree) and from its parent's ``PREFIX.trust`` (only for
regions outside this node's subtree: nobody above may replace the keys of a region below). The
shell (``node.kafka.trust``) does the reading and writing; this module decides.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from node.core import foreign_json
from node.core.quoting import quoted
from node.core.topology import contains, is_region_code

ALGORITHMS = ("ed25519", "sm2")


def key_id_of(algorithm: str, public_key: bytes) -> str:
    """Return the id of a public key: 16 hex digits of SHA-256(algorithm, ":", raw key)."""
    return hashlib.sha256(algorithm.encode() + b":" + public_key).hexdigest()[:16]


class Origin(StrEnum):
    """Where a key record was read."""

    OWN = "own"  # this node's own PREFIX.trust
    CHILD = "child"  # a child's hand-up topic on this node's cluster
    PARENT = "parent"  # the parent's PREFIX.trust


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """One public key trusted to vouch for records of ``region`` within a validity window."""

    region: str
    key_id: str
    algorithm: str
    public_key: bytes
    valid_from_ms: int
    valid_until_ms: int | None = None
    issued_ms: int = 0
    """When this version of the key record was issued (the later version wins)."""

    @property
    def record_key(self) -> bytes:
        """The compaction key of this key's record: ``REGION/KEY_ID``."""
        return f"{self.region}/{self.key_id}".encode()

    def covers(self, time_ms: int) -> bool:
        """Tell whether the validity window includes ``time_ms``."""
        return self.valid_from_ms <= time_ms and (
            self.valid_until_ms is None or time_ms <= self.valid_until_ms
        )

    def to_json(self) -> bytes:
        """Serialise as the value of a trust topic record."""
        return json.dumps({
            "region": self.region, "key_id": self.key_id, "algorithm": self.algorithm,
            "public_key": base64.b64encode(self.public_key).decode(),
            "valid_from_ms": self.valid_from_ms, "valid_until_ms": self.valid_until_ms,
            "issued_ms": self.issued_ms,
        }, sort_keys=True).encode()  # fmt: skip

    @classmethod
    def from_json(cls, data: bytes) -> TrustedKey:
        """Parse a trust topic record; raise ValueError naming the bad field."""
        raw = foreign_json.load(data)  # ForeignJsonError is a ValueError
        if not isinstance(raw, dict):
            raise ValueError("a key record is a JSON object")  # noqa: TRY004 - one error for bad input

        def text(name: str) -> str:
            value = raw.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name}: expected a non-empty string")
            return value

        def millis(name: str, *, optional: bool = False) -> int | None:
            value = raw.get(name)
            if value is None and optional:
                return None
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}: expected milliseconds since epoch")
            return value

        region, key_id, algorithm = text("region"), text("key_id"), text("algorithm")
        if not is_region_code(region):
            raise ValueError(f"region: {quoted(region)} is not a six-digit region code")
        if algorithm not in ALGORITHMS:
            known = ", ".join(ALGORITHMS)
            raise ValueError(f"algorithm: {quoted(algorithm)} is not one of {known}")
        try:
            public_key = base64.b64decode(text("public_key"), validate=True)
        except ValueError:
            raise ValueError("public_key: not base64") from None
        expected = key_id_of(algorithm, public_key)
        if key_id != expected:
            raise ValueError(
                f"key_id: {quoted(key_id)} is not the id of this public_key ({expected})"
            )
        valid_from = millis("valid_from_ms")
        assert valid_from is not None
        return cls(
            region, key_id, algorithm, public_key, valid_from,
            millis("valid_until_ms", optional=True), millis("issued_ms", optional=True) or 0,
        )  # fmt: skip


def acceptable(key: TrustedKey, origin: Origin, me: str, writer: str | None = None) -> bool:
    """Tell whether a key record read from ``origin`` may be trusted by the node of ``me``.

    ``writer`` is the child whose hand-up topic it came from (for Origin.CHILD).
    """
    if origin is Origin.OWN:
        return True
    if origin is Origin.CHILD:
        return writer is not None and writer != me and contains(writer, key.region)
    return not contains(me, key.region)


def newer(old: TrustedKey | None, new: TrustedKey) -> bool:
    """Tell whether ``new`` should replace ``old`` (same region and key id)."""
    return old is None or new.issued_ms > old.issued_ms


def rotation(
    own: TrustedKey, known: Iterable[TrustedKey], now_ms: int, grace_ms: int
) -> list[TrustedKey]:
    """Return the key records a node publishes when it starts with ``own``.

    ``own`` first (valid from when it was first published, open-ended), then each other key of
    its region in ``known`` whose validity reaches beyond ``now_ms + grace_ms``, cut to end
    there. A restart with the same key publishes only ``own`` again.
    """
    first = [k.valid_from_ms for k in known if k.region == own.region and k.key_id == own.key_id]
    published = [replace(own, valid_from_ms=min([*first, own.valid_from_ms]), issued_ms=now_ms)]
    until = now_ms + grace_ms
    for key in known:
        if key.region != own.region or key.key_id == own.key_id:
            continue
        if key.valid_until_ms is None or key.valid_until_ms > until:
            published.append(replace(key, valid_until_ms=until, issued_ms=now_ms))
    return published


class TrustStore:
    """An immutable snapshot of the trusted keys, looked up by key id."""

    __slots__ = ("_by_id",)

    def __init__(self, keys: Iterable[TrustedKey] = ()) -> None:
        by_id: dict[str, list[TrustedKey]] = {}
        for key in keys:
            by_id.setdefault(key.key_id, []).append(key)
        self._by_id: Mapping[str, tuple[TrustedKey, ...]] = {
            key_id: tuple(found) for key_id, found in by_id.items()
        }

    def __len__(self) -> int:
        return sum(len(found) for found in self._by_id.values())

    def keys(self) -> list[TrustedKey]:
        """Every key of the snapshot."""
        return [key for found in self._by_id.values() for key in found]

    def known(self, key_id: str) -> bool:
        """Tell whether any region trusts ``key_id``."""
        return key_id in self._by_id

    def trusted(self, key_id: str, region: str, signed_ms: int) -> TrustedKey | str:
        """Return the key trusted for ``region`` at ``signed_ms``, or why there is none."""
        found = self._by_id.get(key_id)
        if not found:
            return f"key {key_id} is not in the trust store"
        for key in found:
            if key.region == region:
                if key.covers(signed_ms):
                    return key
                until = "open" if key.valid_until_ms is None else key.valid_until_ms
                return (
                    f"key {key_id} of {region} is valid {key.valid_from_ms}..{until} ms, "
                    f"not at the signing time {signed_ms}"
                )
        regions = ",".join(sorted(key.region for key in found))
        return f"key {key_id} is trusted for {regions}, not for source region {region}"
