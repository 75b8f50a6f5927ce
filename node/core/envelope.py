"""The envelope: what the node knows of a record without decoding its value.

The envelope travels in Kafka headers (ASCII values), so routing never touches the payload:

================  =====================================================================
header            value
================  =====================================================================
cx-id             record id, 1-64 printable ASCII characters (a UUID in practice)
cx-resource       resource code from the catalog
cx-source-region  region code (GB/T 2260) of the publishing platform
cx-source-dept    code of the publishing (source) department
cx-target         ``region:410102`` one region · ``subtree:410100`` a region and all below it ·
                  ``level:province`` the first ancestor (or self) at that level
cx-grade          classification grade, 1 (public) … 4 (most sensitive)
cx-sharing        ``unconditional`` · ``conditional`` · ``not_shared``
cx-created-ms     creation time, milliseconds since the Unix epoch
cx-hops           the hop path, comma separated ``REGION`` + mark: ``^`` sent up, ``v`` sent down,
                  ``.`` delivered there; present and empty on a freshly published record
================  =====================================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from node.core.quoting import quoted
from node.core.topology import is_region_code
from node.errors import EnvelopeError

RECORD_ID = "cx-id"
RESOURCE = "cx-resource"
SOURCE_REGION = "cx-source-region"
SOURCE_DEPT = "cx-source-dept"
TARGET = "cx-target"
GRADE = "cx-grade"
SHARING = "cx-sharing"
CREATED_MS = "cx-created-ms"
HOPS = "cx-hops"
ENVELOPE_HEADERS = (
    RECORD_ID, RESOURCE, SOURCE_REGION, SOURCE_DEPT, TARGET, GRADE, SHARING, CREATED_MS, HOPS,
)  # fmt: skip

REFUSAL_REASON = "cx-refusal-reason"
REFUSAL_MESSAGE = "cx-refusal-message"
REFUSED_BY = "cx-refused-by"

MIN_GRADE, MAX_GRADE = 1, 4
_TOKEN = re.compile(r"[\x21-\x7e]{1,64}")
MAX_DIGITS = 19
"""Longest decimal number a header may hold (int64); longer ones are refused before ``int()``."""

Headers = Iterable[tuple[str, bytes]]


class Sharing(StrEnum):
    """Sharing type of a resource (无条件共享 / 有条件共享 / 不予共享)."""

    UNCONDITIONAL = "unconditional"
    CONDITIONAL = "conditional"
    NOT_SHARED = "not_shared"


class TargetKind(StrEnum):
    """How a target names its recipients."""

    REGION = "region"
    SUBTREE = "subtree"
    LEVEL = "level"


class Mark(StrEnum):
    """What a node did with a record, as written in the hop path."""

    UP = "^"
    DOWN = "v"
    DELIVERED = "."


@dataclass(frozen=True, slots=True)
class Target:
    """Where a record should go."""

    kind: TargetKind
    value: str

    @classmethod
    def parse(cls, text: str) -> Target:
        """Parse ``kind:value``; raise EnvelopeError naming what is wrong."""
        kind_text, sep, value = text.partition(":")
        if not sep:
            raise EnvelopeError(TARGET, f"expected KIND:VALUE, got {quoted(text)}")
        try:
            kind = TargetKind(kind_text)
        except ValueError:
            kinds = ", ".join(k.value for k in TargetKind)
            said = f"unknown kind {quoted(kind_text)} (expected {kinds})"
            raise EnvelopeError(TARGET, said) from None
        if kind is TargetKind.LEVEL:
            if not _TOKEN.fullmatch(value):
                raise EnvelopeError(TARGET, f"level name {quoted(value)} is empty or not printable")
        elif not is_region_code(value):
            raise EnvelopeError(TARGET, f"{quoted(value)} is not a six-digit region code")
        return cls(kind, value)

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.value}"


@dataclass(frozen=True, slots=True)
class Hop:
    """One entry of the hop path."""

    region: str
    mark: Mark

    def __str__(self) -> str:
        return f"{self.region}{self.mark.value}"


def parse_hops(text: str) -> tuple[Hop, ...]:
    """Parse a hop path such as ``410102^,410100^``; raise EnvelopeError if malformed."""
    if not text:
        return ()
    hops = []
    for entry in text.split(","):
        region, mark_text = entry[:-1], entry[-1:]
        if not is_region_code(region) or mark_text not in "^v.":
            raise EnvelopeError(
                HOPS, f"bad entry {quoted(entry)} (expected REGION followed by ^, v or .)"
            )
        hops.append(Hop(region, Mark(mark_text)))
    return tuple(hops)


def format_hops(hops: Iterable[Hop]) -> str:
    """Format a hop path for the ``cx-hops`` header."""
    return ",".join(str(hop) for hop in hops)


@dataclass(frozen=True, slots=True)
class Envelope:
    """The full envelope of one record, as published by a source department."""

    record_id: str
    resource: str
    source_region: str
    source_dept: str
    target: Target
    grade: int
    sharing: Sharing
    created_ms: int
    hops: tuple[Hop, ...] = ()

    def to_headers(self) -> list[tuple[str, bytes]]:
        """Render the envelope as Kafka headers."""
        values = (
            self.record_id, self.resource, self.source_region, self.source_dept, str(self.target),
            str(self.grade), self.sharing.value, str(self.created_ms), format_hops(self.hops),
        )  # fmt: skip
        return [
            (name, value.encode()) for name, value in zip(ENVELOPE_HEADERS, values, strict=True)
        ]

    @classmethod
    def from_headers(cls, headers: Headers) -> Envelope:
        """Parse and check every envelope header; raise EnvelopeError naming the first bad one.

        What records share is checked once and kept: the source and sharing headers of each
        resource (``_SOURCES``), each target and each hop path. A record whose three are kept
        only has its id and creation time checked. Anything wrong is found by the full parse,
        in its order, and nothing of such a record is kept.
        """
        text = header_texts(headers)
        get = text.get
        source_key = (get(RESOURCE), get(SOURCE_REGION), get(SOURCE_DEPT), get(GRADE), get(SHARING))
        source = _SOURCES.get(source_key)
        target = _TARGETS.get(get(TARGET))
        hops = _HOPS.get(get(HOPS))
        if source is not None and target is not None and hops is not None:
            record_id, created_text = get(RECORD_ID), get(CREATED_MS)
            if (
                created_text is not None
                and is_number(created_text)
                and record_id is not None
                and _TOKEN.fullmatch(record_id)
            ):
                resource, region, dept, grade, sharing = source
                return cls(
                    record_id, resource, region, dept, target, grade, sharing, int(created_text),
                    hops,
                )  # fmt: skip
        parsed = cls._parsed(text)
        _keep(_SOURCES, source_key, (parsed.resource, parsed.source_region, parsed.source_dept,
                                     parsed.grade, parsed.sharing))  # fmt: skip
        _keep(_TARGETS, text[TARGET], parsed.target)
        _keep(_HOPS, text[HOPS], parsed.hops)
        return parsed

    @classmethod
    def _parsed(cls, text: Mapping[str, str]) -> Envelope:
        """Check every header of ``text`` in turn; raise EnvelopeError naming the first bad one."""

        def required(name: str) -> str:
            value = text.get(name)
            if value is None:
                raise EnvelopeError(name, "missing")
            return value

        def token(name: str) -> str:
            value = required(name)
            if not _TOKEN.fullmatch(value):
                said = f"{quoted(value)} must be 1-64 printable ASCII characters"
                raise EnvelopeError(name, said)
            return value

        source_region = required(SOURCE_REGION)
        if not is_region_code(source_region):
            said = f"{quoted(source_region)} is not a six-digit region code"
            raise EnvelopeError(SOURCE_REGION, said)
        grade_text = required(GRADE)
        if not is_number(grade_text) or not MIN_GRADE <= int(grade_text) <= MAX_GRADE:
            said = f"{quoted(grade_text)} is not a grade {MIN_GRADE}-{MAX_GRADE}"
            raise EnvelopeError(GRADE, said)
        sharing_text = required(SHARING)
        try:
            sharing = Sharing(sharing_text)
        except ValueError:
            kinds = ", ".join(s.value for s in Sharing)
            raise EnvelopeError(SHARING, f"{quoted(sharing_text)} is not one of {kinds}") from None
        created_text = required(CREATED_MS)
        if not is_number(created_text):
            said = f"{quoted(created_text)} is not milliseconds since epoch"
            raise EnvelopeError(CREATED_MS, said)
        return cls(
            record_id=token(RECORD_ID),
            resource=token(RESOURCE),
            source_region=source_region,
            source_dept=token(SOURCE_DEPT),
            target=Target.parse(required(TARGET)),
            grade=int(grade_text),
            sharing=sharing,
            created_ms=int(created_text),
            hops=parse_hops(required(HOPS)),
        )


_SOURCES: dict[tuple[str | None, ...], tuple[str, str, str, int, Sharing]] = {}
"""Texts of resource, source region, department, grade and sharing that passed -> parsed."""
_TARGETS: dict[str | None, Target] = {}
"""Target texts that parsed -> the target."""
_HOPS: dict[str | None, tuple[Hop, ...]] = {}
"""Hop path texts that parsed -> the path."""
_Text = TypeVar("_Text")
_Parsed = TypeVar("_Parsed")
CHECKED_KEPT = 8192
"""Checked texts kept at most in each of the three (writers choose the headers): past it, the
kept ones are dropped and checked anew."""


def _keep(checked: dict[_Text, _Parsed], text: _Text, parsed: _Parsed) -> None:
    """Remember a checked header text (or texts) with what it parsed to."""
    if len(checked) >= CHECKED_KEPT:
        checked.clear()
    checked[text] = parsed


def is_number(text: str) -> bool:
    """Tell whether ``text`` is an unsigned decimal of at most MAX_DIGITS ASCII digits."""
    return 0 < len(text) <= MAX_DIGITS and text.isascii() and text.isdigit()


def header_texts(headers: Headers) -> Mapping[str, str]:
    """Decode the ``cx-`` headers as ASCII text (the last value wins); raise on non-ASCII.

    ``cx-prov`` (binary, see ``node.core.provenance``) is left out.
    """
    texts: dict[str, str] = {}
    for name, value in headers:
        if name.startswith("cx-") and name != "cx-prov":
            try:
                texts[name] = value.decode("ascii")
            except (UnicodeDecodeError, AttributeError):
                raise EnvelopeError(name, "value is not ASCII text") from None
    return texts
