"""Demands and grants (the "data hall"): who may receive which conditional resource.

A consuming department requests a conditional resource; the providing side approves or rejects;
an approval may later be revoked. Every step is a ``GrantEvent``; the latest event per grant id
wins (by ``version``). ``GrantBook`` is the immutable view the policy reads: the grants that are
approved and unexpired as of the moment the book was built.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from node.core import foreign_json


class GrantStatus(StrEnum):
    """Where a grant stands."""

    REQUESTED = "requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    REVOKED = "revoked"


NEXT_STATUSES: Mapping[GrantStatus, frozenset[GrantStatus]] = {
    GrantStatus.REQUESTED: frozenset({GrantStatus.APPROVED, GrantStatus.REJECTED}),
    GrantStatus.APPROVED: frozenset({GrantStatus.REVOKED}),
    GrantStatus.REJECTED: frozenset(),
    GrantStatus.REVOKED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Grant:
    """The latest state of one grant.

    ``items`` are the information items the consumer may receive; empty means all of them.
    ``origin`` is the region of the node whose API recorded this version (for relaying).
    """

    grant_id: str
    resource: str
    consumer_dept: str
    consumer_region: str
    items: tuple[str, ...]
    expires_ms: int
    status: GrantStatus
    version: int
    note: str = ""
    origin: str = ""

    def to_json(self) -> bytes:
        """Serialise for the grants topic."""
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Grant:
        """Parse a grants-topic value; raise ValueError or TypeError if it is not a grant."""
        raw: Any = foreign_json.load(data)  # ForeignJsonError is a ValueError
        if not isinstance(raw, dict):
            raise TypeError("grant is not a JSON object")
        try:
            return cls(
                grant_id=str(raw["grant_id"]), resource=str(raw["resource"]),
                consumer_dept=str(raw["consumer_dept"]),
                consumer_region=str(raw["consumer_region"]),
                items=tuple(str(i) for i in raw["items"]), expires_ms=int(raw["expires_ms"]),
                status=GrantStatus(raw["status"]), version=int(raw["version"]),
                note=str(raw.get("note", "")), origin=str(raw.get("origin", "")),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"grant field missing or mistyped: {error}") from error


def newer(current: Grant | None, incoming: Grant) -> bool:
    """Tell whether ``incoming`` supersedes ``current`` (higher version; ties keep the first)."""
    return current is None or incoming.version > current.version


class GrantBook:
    """Approved, unexpired grants by (resource, consumer department, consumer region)."""

    def __init__(self, grants: Iterable[Grant] = (), now_ms: int = 0) -> None:
        self._active: dict[tuple[str, str, str], Grant] = {}
        self.next_expiry_ms: int | None = None
        for grant in grants:
            if grant.status is not GrantStatus.APPROVED:
                continue
            if grant.expires_ms <= now_ms:
                continue
            key = (grant.resource, grant.consumer_dept, grant.consumer_region)
            held = self._active.get(key)
            if held is None or grant.expires_ms > held.expires_ms:
                self._active[key] = grant
            if self.next_expiry_ms is None or grant.expires_ms < self.next_expiry_ms:
                self.next_expiry_ms = grant.expires_ms

    def active(self, resource: str, consumer_dept: str, consumer_region: str) -> Grant | None:
        """Return the approved, unexpired grant covering this delivery, or None."""
        return self._active.get((resource, consumer_dept, consumer_region))

    def __len__(self) -> int:
        return len(self._active)
