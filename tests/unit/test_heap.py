"""The node's garbage-collector settings (``node/heap.py``)."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
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


_FAULTS = """
import resource, sys
from node import heap
if sys.argv[1] == "reuse":
    assert heap.reuse_large_blocks()
chunk = bytes(256 * 1024)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # as asyncio's StreamReader reads a 16 MB response: grown, then copied out
    grown = bytearray()
    for _ in range(64):
        grown.extend(chunk)
    response = bytes(grown)
    del grown, response
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    done = subprocess.run(  # noqa: S603 - our interpreter, a script of this file; a fresh process, as the setting is process-wide
        [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, timeout=60, check=True
    )  # fmt: skip
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_large_blocks_freed_are_reused_not_faulted_in_again() -> None:
    """Twenty 16 MB responses read one after the other: their pages faulted in once, not each time."""
    pages = 16 * 1024 * 1024 // 4096
    assert _page_faults("default") > 20 * pages  # mapped afresh, grown and copied (glibc's default)
    assert _page_faults("reuse") < 3 * pages  # the first response's blocks, then the same pages
