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


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy of a record to produce: its direction, the node it is for, its new hop path."""

    direction: Direction
    region: str
    hops: bytes


@dataclass(frozen=True, slots=True)
class Delivered:
    """The record goes out as these copies (at least one)."""

    copies: tuple[Copy, ...]


@dataclass(frozen=True, slots=True)
class Refused:
    """The record is refused for ``reason``; ``message`` says why in words."""

    reason: Reason
    message: str


Outcome = Delivered | Refused
