"""The node's garbage-collector settings (``node/heap.py``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from node import heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """Give the test process its collector settings back afterwards."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_settle_freezes_what_exists_and_collects_young_objects_in_larger_steps() -> None:
    """Objects built before settle() are frozen; the thresholds are the node's."""
    built_at_start = [[n] for n in range(1000)]  # lists: always tracked by the collector
    heap.settle()
    assert gc.get_freeze_count() >= len(built_at_start)
    assert gc.get_threshold() == (heap.YOUNG, heap.MIDDLE, heap.OLD)
    assert len(gc.get_objects(generation=2)) < gc.get_freeze_count()  # frozen: not scanned again
