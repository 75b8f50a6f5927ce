"""The audit trail's entries, their canonical encoding, the per-node hash chain and its verifier.

An entry says what the node did with one record, towards one destination: forwarded (a copy sent
up or down), delivered (a copy delivered at this level) or refused (the record, or one of its
copies, with the reason). It names the record, its resource, source region and department, the
destination, the time, and the SHA-256 of the payload that went there, never the payload. A gap
entry stands for entries the node had to drop unwritten (the audit topic was unreachable for
too long), so the trail says so instead of going silent.

Each node chains its own entries: ``seq`` counts 0, 1, 2, ... and ``prev`` is the hash of the
entry before (``GENESIS`` for the first). An entry's ``hash`` is the SHA-256 of a domain tag and
the canonical encoding of every other field, ``seq`` and ``prev`` included. The canonical
encoding is one line of JSON with sorted keys, no spaces and ASCII only; the stored line is the
same with ``hash`` added as its last key.

``verify`` walks a chain in the order it was stored and names the first problem: an entry
removed (its ``seq`` is skipped), altered (its hash does not match its content, or the next
entry was chained to another hash) or reordered (a ``seq`` found before its turn, repeated or
going backwards). What a chain cannot show on its own: its last entries removed, or its last
entry rewritten with a fresh hash; ``tip`` (the last entry the node knows it wrote) closes that.

Pure: no I/O, no clock (times are given).
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from json.encoder import encode_basestring_ascii as _quote  # what json.dumps quotes with
from typing import Any, NamedTuple

from node.core import foreign_json
from node.core.foreign_json import ForeignJsonError

GENESIS = "0" * 64
"""The ``prev`` of a chain's first entry."""
VERSION = 1
_DOMAIN = b"cx-audit-v1\n"
_HEX = frozenset("0123456789abcdef")


class Outcome(StrEnum):
    """What the node did with a record towards one destination."""

    FORWARDED = "forwarded"  # a copy sent up to the parent or down to a child
    DELIVERED = "delivered"  # a copy delivered at this level (a department or the inbox)
    REFUSED = "refused"  # the record, or the copy named by the destination, was refused


class Fact(NamedTuple):
    """One outcome of one record, as the link knows it at commit (not chained yet).

    A named tuple: one is made per copy, it must be cheap to make.
    """

    record_id: str
    resource: str
    source_region: str
    source_dept: str
    destination: str
    """``up:REGION``, ``down:REGION``, ``local:DEPT`` or ``local:inbox``; a refused copy names
    the copy (``down:REGION/DEPT`` ...), a refused record is ``""``."""
    time_ms: int
    outcome: Outcome
    reason: str
    """The refusal reason code; ``""`` unless refused."""
    detail: str
    """The refusal message in words; ``""`` unless refused."""
    sha256: str
    """Hex SHA-256 of the payload that went to the destination (or was refused)."""


@dataclass(frozen=True, slots=True)
class Gap:
    """``dropped`` entries of outcomes between ``first_ms`` and ``last_ms`` were never written."""

    dropped: int
    first_ms: int
    last_ms: int


Body = Fact | Gap


def payload_digest(value: bytes | None) -> str:
    """Return the hex SHA-256 of a payload (of no bytes for a value-less record)."""
    return hashlib.sha256(value or b"").hexdigest()


_SORTING = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
_IN_ORDER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)
"""For dicts built with their keys already sorted (``_ordered``): the same bytes, faster."""


def _canonical(fields: dict[str, Any]) -> bytes:
    return _SORTING.encode(fields).encode()


def _digest(canonical: bytes) -> str:
    return hashlib.sha256(_DOMAIN + canonical).hexdigest()


def _ordered(seq: int, prev: str, body: Body) -> dict[str, Any]:
    """Every field but ``hash``, its keys in sorted order (the canonical order)."""
    if isinstance(body, Gap):
        return {
            "dropped": body.dropped, "first_ms": body.first_ms, "kind": "gap",
            "last_ms": body.last_ms, "prev": prev, "seq": seq, "v": VERSION,
        }  # fmt: skip
    return {
        "destination": body.destination, "detail": body.detail, "id": body.record_id,
        "kind": "record", "outcome": body.outcome.value, "prev": prev, "reason": body.reason,
        "resource": body.resource, "seq": seq, "sha256": body.sha256,
        "source_dept": body.source_dept, "source_region": body.source_region,
        "time_ms": body.time_ms, "v": VERSION,
    }  # fmt: skip


