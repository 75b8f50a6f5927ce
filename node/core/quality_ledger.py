"""Quality statistics as bureaus assess them: pass rates per department, resource and dimension.

The checks give, per record and quality dimension, passed or failed; the links count a committed
batch as ``QualityKey -> (records checked, records failed)`` and add it to the ``QualityLedger``.
Like the exchange statistics (``node.core.stats``, whose ledger, JSON readers and grouping this
module reuses), a node keeps per time bucket the cumulative counts of its current run, written as
``QualityLine`` records to the compacted ``PREFIX.quality`` topic, keyed by bucket, node, run and
quality key: rewriting a line is harmless, compaction keeps the latest, a new run has keys of
its own.

``report`` turns lines read back into pass rates and flags those below a threshold (bureaus ask
for above 80%). A bucket counts in a period [since, until) when its start lies in it.

Pure: no I/O, no clock (time is passed in), no logging.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

from node.core.stats import (
    BucketLedger,
    grouped,
    join_key,
    line_json,
    read_bucket,
    read_int,
    read_object,
    read_text,
)
from node.errors import StatsError

DIMENSIONS = (
    "conformity", "completeness", "accuracy", "consistency", "timeliness", "accessibility",
)  # fmt: skip
"""The six quality dimensions the checks judge (DOMAIN.md)."""
REPORT_BY = ("source_dept", "resource", "dimension", "node")
"""What ``report`` can group by."""
DEFAULT_BY = ("source_dept", "resource", "dimension")
DEFAULT_THRESHOLD = 0.8

_TEXTS = ("node", "run", "source_dept", "resource", "dimension")
_NON_EMPTY = frozenset({"node", "run", "dimension"})
_FIELDS = frozenset({"v", "bucket_start_ms", "bucket_s", "checked", "failed", *_TEXTS})


class QualityKey(NamedTuple):
    """What a quality count is kept by."""

    resource: str
    source_dept: str
    dimension: str


QualityCounts = Mapping[QualityKey, tuple[int, int]]
"""A batch's counts: QualityKey -> (records checked, records failed)."""


@dataclass(frozen=True, slots=True)
class QualityLine:
    """One run's cumulative counts for one quality key in one bucket, as the topic holds them."""

    bucket_start_ms: int
    bucket_s: int
    node: str
    run: str
    source_dept: str
    resource: str
    dimension: str
    checked: int
    failed: int

    def key(self) -> builtins.bytes:
        """Return the record key: one per bucket, node, run and quality key (``|``-separated)."""
        parts = (str(self.bucket_start_ms), self.node, self.run, self.source_dept, self.resource,
                 self.dimension)  # fmt: skip
        return join_key(parts)

    def to_json(self) -> builtins.bytes:
        """Serialise as the record value (versioned JSON)."""
        return line_json(self, _LINE_FIELDS)

    @classmethod
    def from_json(cls, data: builtins.bytes) -> QualityLine:
        """Parse a record value strictly; raise StatsError naming the first bad field."""
        raw = read_object(data, _FIELDS)
        start, bucket_s = read_bucket(raw)
        texts = {name: read_text(raw, name, non_empty=name in _NON_EMPTY) for name in _TEXTS}
        if texts["dimension"] not in DIMENSIONS:
            raise StatsError("dimension", f"expected one of {', '.join(DIMENSIONS)}")
        checked = read_int(raw, "checked", minimum=0)
        failed = read_int(raw, "failed", minimum=0)
        if failed > checked:
            raise StatsError("failed", f"{failed} is more than the {checked} checked")
        return cls(start, bucket_s, **texts, checked=checked, failed=failed)


_LINE_FIELDS = tuple(f.name for f in fields(QualityLine))


class QualityLedger(BucketLedger[QualityKey, QualityLine]):
    """A run's records checked and failed per bucket and quality key (see ``BucketLedger``).

    ``add(now_ms, counts)`` takes a batch's ``QualityCounts``; ``changed``, ``confirm``,
    ``dropped_lines`` and the memory bound are the stats ledger's.
    """

    def add(self, now_ms: int, counts: Mapping[QualityKey, Sequence[int]]) -> None:
        """Add a committed batch's counts to the bucket of ``now_ms``.

        Raises StatsError, counting nothing, for an unknown dimension or counts that are not
        (checked, failed) with 0 <= failed <= checked: a bug in the caller.
        """
        for key, values in counts.items():
            if key.dimension not in DIMENSIONS:
                raise StatsError("dimension", f"unknown quality dimension {key.dimension!r}")
            if len(values) != 2 or not 0 <= values[1] <= values[0]:
                raise StatsError("counts", f"expected (checked, failed) for {key}, got {values}")
        super().add(now_ms, counts)

    def _line(self, start: int, key: QualityKey, counts: list[int]) -> QualityLine:
        checked, failed = counts
        return QualityLine(
            start, self.bucket_s, self.node_id, self.run_id, key.source_dept, key.resource,
            key.dimension, checked, failed,
        )  # fmt: skip

    def _located(self, line: QualityLine) -> tuple[QualityKey, list[int]] | None:
        if line.node != self.node_id or line.run != self.run_id:
            return None
        key = QualityKey(line.resource, line.source_dept, line.dimension)
        return key, [line.checked, line.failed]


@dataclass(frozen=True, slots=True)
class QualityRow:
    """One row of a report: grouped values in ``by`` order (None: all), counts, and the verdict.

    A department's overall row has None for every grouped field but ``source_dept``; its counts
    are checks (a record checked on three dimensions counts three times).
    """

    group: tuple[str | None, ...]
    checked: int
    failed: int
    below: bool
    """The pass rate is under the threshold."""

    @property
    def passed(self) -> int:
        """Checks passed."""
        return self.checked - self.failed

    @property
    def pass_rate(self) -> float | None:
        """Checks passed / checked, None when nothing was checked."""
        return self.passed / self.checked if self.checked else None


def report(
    lines: Iterable[QualityLine],
    since_ms: int,
    until_ms: int,
    by: Sequence[str] = DEFAULT_BY,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[QualityRow]:
    """Sum the lines of buckets starting in [since_ms, until_ms), grouped ``by``, with pass rates.

    Of lines with one key the last wins (as compaction keeps it); every node's runs are summed.
    When ``by`` has ``source_dept`` and more, each department also gets an overall row, after its
    own rows. A row is ``below`` when its pass rate is under ``threshold``. Rows are sorted by
    group. Raises StatsError for an unknown or repeated dimension, an empty period, or a
    threshold outside [0, 1].
    """
    if not 0 <= threshold <= 1:
        raise StatsError("threshold", f"expected a fraction from 0 to 1, got {threshold:g}")
    totals: dict[tuple[str | None, ...], list[int]] = {}
    for group, members in grouped(lines, since_ms, until_ms, by, REPORT_BY).items():
        counts = [sum(x.checked for x in members), sum(x.failed for x in members)]
        totals[group] = counts
        if "source_dept" in by and len(by) > 1:
            overall = tuple(
                v if n == "source_dept" else None for n, v in zip(by, group, strict=True)
            )
            total = totals.setdefault(overall, [0, 0])
            total[0] += counts[0]
            total[1] += counts[1]
    return [
        QualityRow(group, checked, failed, checked > 0 and (checked - failed) / checked < threshold)
        for group, (checked, failed) in sorted(totals.items(), key=lambda item: _order(item[0]))
    ]


def _order(group: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    """Sort None (all) after every value."""
    return tuple((value is None, value or "") for value in group)
