"""Heartbeats between neighbouring nodes, and the cross-hop completeness they carry.

Every node writes a small heartbeat on each link it feeds, up to its parent and down to each child,
every few seconds even with no traffic, so a silent link is told apart from an idle one. A
heartbeat is a record whose first header is ``cx-heartbeat`` and whose value is JSON (``Beat``).
Links consume heartbeats themselves: they never reach a department.

A beat going up also carries completeness counts in the spirit of Uber's Chaperone: the records
the child's node sent up, counted per time bucket of their ``cx-created-ms``. The parent counts
what it received from that child in the same buckets; a bucket is compared once it ended
``settle_s`` before the child's heartbeat, so records still on their way are not taken for lost.
And it carries the sender's own view of its subtree, so the root sees the whole cascade.

Pure: no I/O, no clock reads (times are passed in).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from node.core import foreign_json
from node.core.envelope import MAX_DIGITS
from node.core.foreign_json import ForeignJsonError
from node.core.quoting import quoted
from node.core.topology import is_region_code
from node.errors import EnvelopeError

HEARTBEAT = "cx-heartbeat"
"""The first header of a heartbeat record; its value is the format version."""
VERSION = b"1"
STALE_INTERVALS = 3
"""A peer is stale when its last heartbeat is older than this many of its intervals."""
MAX_NESTING = 64
"""Deepest JSON nesting a heartbeat may have: a real cascade's subtree views need about 20, and
this node re-encodes what it receives a few levels deeper in its own beat up."""


@dataclass(frozen=True, slots=True)
class Beat:
    """One heartbeat, as sent."""

    region: str
    node: str
    level: str
    sent_ms: int
    interval_s: float
    links: Mapping[str, Any] = field(default_factory=dict)
    """Per link of the sender: up, reason, rates, lag (shown, not interpreted)."""
    sent_up: Mapping[int, int] = field(default_factory=dict)
    """Records sent up per bucket start (ms); empty on beats going down."""
    bucket_s: int = 60
    subtree: tuple[Mapping[str, Any], ...] = ()
    """The sender's view of its children (the cascade page's shape), recursively."""

    def encode(self) -> bytes:
        """Return the record value."""
        body = {
            "region": self.region, "node": self.node, "level": self.level,
            "sent_ms": self.sent_ms, "interval_s": self.interval_s, "links": self.links,
            "sent_up": {str(k): v for k, v in self.sent_up.items()}, "bucket_s": self.bucket_s,
            "subtree": list(self.subtree),
        }  # fmt: skip
        return json.dumps(body, separators=(",", ":")).encode()


def is_heartbeat(headers: Any) -> bool:
    """Whether a record's headers mark it as a heartbeat (O(1): the first header decides)."""
    return bool(headers) and headers[0][0] == HEARTBEAT


def decode(value: bytes | None) -> Beat:
    """Parse a heartbeat value; raise EnvelopeError saying what is wrong.

    Numbers must be finite and integers at most MAX_DIGITS long, so that no later arithmetic on
    them (ages, rates, buckets) overflows.
    """
    try:
        body = foreign_json.load(value, max_nesting=MAX_NESTING)
    except ForeignJsonError as error:
        raise EnvelopeError(HEARTBEAT, f"heartbeat value: {error}") from None
    if not isinstance(body, dict):
        raise EnvelopeError(HEARTBEAT, "heartbeat value must be a JSON object")

    def need(name: str, kind: type | tuple[type, ...]) -> Any:
        found = body.get(name)
        if not isinstance(found, kind) or isinstance(found, bool):
            raise EnvelopeError(HEARTBEAT, f"heartbeat field {name!r} is missing or mistyped")
        return found

    region = need("region", str)
    if not is_region_code(region):
        raise EnvelopeError(HEARTBEAT, f"heartbeat region {quoted(region)} is not a region code")
    sent_up: dict[int, int] = {}
    for key, count in need("sent_up", dict).items():
        if (
            not (key.isascii() and key.isdigit() and len(key) <= MAX_DIGITS)
            or not isinstance(count, int)
            or isinstance(count, bool)
        ):
            raise EnvelopeError(HEARTBEAT, f"heartbeat sent_up entry {quoted(key)} is malformed")
        sent_up[int(key)] = count
    subtree = need("subtree", list)
    if not all(isinstance(view, dict) for view in subtree):
        raise EnvelopeError(HEARTBEAT, "heartbeat subtree must be a list of objects")
    interval = float(need("interval_s", (int, float)))
    bucket = need("bucket_s", int)
    if interval <= 0 or bucket <= 0:
        raise EnvelopeError(HEARTBEAT, "heartbeat interval_s and bucket_s must be positive")
    return Beat(
        region, need("node", str), need("level", str), need("sent_ms", int), interval,
        need("links", dict), sent_up, bucket, tuple(subtree),
    )  # fmt: skip


class BucketCounts:
    """Counts per time bucket (of ``cx-created-ms``), keeping only the most recent buckets."""

    def __init__(self, bucket_s: int, keep: int) -> None:
        self.bucket_ms = bucket_s * 1000
        self._keep = keep
        self.counts: dict[int, int] = {}

    def add(self, created_ms: Iterable[int], now_ms: int) -> None:
        """Count records by the bucket of their creation time; too old or unknown ones are not."""
        oldest = self.start(now_ms) - (self._keep - 1) * self.bucket_ms
        counts, width = self.counts, self.bucket_ms
        for created in created_ms:
            if created >= oldest:
                start = created - created % width
                counts[start] = counts.get(start, 0) + 1
        if len(counts) > self._keep + 2:  # future-dated records can add buckets ahead of now
            for start in sorted(counts)[: len(counts) - self._keep]:
                del counts[start]

    def start(self, at_ms: int) -> int:
        """Return the start of the bucket holding ``at_ms``."""
        return at_ms - at_ms % self.bucket_ms

    def recent(self, now_ms: int) -> dict[int, int]:
        """Return the kept buckets' counts (dropping older ones)."""
        oldest = self.start(now_ms) - (self._keep - 1) * self.bucket_ms
        for start in [s for s in self.counts if s < oldest]:
            del self.counts[start]
        return dict(self.counts)


def settled_sum(counts: Mapping[int, int], first_ms: int, last_ms: int) -> int:
    """Sum the buckets whose start lies in [first_ms, last_ms]."""
    return sum(n for start, n in counts.items() if first_ms <= start <= last_ms)


def settled_range(beat: Beat, keep: int, settle_s: float) -> tuple[int, int]:
    """Return the bucket starts compared for ``beat``: ended ``settle_s`` before it, kept by both.

    One bucket less than kept is compared, so a record counted by the child in its oldest bucket
    is still counted by the parent however late it arrives within that bucket.
    """
    width = beat.bucket_s * 1000
    end = beat.sent_ms - int(settle_s * 1000)  # buckets must end by here
    last = end - end % width - width
    first = beat.sent_ms - beat.sent_ms % width - (keep - 2) * width
    return first, last