class Entry(NamedTuple):
    """A chained entry: its place in the chain, what it says and its hash (a named tuple)."""

    seq: int
    prev: str
    body: Body
    hash: str
    canonical: bytes = b""
    """The canonical encoding the hash is over (kept from chaining or parsing)."""

    def fields(self) -> dict[str, Any]:
        """Every field but ``hash``, as hashed."""
        return _ordered(self.seq, self.prev, self.body)

    def encode(self) -> bytes:
        """Return the stored line: the canonical encoding with ``hash`` added as its last key."""
        canonical = self.canonical or _canonical(self.fields())
        return b'%s,"hash":"%s"}' % (canonical[:-1], self.hash.encode())

    def to_json(self) -> dict[str, Any]:
        """Return the entry as a JSON object (the HTTP API's form)."""
        return {**self.fields(), "hash": self.hash}


_Pieces = tuple[str, str, str, str, str, str]
_PIECES: dict[tuple[Any, ...], _Pieces] = {}
"""A record entry's canonical encoding in pieces, per what entries of one kind of copy share
(resource, region, department, destination, outcome, reason, detail): those fields quoted once,
with ``id``, ``prev``, ``seq``, ``sha256`` and ``time_ms`` to go between the pieces. The time is
not in them, so a kind's pieces serve every batch (each has a time of its own)."""
PIECES_KEPT = 4096
"""Sets of pieces kept at most (refusals' details vary): past it they are made afresh."""
_OUTCOMES = {outcome: _quote(outcome.value) for outcome in Outcome}
_new_tuple = tuple.__new__  # an Entry from its fields, without the named tuple's keyword handling
_SEEDED = hashlib.sha256(_DOMAIN)
"""The hash of the domain tag, copied for each entry rather than the tag prepended."""
_SHARED = operator.itemgetter(1, 2, 3, 4, 6, 7, 8)
"""A fact's fields but id, time and sha256: what its pieces are made of."""


def _pieces(fact: Fact) -> _Pieces:
    """Return what ``_canonical`` makes of ``_ordered``'s dict around id, prev, seq, sha256, time.

    ``prev`` goes between quotes of its own piece: it is always a hash (hex digits, nothing to
    escape), this chain's or a tip's read back and checked by ``parse_entry``.
    """
    return (
        f'{{"destination":{_quote(fact.destination)},"detail":{_quote(fact.detail)},"id":',
        f',"kind":"record","outcome":{_OUTCOMES[fact.outcome]},"prev":"',
        f'","reason":{_quote(fact.reason)},"resource":{_quote(fact.resource)},"seq":',
        ',"sha256":',
        f',"source_dept":{_quote(fact.source_dept)},"source_region":'
        f'{_quote(fact.source_region)},"time_ms":',
        f',"v":{VERSION}}}',
    )


def make_entry(seq: int, prev: str, body: Body) -> Entry:
    """Chain ``body`` as entry ``seq`` after the entry whose hash is ``prev``."""
    if body.__class__ is not Fact:
        canonical = _IN_ORDER.encode(_ordered(seq, prev, body)).encode()
        return Entry(seq, prev, body, _digest(canonical), canonical)
    fact: Fact = body
    shared = _SHARED(fact)
    pieces = _PIECES.get(shared)
    if pieces is None:
        if len(_PIECES) >= PIECES_KEPT:
            _PIECES.clear()
        pieces = _PIECES[shared] = _pieces(fact)
    at_id, at_prev, at_seq, at_sha256, at_time, rest = pieces
    canonical = (
        f"{at_id}{_quote(fact.record_id)}{at_prev}{prev}{at_seq}{seq}"
        f"{at_sha256}{_quote(fact.sha256)}{at_time}{fact.time_ms}{rest}"
    ).encode()
    hashed = _SEEDED.copy()
    hashed.update(canonical)
    return _new_tuple(Entry, (seq, prev, body, hashed.hexdigest(), canonical))


@dataclass(frozen=True, slots=True)
class Tip:
    """The last entry of a chain: where the next one continues."""

    seq: int
    hash: str

    @property
    def next_seq(self) -> int:
        """The seq of the entry that follows."""
        return self.seq + 1


def chain(bodies: Iterable[Body], after: Tip | None) -> list[Entry]:
    """Chain ``bodies`` in order after ``after`` (None: start a new chain at seq 0)."""
    seq, prev = (0, GENESIS) if after is None else (after.next_seq, after.hash)
    entries = []
    for body in bodies:
        entry = make_entry(seq, prev, body)
        entries.append(entry)
        seq, prev = seq + 1, entry.hash
    return entries


class EntryError(ValueError):
    """A stored line is not an entry, or its hash does not match its content."""


