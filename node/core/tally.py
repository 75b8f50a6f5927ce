"""What a batch exchanged, counted once per batch for metrics and statistics.

A tally maps (direction, source department, resource, destination) to (records, value bytes).
The destination is the parent's region for ``up``, the child's region for ``down``, and the
receiving department (or ``inbox``) for ``local``. Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class TallyKey(NamedTuple):
    """One line of a tally."""

    direction: str
    source_dept: str
    resource: str
    destination: str


Tally = dict[TallyKey, list[int]]
"""TallyKey -> [records, value bytes]."""


def add(lines: dict[Any, list[int]], key: Any, copies: int, size: int) -> None:
    """Count ``copies`` of ``size`` value bytes in all under ``key`` (a tally's, or any line)."""
    line = lines.get(key)
    if line is None:
        lines[key] = [copies, size]
    else:
        line[0] += copies
        line[1] += size
