"""Memory for a long-running node: start-up objects frozen, the rest on a clock, blocks reused.

A node builds its reference (catalog, schemas, rules) once, which for a county catalog of
thousands of resources is well over 100,000 objects, then moves records through short-lived
ones. With CPython's default thresholds each full collection walks that start-up heap again:
measured at 1 KB and full load, 13-15 full collections of about 0.1 s each in 10 s, a fifth of
the node's CPU, and each one a pause. ``settle`` freezes what start-up built (it is live for the
node's lifetime).

What is left is the young generation, and counting allocations is the wrong trigger for it:
the batches under way (records, their headers, copies, audit facts) are 100,000 objects and
more, alive for a fraction of a second, and every young collection walks all of them while
finding next to nothing (records are freed by reference counting; the node makes few cycles).
Measured at 200 B and full load with a young collection every 50,000 allocations: about 36
collections a second, 8-9% of the node's CPU. ``paced`` turns the count off while the node runs
and collects everything every ``PACE_S`` seconds instead, so cycles are still freed within
seconds and the collector costs a pause of tens of milliseconds per pace.

A fetch response, the copies aiokafka makes of it and a produce request are blocks of megabytes.
glibc's malloc maps such a block afresh from the system and unmaps it when it is freed, so every
4 KB page of every copy is a page fault the kernel answers with a zeroed page: measured on the
raw pipe at 10 KB, 5.4 faults a record and a quarter of its CPU. ``reuse_large_blocks`` has
malloc serve blocks of up to ``REUSED_BLOCK_BYTES`` from its heap and keep up to
``KEPT_FREE_BYTES`` freed there, so the same pages carry batch after batch. The price: memory
the node once needed stays resident until the next peak reuses it (peak RSS is unchanged).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
from collections.abc import AsyncIterator

YOUNG = 50_000
"""Allocations (net) between young collections when not paced; CPython's default is 700."""
MIDDLE = 20
"""Young collections between collections of the middle generation (default 10)."""
OLD = 10
"""Middle collections between full ones (the default; start-up's objects are frozen)."""
PACE_S = 5.0
"""Seconds between collections while paced."""
REUSED_BLOCK_BYTES = 64 * 1024 * 1024
"""Blocks up to this size come from malloc's heap (glibc's default: mapped afresh from 128 KB)."""
KEPT_FREE_BYTES = 128 * 1024 * 1024
"""Freed memory malloc keeps at its heap's top rather than handing back to the system."""
_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def reuse_large_blocks() -> bool:
    """Have malloc keep large blocks for reuse; return False where it is not glibc's.

    Process-wide and for the process's lifetime; call it once, at start-up.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    served = mallopt(_M_MMAP_THRESHOLD, REUSED_BLOCK_BYTES)
    return bool(served and mallopt(_M_TRIM_THRESHOLD, KEPT_FREE_BYTES))


def settle() -> None:
    """Freeze what exists now, collect young objects in steps, keep large blocks for reuse.

    Call it in a node's process after its reference is loaded and before its loops start. Frozen
    objects are never scanned again; they are still freed when nothing refers to them.
    """
    reuse_large_blocks()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)


async def _collect_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        gc.collect()


@contextlib.asynccontextmanager
async def paced(seconds: float = PACE_S) -> AsyncIterator[None]:
    """Collect every ``seconds`` instead of by allocation count while the block runs.

    The collector is switched back on (as it was) when the block ends, however it ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    pacing = asyncio.ensure_future(_collect_every(seconds))
    try:
        yield
    finally:
        pacing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pacing
        if was_enabled:
            gc.enable()