def parse_entry(line: bytes) -> Entry:
    """Read a stored line back; raise EntryError if malformed or its hash is not its content's."""
    try:
        data = foreign_json.load(line)
    except ForeignJsonError as error:
        raise EntryError(str(error)) from error
    if not isinstance(data, dict):
        raise EntryError("not a JSON object")
    stored = data.pop("hash", None)
    if not _is_hash(stored):
        raise EntryError("no hash of 64 hex digits")
    canonical = _canonical(data)
    if _digest(canonical) != stored:
        raise EntryError("its hash does not match its content")
    try:
        entry = Entry(_int(data, "seq"), _str(data, "prev"), _body(data), stored, canonical)
    except (KeyError, TypeError, ValueError) as error:
        raise EntryError(f"malformed field: {error}") from error
    if data.get("v") != VERSION or not _is_hash(entry.prev) or entry.seq < 0:
        raise EntryError("not a version 1 entry with a seq and a prev hash")
    if entry.fields() != data:
        raise EntryError("fields other than an entry's")
    return entry


def _is_hash(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def _int(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key} is not an integer")
    return value


def _str(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _body(data: dict[str, Any]) -> Body:
    kind = data.get("kind")
    if kind == "gap":
        return Gap(_int(data, "dropped"), _int(data, "first_ms"), _int(data, "last_ms"))
    if kind != "record":
        raise ValueError(f"unknown kind {kind!r}")
    return Fact(
        _str(data, "id"),
        _str(data, "resource"),
        _str(data, "source_region"),
        _str(data, "source_dept"),
        _str(data, "destination"),
        _int(data, "time_ms"),
        Outcome(_str(data, "outcome")),
        _str(data, "reason"),
        _str(data, "detail"),
        _str(data, "sha256"),
    )


@dataclass(frozen=True, slots=True)
class Located:
    """A stored line and where it is: the Kafka offset and its index within that record."""

    offset: int
    index: int
    line: bytes

    @property
    def where(self) -> str:
        """``offset 12`` (or ``offset 12 #3`` for the fourth entry of a record)."""
        return f"offset {self.offset}" + (f" #{self.index}" if self.index else "")


class ProblemKind(StrEnum):
    """How a chain was tampered with, as far as it shows."""

    REMOVED = "removed"
    ALTERED = "altered"
    REORDERED = "reordered"


@dataclass(frozen=True, slots=True)
class Problem:
    """The first problem of a chain: which entry (``seq``), where, and what is wrong."""

    kind: ProblemKind
    seq: int
    offset: int
    index: int
    message: str

    def to_json(self) -> dict[str, Any]:
        """Return the problem as a JSON object."""
        return {
            "kind": self.kind.value,
            "seq": self.seq,
            "offset": self.offset,
            "index": self.index,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``verify`` found: entries read, the first problem (None: intact), gaps declared."""

    entries: int
    problem: Problem | None
    gaps: int
    dropped: int
    """Entries the gap entries say were dropped unwritten."""
    tip: Tip | None
    first: int = 0
    """The seq the stored chain starts at: above 0 when the topic's start was cut (retention)."""

    @property
    def intact(self) -> bool:
        """True when no problem was found."""
        return self.problem is None

    def describe(self) -> str:
        """One line for people."""
        if self.problem is not None:
            return f"chain broken: {self.problem.message}"
        said = f"chain of {self.entries} entries intact"
        if self.first:
            said += f" from entry {self.first} (those before expired or were deleted at the start)"
        if self.gaps:
            said += f" ({self.gaps} gap entries: {self.dropped} entries dropped unwritten)"
        return said

    def to_json(self) -> dict[str, Any]:
        """Return the verdict as a JSON object."""
        return {
            "intact": self.intact,
            "entries": self.entries,
            "first_seq": self.first,
            "gaps": self.gaps,
            "dropped": self.dropped,
            "last_seq": None if self.tip is None else self.tip.seq,
            "problem": None if self.problem is None else self.problem.to_json(),
            "summary": self.describe(),
        }


def verify(lines: Sequence[Located], *, tip: Tip | None = None) -> Verdict:
    """Walk a chain in stored order; return the first problem, or that it is intact.

    Checked per entry, in this order: it parses and its hash matches its content (else
    altered), its seq is the next one (a later seq is a removal, unless the skipped entry comes
    later, then a reordering; an earlier or repeated seq is a reordering), its prev is the
    previous entry's hash (else the previous entry was rewritten with a fresh hash: altered,
    that one named). ``tip``, the last entry its node says it wrote, also catches removed or
    rewritten last entries. A chain stored from past offset 0 (retention deleted the topic's
    start) is walked from its first entry, and the verdict says which (``first``).
    """
    entries: list[Entry | EntryError] = []
    for located in lines:
        try:
            entries.append(parse_entry(located.line))
        except EntryError as error:
            entries.append(error)
    ahead: dict[int, int] = {}  # how often each seq occurs from here on
    for entry in entries:
        if isinstance(entry, Entry):
            ahead[entry.seq] = ahead.get(entry.seq, 0) + 1
    walk = _Walk()
    if lines and lines[0].offset > 0 and isinstance(entries[0], Entry):
        walk.begin_at(entries[0])  # offsets never restart: records before it were deleted
    for located, entry in zip(lines, entries, strict=True):
        problem = walk.step(located, entry, ahead, tip)
        if problem is not None:
            return walk.verdict(problem)
    return walk.verdict(walk.against(tip))


class _Walk:
    """The state of ``verify`` between entries: the next seq, the last hash, gaps seen."""

    def __init__(self) -> None:
        self.expected = 0
        self.prev = GENESIS
        self.last: Located | None = None
        self.gaps = 0
        self.dropped = 0
        self.first = 0

    def begin_at(self, entry: Entry) -> None:
        """Start the walk at ``entry``: the topic's start was cut by retention (or deletion)."""
        self.first = self.expected = entry.seq
        self.prev = entry.prev

    def verdict(self, problem: Problem | None) -> Verdict:
        tip = None if self.expected == 0 or problem else Tip(self.expected - 1, self.prev)
        counted = self.expected - self.first
        return Verdict(counted, problem, self.gaps, self.dropped, tip, self.first)

    def step(
        self, at: Located, entry: Entry | EntryError, ahead: dict[int, int], tip: Tip | None
    ) -> Problem | None:
        expected = self.expected
        if isinstance(entry, EntryError):
            return _problem(
                ProblemKind.ALTERED,
                expected,
                at,
                f"entry {expected} altered at {at.where}: {entry}",
            )
        ahead[entry.seq] -= 1
        problem = _out_of_turn(entry.seq, expected, at, ahead)
        if problem is not None:
            return problem
        if entry.prev != self.prev:
            if self.last is None:
                return _problem(
                    ProblemKind.ALTERED,
                    0,
                    at,
                    f"entry 0 altered at {at.where}: its prev is not the chain's start",
                )
            last = self.last
            self.expected -= 1  # the entry before is the bad one: not counted as verified
            return _problem(
                ProblemKind.ALTERED,
                expected - 1,
                last,
                f"entry {expected - 1} altered at {last.where}: entry {expected} "
                "was chained to another hash (it was rewritten with a fresh hash)",
            )
        if tip is not None and entry.seq == tip.seq and entry.hash != tip.hash:
            return _problem(
                ProblemKind.ALTERED,
                entry.seq,
                at,
                f"entry {entry.seq} altered at {at.where}: not the entry the node wrote",
            )
        if isinstance(entry.body, Gap):
            self.gaps += 1
            self.dropped += entry.body.dropped
        self.expected, self.prev, self.last = expected + 1, entry.hash, at
        return None

    def against(self, tip: Tip | None) -> Problem | None:
        """Name the entries missing at the end, up to the last one the node says it wrote."""
        if tip is None or self.expected > tip.seq:
            return None
        offset = 0 if self.last is None else self.last.offset + 1
        start = self.expected
        missing = f"entry {start}" if start == tip.seq else f"entries {start}-{tip.seq}"
        return Problem(
            ProblemKind.REMOVED,
            start,
            offset,
            0,
            f"{missing} missing at the end: the node wrote up to entry {tip.seq}",
        )


def _problem(kind: ProblemKind, seq: int, at: Located, message: str) -> Problem:
    return Problem(kind, seq, at.offset, at.index, message)


def _out_of_turn(seq: int, expected: int, at: Located, ahead: dict[int, int]) -> Problem | None:
    """Name a seq found out of its turn (removed or reordered), or None if it is the next."""
    if seq == expected:
        return None
    if seq < expected:
        return _problem(
            ProblemKind.REORDERED,
            seq,
            at,
            f"entry {seq} reordered: found at {at.where}, after entry {expected - 1}",
        )
    if ahead.get(expected, 0) > 0:
        return _problem(
            ProblemKind.REORDERED,
            seq,
            at,
            f"entry {seq} reordered: found at {at.where}, where entry {expected} "
            "belongs (which comes later)",
        )
    missing = f"entry {expected}" if seq == expected + 1 else f"entries {expected}-{seq - 1}"
    after = f"after {expected - 1}" if expected else f"(the chain starts at {seq})"
    return _problem(
        ProblemKind.REMOVED,
        expected,
        at,
        f"{missing} missing {after}: entry {seq} follows at {at.where}",
    )
