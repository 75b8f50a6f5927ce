"""Garbage collection for a long-running node: start-up objects frozen, the rest on a clock.

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
"""

from __future__ import annotations

import asyncio
import contextlib
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


def settle() -> None:
    """Collect once, freeze every object that exists now, and collect young objects in steps.

    Call it in a node's process after its reference is loaded and before its loops start. Frozen
    objects are never scanned again; they are still freed when nothing refers to them.
    """
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
