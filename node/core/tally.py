"""What a batch exchanged, counted once per batch for metrics and statistics.

A tally maps (direction, source department, resource, destination) to (records, value bytes).
The destination is the parent's region for ``up``, the child's region for ``down``, and the
receiving department (or ``inbox``) for ``local``. Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import NamedTuple


class TallyKey(NamedTuple):
    """One line of a tally."""

    direction: str
    source_dept: str
    resource: str
    destination: str


Tally = dict[TallyKey, list[int]]
"""TallyKey -> [records, value bytes]."""


def add(tally: Tally, key: TallyKey, size: int) -> None:
    """Count one copy of ``size`` value bytes under ``key``."""
    line = tally.get(key)
    if line is None:
        tally[key] = [1, size]
    else:
        line[0] += 1
        line[1] += size
