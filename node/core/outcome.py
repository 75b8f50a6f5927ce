"""The closed set of outcomes: every record is Delivered (one or more copies) or Refused (a reason).

There is no "dropped". A refused record goes to the refusal topic with its reason code (stable, for
dashboards and alerts) and a human message (for the person reading the refusal topic).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    """Where a copy goes, seen from this node."""

    UP = "up"  # to the parent's cluster
    DOWN = "down"  # to a child's hand-over topic on the local cluster
    LOCAL = "local"  # to this level's delivery topic


class Reason(StrEnum):
    """Stable refusal reason codes (a Prometheus label: keep the set small and fixed)."""

    BAD_ENVELOPE = "bad_envelope"  # a header is missing or malformed
    BAD_PAYLOAD = "bad_payload"  # the value is not a decodable datum of a known schema
    CYCLE = "cycle"  # forwarding would revisit a node already on the hop path
    MISROUTED = "misrouted"  # arrived from above but addressed outside this subtree
    UNKNOWN_REGION = "unknown_region"  # addressed below this node, but no child serves it
    UNROUTABLE = "unroutable"  # addressed above the root of the cascade
    UNDELIVERABLE = "undeliverable"  # the destination broker rejects it for good
    UNKNOWN_RESOURCE = "unknown_resource"  # the resource code is not in the catalog
    NOT_SHARED = "not_shared"  # the catalog says 不予共享: it never leaves the node
    NEGATIVE_LIST = "negative_list"  # the resource or its source department is on the negative list
    NOT_AUTHORITATIVE = "not_authoritative"  # published by other than the resource's one source
    GRADE = "grade"  # the record's grade exceeds the destination's clearance
    NO_GRANT = "no_grant"  # conditional resource and nobody here holds a grant for it
    QUALITY = "quality"  # fails a quality rule its resource refuses on (every failure is named)
    PROVENANCE = "provenance"  # signature missing, malformed, wrong, or its key not trusted
    FORGED = "forged"  # its headers disagree with the writer its topic belongs to


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy of a record to produce: its direction, the node it is for, its new hop path.

    A local copy for a department names it; ``items`` limits the value to those information
    items (a projection), and ``value`` then holds the projected value once the decision made it;
    None passes the value through byte for byte.
    """

    direction: Direction
    region: str
    hops: bytes
    department: str | None = None
    items: tuple[str, ...] | None = None
    value: bytes | None = None


@dataclass(frozen=True, slots=True)
class Delivered:
    """The record goes out as ``copies`` (at least one); ``withheld`` copies are refused each.

    ``projects`` says that some copy is still to be projected (``items`` set, ``value`` not).
    """

    copies: tuple[Copy, ...]
    withheld: tuple[tuple[Copy, Refused], ...] = ()
    projects: bool = False
    annotations: tuple[tuple[str, bytes], ...] = ()
    """Headers every copy carries, replacing any of the same name (the entry's quality verdict)."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The record is refused for ``reason``; ``message`` says why in words."""

    reason: Reason
    message: str


Outcome = Delivered | Refused
