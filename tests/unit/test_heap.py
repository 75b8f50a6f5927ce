"""The node's garbage-collector settings (``node/heap.py``)."""

from __future__ import annotations

import asyncio
import gc
import weakref
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


class _Cycle:
    """An object that refers to itself: only the collector can free it."""

    def __init__(self) -> None:
        self.me = self


async def test_paced_turns_counting_off_and_collects_on_the_clock() -> None:
    """Inside ``paced`` nothing is collected by count; a cycle goes within one pace; on again after."""
    assert gc.isenabled()
    async with heap.paced(0.05):
        assert not gc.isenabled()
        alive = [_Cycle()]
        freed = weakref.ref(alive[0])
        del alive[:]  # now garbage, in a cycle
        assert freed() is not None
        for _ in range(100):  # a 5 s bound
            if freed() is None:
                break
            await asyncio.sleep(0.05)
        assert freed() is None
    assert gc.isenabled()


async def test_paced_leaves_the_collector_on_when_its_block_raises() -> None:
    """However the block ends, the collector is as it was."""
    with pytest.raises(RuntimeError):
        async with heap.paced(10):
            raise RuntimeError("the node failed")
    assert gc.isenabled()
