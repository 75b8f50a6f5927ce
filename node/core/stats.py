"""Exchange statistics as bureaus report them: records and bytes per department and resource.

A node keeps, per time bucket (aligned to the epoch, ``bucket_s`` wide) and per tally key, the
cumulative totals of its current run. Each total is written as a ``StatsLine`` to the compacted
``PREFIX.stats`` topic, keyed by bucket, node, run and tally key. A later write of the same key
carries a total at least as large and replaces the earlier one, so writing a line again is
harmless and compaction keeps exactly the latest. A restarted node is a new run with keys of its
own: it never overwrites what an earlier run wrote with a smaller total.

``summarize`` turns lines read back into a report. Buckets are its resolution: a bucket counts in
a period [since, until) when the bucket's start lies in it, whole or not at all.

The bucketed ledger (``BucketLedger``), the strict JSON readers and ``grouped`` serve any such
compacted, bucketed statistic: the quality ledger (``node.core.quality_ledger``) is built on them.

Pure: no I/O, no clock (time is passed in), no logging.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Generic, Protocol, TypeVar

from node.core import foreign_json
from node.core.foreign_json import ForeignJsonError
from node.core.tally import TallyKey
from node.errors import StatsError

VERSION = 1
"""Version of the JSON value of a stats line (``"v"``)."""

_TEXTS = ("node", "run", "direction", "source_dept", "resource", "destination")
_NON_EMPTY = frozenset({"node", "run", "direction"})
_FIELDS = frozenset({"v", "bucket_start_ms", "bucket_s", "records", "bytes", *_TEXTS})

DIMENSIONS = ("source_dept", "resource", "direction", "destination", "node")
"""What ``summarize`` can group by."""
DEFAULT_BY = ("source_dept", "resource", "direction")


@dataclass(frozen=True, slots=True)
class StatsLine:
    """One run's cumulative total for one tally key in one bucket, as the stats topic holds it."""

    bucket_start_ms: int
    bucket_s: int
    node: str
    run: str
    direction: str
    source_dept: str
    resource: str
    destination: str
    records: int
    bytes: int

    def key(self) -> builtins.bytes:
        """Return the record key: one per bucket, node, run and tally key (``|``-separated)."""
        parts = (str(self.bucket_start_ms), self.node, self.run, self.direction,
                 self.source_dept, self.resource, self.destination)  # fmt: skip
        return join_key(parts)

    def to_json(self) -> builtins.bytes:
        """Serialise as the record value (versioned JSON)."""
        return line_json(self, _LINE_FIELDS)

    @classmethod
    def from_json(cls, data: builtins.bytes) -> StatsLine:
        """Parse a record value strictly; raise StatsError naming the first bad field."""
        raw = read_object(data, _FIELDS)
        start, bucket_s = read_bucket(raw)
        texts = {name: read_text(raw, name, non_empty=name in _NON_EMPTY) for name in _TEXTS}
        return cls(
            bucket_start_ms=start, bucket_s=bucket_s, **texts,
            records=read_int(raw, "records", minimum=0), bytes=read_int(raw, "bytes", minimum=0),
        )  # fmt: skip


_LINE_FIELDS = tuple(f.name for f in fields(StatsLine))
_LINE_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True)
"""``json.dumps`` with options builds an encoder per call."""


def line_json(line: object, names: Sequence[str]) -> builtins.bytes:
    """Serialise a ledger line's fields ``names`` as its record value: versioned JSON, keys sorted.

    The fields are read one by one: ``asdict`` deep-copies each value, a Python call apiece.
    """
    return _LINE_JSON.encode(
        {"v": VERSION, **{name: getattr(line, name) for name in names}}
    ).encode()


def join_key(parts: Iterable[str]) -> builtins.bytes:
    """Join a line's key fields with ``|``, escaped so that no field can contain the separator."""
    return "|".join(part.replace("%", "%25").replace("|", "%7C") for part in parts).encode()


def read_object(data: builtins.bytes, fields: frozenset[str]) -> dict[str, Any]:
    """Load a line's value: a JSON object of version VERSION without fields outside ``fields``.

    Raises StatsError naming ``value``, ``v`` or the first unknown field.
    """
    try:
        raw: Any = foreign_json.load(data)
    except ForeignJsonError as error:
        raise StatsError("value", str(error)) from error
    if not isinstance(raw, dict):
        raise StatsError("value", f"expected a JSON object, got {type(raw).__name__}")
    version = raw.get("v")
    if type(version) is not int or version != VERSION:
        raise StatsError("v", f"expected version {VERSION}, got {version!r}")
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise StatsError(unknown[0], "unknown field")
    return raw


