"""Garbage collection for a long-running node: start-up objects frozen, young ones in steps.

A node builds its reference (catalog, schemas, rules) once, which for a county catalog of
thousands of resources is well over 100,000 objects, then moves records through short-lived
ones. With CPython's default thresholds each full collection walks that start-up heap again:
measured at 1 KB and full load, 13-15 full collections of about 0.1 s each in 10 s, a fifth of
the node's CPU, and each one a pause. ``settle`` freezes what start-up built (it is live for the
node's lifetime) and lets the young generation grow to ``YOUNG`` objects between collections, so a
collection happens about once per few batches rather than every 700 allocations.
"""

from __future__ import annotations

import gc

YOUNG = 50_000
"""Allocations (net) between young collections; CPython's default is 700."""
MIDDLE = 20
"""Young collections between collections of the middle generation (default 10)."""
OLD = 10
"""Middle collections between full ones (the default; start-up's objects are frozen)."""


def settle() -> None:
    """Collect once, freeze every object that exists now, and collect young objects in steps.

    Call it in a node's process after its reference is loaded and before its loops start. Frozen
    objects are never scanned again; they are still freed when nothing refers to them.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
