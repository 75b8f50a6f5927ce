"""Region codes (GB/T 2260) and one node's place in the cascade tree.

A region code has six digits: province ``XX0000``, city ``XXXX00``, county ``XXXXXX``. A region's
subtree is every code that starts with its significant prefix (the code less trailing ``00`` pairs),
so ``410000`` contains ``410100`` and ``410102``; ``000000`` (national) contains everything. Nothing
here assumes a fixed depth: a municipality (``500000``) may sit directly under the national level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REGION_LENGTH = 6


def is_region_code(text: str) -> bool:
    """Tell whether ``text`` is a six-digit region code."""
    return len(text) == REGION_LENGTH and text.isascii() and text.isdigit()


def region_prefix(region: str) -> str:
    """Return the significant prefix of ``region``: the code without trailing ``00`` pairs."""
    prefix = region
    while prefix.endswith("00"):
        prefix = prefix[:-2]
    return prefix


def contains(ancestor: str, region: str) -> bool:
    """Tell whether ``region`` lies in the subtree of ``ancestor`` (a region contains itself)."""
    return region.startswith(region_prefix(ancestor))


@dataclass(frozen=True, slots=True)
class Topology:
    """What one node knows of the tree: itself, its parent (absent at the root) and its children."""

    region: str
    level: str
    parent: str | None
    children: tuple[str, ...]
    _child_by_prefix: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_prefix = {region_prefix(child): child for child in self.children}
        object.__setattr__(self, "_child_by_prefix", by_prefix)

    def contains(self, region: str) -> bool:
        """Tell whether ``region`` is this node's region or lies below it."""
        return contains(self.region, region)

    def child_towards(self, region: str) -> str | None:
        """Return the child whose subtree holds ``region``, or None if no configured child does."""
        by_prefix = self._child_by_prefix
        for length in (2, 4, 6):
            child = by_prefix.get(region[:length])
            if child is not None and child != self.region:
                return child
        return None
