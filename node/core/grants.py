"""Demands and grants (the "data hall"): who may receive which conditional resource.

A consuming department requests a conditional resource; the providing side approves or rejects;
an approval may later be revoked. Every step is a ``GrantEvent``; the latest event per grant id
wins (by ``version``). ``GrantBook`` is the immutable view the policy reads: the grants that are
approved and unexpired as of the moment the book was built.

Who may write an event ("writers who cannot lie", as for records and keys): a node writes only
its own ``PREFIX.grants`` and hands its subtree's events up to its own ``PREFIX.grants.from.REGION``
on the parent's cluster, so the parent knows which child handed an event up from the topic.
``handed_up_refusal`` is what the parent accepts from child C: events recorded in C's subtree
(``origin``) by the node entitled to that step (a request at the consumer's node, a decision at
the resource's source region) with a version not far ahead of the parent's clock.
``handed_down_refusal`` bounds the version of what a node takes from its parent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from node.core import foreign_json
from node.core.topology import contains


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
    ``origin`` is the region of the node whose API recorded this version: relays route by it, and
    a parent accepts it from a child only inside the child's subtree (``handed_up_refusal``).
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


MAX_VERSION_AHEAD_MS = 3_600_000
"""How far ahead of the reader's clock a neighbour's event version may be (clock skew allowance).

Versions are the recording node's clock in ms (``GrantDesk``), so a legitimate event is at most a
clock skew ahead; a version far beyond (2**62) would outrank every later revocation.
"""


def decider(grant: Grant, source_region: str | None) -> str | None:
    """Return the region whose node may record ``grant``'s step (None if the resource is unknown).

    A request is recorded at the consumer's node; an approval, rejection or revocation at the
    node of the resource's source region.
    """
    if grant.status is GrantStatus.REQUESTED:
        return grant.consumer_region
    return source_region


def handed_up_refusal(
    grant: Grant, child: str, source_region: str | None, now_ms: int
) -> str | None:
    """Why the node of ``child`` may not hand ``grant`` up; None when it may.

    ``source_region`` is the resource's source region in the reader's catalog (None: unknown).
    """
    if not contains(child, grant.origin):
        return f"origin {grant.origin or '(none)'} lies outside the subtree of {child}"
    entitled = decider(grant, source_region)
    if entitled is None:
        return f"{grant.resource} is not in this node's catalog: who decides it is unknown"
    if entitled != grant.origin:
        step = grant.status.value
        return f"{step} recorded at {grant.origin}, but only {entitled}'s node records that step"
    return handed_down_refusal(grant, now_ms)


def handed_down_refusal(grant: Grant, now_ms: int) -> str | None:
    """Why ``grant`` is not taken from a neighbour: its version is far ahead of ``now_ms``."""
    if grant.version > now_ms + MAX_VERSION_AHEAD_MS:
        return (
            f"version {grant.version} is more than {MAX_VERSION_AHEAD_MS // 1000} s ahead of "
            f"this node's clock ({now_ms})"
        )
    return None


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