def read_bucket(raw: dict[str, Any]) -> tuple[int, int]:
    """Return ``bucket_start_ms`` and ``bucket_s`` (the start a multiple of it); StatsError."""
    bucket_s = read_int(raw, "bucket_s", minimum=1)
    start = read_int(raw, "bucket_start_ms", minimum=0)
    if start % (bucket_s * 1000):
        raise StatsError("bucket_start_ms", f"{start} is not a multiple of bucket_s {bucket_s}")
    return start, bucket_s


def read_int(raw: dict[str, Any], name: str, *, minimum: int) -> int:
    """Return the integer field ``name`` (not a bool or float), at least ``minimum``; StatsError."""
    value = raw.get(name)
    if type(value) is not int:  # not bool, not float
        raise StatsError(name, f"expected an integer, got {value!r}")
    if value < minimum:
        raise StatsError(name, f"expected at least {minimum}, got {value}")
    return value


def read_text(raw: dict[str, Any], name: str, *, non_empty: bool) -> str:
    """Return the string field ``name``, refused empty when ``non_empty``; StatsError."""
    value = raw.get(name)
    if not isinstance(value, str):
        raise StatsError(name, f"expected a string, got {value!r}")
    if non_empty and not value:
        raise StatsError(name, "expected a non-empty string")
    return value


class Line(Protocol):
    """What a ledger's line must offer to be written to, and read back from, a compacted topic."""

    @property
    def bucket_start_ms(self) -> int:
        """Start of the line's bucket."""
        ...

    def key(self) -> builtins.bytes:
        """Return the record key, one per bucket, node, run and counted key."""
        ...

    def to_json(self) -> builtins.bytes:
        """Serialise as the record value."""
        ...


KeyT = TypeVar("KeyT", bound=tuple[str, ...])
LineT = TypeVar("LineT", bound=Line)


class BucketLedger(Generic[KeyT, LineT]):
    """A run's cumulative counts per bucket and key, and which lines are not yet written.

    ``add`` counts a committed batch; ``changed`` returns every line not confirmed written since
    it last changed; ``confirm`` marks written lines (a line counted again meanwhile stays
    pending). Nothing is lost when a write fails: the caller simply does not confirm.

    Memory stays bounded: the ``keep_buckets`` newest buckets are kept, older ones only while they
    hold pending lines, and never more than ``max_buckets`` in all; past that the oldest bucket is
    dropped and its pending lines counted in ``dropped_lines`` (only when the topic stays
    unwritable that long). A count arriving for a bucket older than the kept ones (the clock went
    back) goes to the newest bucket, since the old one may have been written and forgotten.

    A subclass says how a line is made from a key's counts (``_line``) and taken apart
    (``_located``).
    """

    def __init__(
        self,
        node_id: str,
        run_id: str,
        bucket_s: int,
        *,
        keep_buckets: int = 2,
        max_buckets: int = 48,
    ) -> None:
        if bucket_s < 1:
            raise StatsError("bucket_s", f"expected at least 1 second, got {bucket_s}")
        if not 1 <= keep_buckets < max_buckets:
            raise StatsError("max_buckets", "expected 1 <= keep_buckets < max_buckets")
        self.node_id = node_id
        self.run_id = run_id
        self.bucket_s = bucket_s
        self.dropped_lines = 0
        self._width_ms = bucket_s * 1000
        self._keep = keep_buckets
        self._max = max_buckets
        self._totals: dict[int, dict[KeyT, list[int]]] = {}
        self._pending: dict[int, set[KeyT]] = {}
        self._newest_ms: int | None = None

    @property
    def buckets_held(self) -> int:
        """How many buckets are in memory."""
        return len(self._totals)

    def add(self, now_ms: int, counts: Mapping[KeyT, Sequence[int]]) -> None:
        """Add a committed batch's ``counts`` to the bucket of ``now_ms``."""
        if not counts:
            return
        start = self._bucket_for(now_ms)
        totals = self._totals.setdefault(start, {})
        pending = self._pending.setdefault(start, set())
        for key, values in counts.items():
            total = totals.get(key)
            if total is None:
                totals[key] = list(values)
            else:
                for index, value in enumerate(values):
                    total[index] += value
            pending.add(key)
        self._forget_old()

    def changed(self) -> list[LineT]:
        """Return the lines not confirmed written, with their cumulative totals, oldest first."""
        return [
            self._line(start, key, self._totals[start][key])
            for start in sorted(self._pending)
            for key in sorted(self._pending[start])
        ]

    def confirm(self, lines: Iterable[LineT]) -> None:
        """Mark ``lines`` as written, except those whose totals grew since they were taken."""
        for line in lines:
            located = self._located(line)
            if located is None:
                continue  # another node's or run's line
            key, counts = located
            start = line.bucket_start_ms
            if self._totals.get(start, {}).get(key) == counts:
                pending = self._pending.get(start)
                if pending is not None:
                    pending.discard(key)
                    if not pending:
                        del self._pending[start]
        self._forget_old()

    def _line(self, start: int, key: KeyT, counts: list[int]) -> LineT:
        """Return the line of ``key``'s ``counts`` in the bucket starting at ``start``."""
        raise NotImplementedError

    def _located(self, line: LineT) -> tuple[KeyT, list[int]] | None:
        """Return the key and counts of a line of this node and run, None for any other line."""
        raise NotImplementedError

    def _bucket_for(self, now_ms: int) -> int:
        start = now_ms - now_ms % self._width_ms
        if self._newest_ms is None or start > self._newest_ms:
            self._newest_ms = start
        elif start < self._oldest_kept_ms(self._newest_ms):
            return self._newest_ms
        return start

    def _oldest_kept_ms(self, newest_ms: int) -> int:
        return newest_ms - (self._keep - 1) * self._width_ms

    def _forget_old(self) -> None:
        if self._newest_ms is None:
            return
        oldest_kept = self._oldest_kept_ms(self._newest_ms)
        for start in [s for s in self._totals if s < oldest_kept and s not in self._pending]:
            del self._totals[start]
        while len(self._totals) > self._max:
            oldest = min(self._totals)
            self.dropped_lines += len(self._pending.pop(oldest, ()))
            del self._totals[oldest]


