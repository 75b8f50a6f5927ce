"""The resource catalog (数据资源目录): what each data resource is and what it may do.

Immutable lookups only; reading and checking catalog files lives in ``node/catalog_files.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from node.core.envelope import Sharing
from node.core.quality import NO_RULES, QualityRules


class Openness(StrEnum):
    """Openness to the public (无条件开放 / 有条件开放 / 不予开放)."""

    OPEN = "open"
    CONDITIONAL = "conditional"
    CLOSED = "closed"


class UpdateCycle(StrEnum):
    """How often the source department updates the resource (更新周期)."""

    REALTIME = "realtime"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    YEARLY = "yearly"


ITEM_TYPES = (
    "string",
    "int",
    "long",
    "float",
    "double",
    "boolean",
    "bytes",
    "date",
    "timestamp",
    "enum",
)


@dataclass(frozen=True, slots=True)
class InformationItem:
    """One information item (信息项): a field of the resource."""

    name: str
    type: str
    required: bool


@dataclass(frozen=True, slots=True)
class Resource:
    """One catalog entry; ``source_dept`` at ``source_region`` is its one authoritative source.

    ``quality`` holds its ``[resource.quality]`` rules (none by default: every record passes).
    """

    code: str
    name: str
    schema: str
    source_dept: str
    source_region: str
    sharing: Sharing
    legal_basis: str
    openness: Openness
    grade: int
    update_cycle: UpdateCycle
    items: tuple[InformationItem, ...]
    quality: QualityRules = NO_RULES


class Catalog:
    """Resources by code; lookups are O(1) whatever the catalog's size."""

    def __init__(self, resources: Mapping[str, Resource]) -> None:
        self._by_code = dict(resources)

    def get(self, code: str) -> Resource | None:
        """Return the resource with ``code``, or None."""
        return self._by_code.get(code)

    def __len__(self) -> int:
        return len(self._by_code)

    def codes(self) -> list[str]:
        """Every resource code, sorted."""
        return sorted(self._by_code)