class StatsLedger(BucketLedger[TallyKey, StatsLine]):
    """A run's records and bytes per bucket and tally key; ``add`` takes a Tally."""

    def _line(self, start: int, key: TallyKey, counts: list[int]) -> StatsLine:
        records, size = counts
        return StatsLine(
            start, self.bucket_s, self.node_id, self.run_id, key.direction, key.source_dept,
            key.resource, key.destination, records, size,
        )  # fmt: skip

    def _located(self, line: StatsLine) -> tuple[TallyKey, list[int]] | None:
        if line.node != self.node_id or line.run != self.run_id:
            return None
        key = TallyKey(line.direction, line.source_dept, line.resource, line.destination)
        return key, [line.records, line.bytes]


@dataclass(frozen=True, slots=True)
class StatsRow:
    """One row of a report: the values of the grouped dimensions, in ``by`` order, and totals."""

    group: tuple[str, ...]
    records: int
    bytes: int


def summarize(
    lines: Iterable[StatsLine],
    since_ms: int,
    until_ms: int,
    by: Sequence[str] = DEFAULT_BY,
) -> list[StatsRow]:
    """Sum the lines of buckets starting in [since_ms, until_ms), grouped ``by``, sorted by group.

    Of lines with one key the last wins (as compaction keeps it); every node's runs are summed.
    Raises StatsError for an unknown or repeated dimension or an empty period.
    """
    totals: dict[tuple[str, ...], list[int]] = {}
    for group, members in grouped(lines, since_ms, until_ms, by, DIMENSIONS).items():
        totals[group] = [sum(x.records for x in members), sum(x.bytes for x in members)]
    return [StatsRow(group, records, size) for group, (records, size) in sorted(totals.items())]


def grouped(
    lines: Iterable[LineT],
    since_ms: int,
    until_ms: int,
    by: Sequence[str],
    dimensions: Sequence[str],
) -> dict[tuple[str, ...], list[LineT]]:
    """Group the lines of buckets starting in [since_ms, until_ms) by the values of ``by``.

    Of lines with one key the last wins (as compaction keeps it). Raises StatsError when ``by``
    names a field outside ``dimensions`` or one twice, or when the period is empty.
    """
    for name in by:
        if name not in dimensions:
            raise StatsError("by", f"unknown dimension {name!r}; expected {', '.join(dimensions)}")
    if len(set(by)) != len(by):
        raise StatsError("by", "a dimension is named twice")
    if since_ms >= until_ms:
        raise StatsError("since", f"the period is empty: since {since_ms} >= until {until_ms} (ms)")
    latest: dict[builtins.bytes, LineT] = {}
    for line in lines:
        latest[line.key()] = line
    groups: dict[tuple[str, ...], list[LineT]] = {}
    for line in latest.values():
        if since_ms <= line.bucket_start_ms < until_ms:
            groups.setdefault(tuple(getattr(line, name) for name in by), []).append(line)
    return groups


def total(rows: Iterable[StatsRow]) -> tuple[int, int]:
    """Return the records and bytes of ``rows`` together."""
    records = size = 0
    for row in rows:
        records += row.records
        size += row.bytes
    return records, size
