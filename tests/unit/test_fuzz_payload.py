"""Hostile values: Avro framing and decoding, the ingress checks and the whole decision over a batch.

Values start as real records of the shipped schemas (with random fields and deliberate quality
flaws) and are then broken in one way: truncated, extended, wrong marker, unknown or another
schema's fingerprint, overlong or huge varints, a flipped byte. Headers are the record's own with
one thing broken. Properties: only the documented refusals, each with a reason and a message.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any, NamedTuple

import pytest
from fastavro import schemaless_reader
from hypothesis import given
from hypothesis import strategies as st
from sample_records import FLAWS, LEGAL_ENTITY, LICENCE, PERSON, Flaw, resource_code, sample

from node.catalog_files import load_catalog, packaged_catalog_dir
from node.codec import HEADER_SIZE, MAGIC, load_schemas, packaged_schema_dir
from node.core.decision import Decider
from node.core.grants import Grant, GrantBook, GrantStatus
from node.core.ingress import admit
from node.core.outcome import Delivered, Reason, Refused
from node.core.policy import Department, Policy, PolicySnapshot
from node.core.quality import parse_header as parse_quality_header
from node.core.routing import Arrival, Router
from node.core.topology import Topology
from node.errors import PayloadError
from tests.unit.test_fuzz_headers import HANG_LIMIT_S, attempt, fuzz, hostile_bytes, mutated

FUZZ = fuzz(120)
SCHEMAS = load_schemas(packaged_schema_dir())
CATALOG = load_catalog(packaged_catalog_dir(), SCHEMAS)
HERE = "410102"
NAMES = (PERSON, LEGAL_ENTITY, LICENCE)
STRINGS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["", " ", "\u3000", "410102", "999999", "00", "2026-02-30", "91410100MA00000000"]
    ),
    st.from_regex(
        r"[0-9]{6}(19|20)[0-9]{2}(0[1-9]|1[0-2])[0-3][0-9][0-9]{3}[0-9X]", fullmatch=True
    ),
    st.from_regex(r"[0-9A-HJ-NPQRTUWXY]{18}", fullmatch=True),
    st.text(alphabet="0123456789", min_size=1, max_size=30),
)
"""Item values near the quality rules' edges: identity numbers, credit codes, region codes."""
DATES = st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31))
TIMESTAMPS = st.datetimes(
    dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30), timezones=st.just(dt.UTC)
) | st.integers(-(2**62), 2**62)


def value_of(avro_type: Any) -> st.SearchStrategy[Any]:
    """A strategy for values of one (parsed) Avro field type of the shipped schemas."""
    if isinstance(avro_type, list):
        return st.one_of(*(value_of(branch) for branch in avro_type))
    if avro_type == "null":
        return st.none()
    if avro_type == "string":
        return STRINGS
    if avro_type in ("int", "long"):
        bits = 31 if avro_type == "int" else 63
        return st.integers(-(2**bits), 2**bits - 1)
    logical = avro_type.get("logicalType")
    if logical == "date":
        return DATES
    if logical == "timestamp-millis":
        return TIMESTAMPS
    if avro_type.get("type") == "enum":
        return st.sampled_from(avro_type["symbols"])
    return value_of(avro_type["type"])


def _decoded(value: bytes, name: str) -> dict[str, Any]:
    datum = schemaless_reader(io.BytesIO(value[HEADER_SIZE:]), SCHEMAS.by_name[name].parsed, None)
    assert isinstance(datum, dict)
    return datum


class Made(NamedTuple):
    """A record as published: its schema, headers and framed value."""

    schema: str
    headers: list[tuple[str, bytes]]
    value: bytes


@st.composite
def published(draw: st.DrawFn, names: tuple[str, ...] = NAMES) -> Made:
    """A real record of a catalog resource published here, some flawed, some fields random."""
    name = draw(st.sampled_from(names))
    flaw = draw(st.none() | st.sampled_from(list(FLAWS[name])))
    target = draw(
        st.sampled_from([f"region:{HERE}", "subtree:410100", "level:city", "region:410103"])
    )
    made = sample(
        SCHEMAS, name, HERE, target, seed=draw(st.integers(0, 2**32)),
        created_ms=draw(st.integers(0, 2**43)), flaw=flaw if flaw is None else Flaw(flaw),
        grade=draw(st.integers(1, 4)),
    )  # fmt: skip
    datum = _decoded(made.value, name)
    fields = {f["name"]: f["type"] for f in SCHEMAS.by_name[name].parsed["fields"]}
    changed = st.lists(st.sampled_from(sorted(fields)), max_size=2, unique=True)
    for field in draw(st.just([]) | changed):
        datum[field] = draw(value_of(fields[field]))
    try:  # fastavro writes some timestamps it cannot read back: those are kept out
        value = SCHEMAS.encode(name, datum)
        SCHEMAS.decode(value)
    except PayloadError:
        value = made.value
    return Made(name, made.envelope.to_headers(), value)


def _varint(n: int) -> bytes:
    zigzag, out = (n << 1) ^ (n >> 63), bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    return bytes([*out, zigzag])


@st.composite
def framed(draw: st.DrawFn, value: bytes) -> bytes | None:
    """``value`` kept, or broken in one way a hostile or buggy writer might break it."""
    body = value[HEADER_SIZE:]
    other = SCHEMAS.by_name[draw(st.sampled_from(NAMES))].fingerprint
    at = draw(st.integers(0, len(value)))
    if draw(st.booleans()):
        return value
    how = draw(st.sampled_from([
        "keep", "truncate", "extend", "magic", "fingerprint", "other", "overlong", "huge",
        "negative", "flip", "random", "none",
    ]))  # fmt: skip
    if how == "keep":
        return value
    if how == "truncate":
        return value[:at]
    if how == "extend":
        return value + draw(st.binary(min_size=1, max_size=20))
    if how == "magic":
        return draw(st.binary(min_size=2, max_size=2)) + value[2:]
    if how == "fingerprint":
        return MAGIC + draw(st.binary(min_size=8, max_size=8)) + body
    if how == "other":
        return MAGIC + other + body
    if how == "overlong":
        return value[:at] + b"\xff" * draw(st.integers(1, 30)) + value[at:]
    if how in ("huge", "negative"):
        length = draw(st.integers(2**20, 2**62)) * (1 if how == "huge" else -1)
        return MAGIC + other + _varint(length) + draw(st.binary(max_size=20))
    if how == "flip":
        if not value:
            return value
        index = draw(st.integers(0, len(value) - 1))
        return (
            value[:index] + bytes([value[index] ^ draw(st.integers(1, 255))]) + value[index + 1 :]
        )
    if how == "random":
        return MAGIC + other + draw(st.binary(max_size=200))
    return None


@st.composite
def hostile_values(draw: st.DrawFn) -> bytes | None:
    """A framed value of a real record, broken or not."""
    return draw(framed(draw(published()).value))


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(
    hostile_values(),
    st.lists(
        st.sampled_from(
            ["id_number", "name", "credit_code", "region", "licence_id", "status", "nope"]
        ),
        max_size=4,
    ),
)
def test_a_broken_frame_decodes_to_a_record_or_is_a_payload_error(
    value: bytes | None, items: list[str]
) -> None:
    """Decoding yields a record of a known schema or PayloadError saying why; so does projecting."""
    decoded = attempt(lambda: SCHEMAS.decode(value or b""), PayloadError)
    if isinstance(decoded, PayloadError):
        assert str(decoded)
        return
    name, datum = decoded
    assert name in NAMES
    assert isinstance(datum, dict)
    projected = attempt(lambda: SCHEMAS.project(value or b"", tuple(items)), PayloadError)
    if isinstance(projected, PayloadError):
        assert str(projected)
        return
    schema = SCHEMAS.projection(name, tuple(items))
    assert projected[:HEADER_SIZE] == MAGIC + schema.fingerprint
    kept = schemaless_reader(io.BytesIO(projected[HEADER_SIZE:]), schema.parsed, None)
    assert isinstance(kept, dict)
    assert set(kept) <= set(items)


class Entered(NamedTuple):
    """A record at ingress, and the header broken in it (None: none, or not one header)."""

    headers: list[tuple[str, Any]]
    value: bytes | None
    hit: str | None


@st.composite
def entering(draw: st.DrawFn) -> Entered:
    """A record arriving at ingress: its headers and value, either or both broken (or neither)."""
    made = draw(published())
    headers, hit = (
        draw(st.just((made.headers, None))) if draw(st.booleans()) else mutated(draw, made.headers)
    )
    return Entered(headers, draw(framed(made.value)), hit)


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(entering(), st.integers(0, 2**45))
def test_admission_lets_in_or_refuses_with_a_reason_and_a_readable_verdict(
    record: Entered, now_ms: int
) -> None:
    """``admit`` never raises; a refusal has a reason and a message; a verdict's header parses.

    The verdict travels as ``cx-quality``, which later hops read without decoding the value.
    """
    entry = admit(record.headers, record.value, HERE, SCHEMAS, CATALOG, now_ms)
    if entry.refusal is not None:
        assert entry.refusal.reason in (Reason.BAD_ENVELOPE, Reason.BAD_PAYLOAD, Reason.QUALITY)
        assert entry.refusal.message
        if entry.refusal.reason is Reason.QUALITY:
            assert entry.verdict is not None
            assert entry.verdict.refused
    if entry.verdict is not None:
        header = entry.verdict.header()
        assert parse_quality_header(header).status is entry.verdict.status


def _decider(arrival: Arrival, *, validate: bool) -> Decider:
    """A county node (410102) with two departments, one holding a grant limited to two items."""
    code = resource_code(PERSON, HERE)
    grant = Grant("G1", code, "HRSS", HERE, ("id_number", "name"), 2**62, GrantStatus.APPROVED, 1)
    codes = frozenset(resource_code(name, HERE) for name in NAMES)
    snapshot = PolicySnapshot(
        CATALOG,
        departments=(Department("HRSS", 3, codes), Department("EDU", 1, codes)),
        grants=GrantBook([grant], 0),
    )
    router = Router(Topology(HERE, "county", "410100", ()))
    return Decider(router, Policy(snapshot), arrival, SCHEMAS, validate_ingress=validate)


DECIDERS = {
    (arrival, validate): _decider(arrival, validate=validate)
    for arrival in Arrival
    for validate in (True, False)
}
header_names = st.sampled_from(["cx-hops", "cx-target", "cx-grade", "cx-quality", "cx-version",
                                "cx-corrects", "cx-heartbeat", "x-trace", "", "cx-id"])  # fmt: skip
"""Names of headers added to a record: envelope ones (then doubled), others the node reads, any."""


class Seen(NamedTuple):
    """A record as the decision sees it."""

    headers: list[tuple[str, Any]]
    value: bytes | None


@st.composite
def batches(draw: st.DrawFn) -> list[Seen]:
    """A batch of 1-5 records: broken records, plus random headers of any name and value."""
    seen = []
    for _ in range(draw(st.integers(1, 5))):
        record = draw(entering())
        extra = draw(st.lists(st.tuples(header_names, hostile_bytes | st.none()), max_size=2))
        seen.append(Seen([*record.headers, *extra], record.value))
    return seen


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(batches(), st.sampled_from(list(Arrival)), st.booleans(), st.integers(0, 2**45))
def test_the_decision_gives_every_record_an_outcome_with_reasons_for_refusals(
    records: list[Seen], arrival: Arrival, validate: bool, now_ms: int
) -> None:
    """``Decider.decide`` returns one outcome and one set of facts per record, and never raises."""
    outcomes, facts = DECIDERS[arrival, validate].decide(records, now_ms=now_ms)
    assert len(outcomes) == len(facts) == len(records)
    for outcome, fact in zip(outcomes, facts, strict=True):
        assert isinstance(fact.created_ms, int)
        if isinstance(outcome, Refused):
            assert isinstance(outcome.reason, Reason)
            assert outcome.message
            continue
        assert isinstance(outcome, Delivered)
        assert outcome.copies
        for copy in outcome.copies:
            assert copy.items is None or copy.value is not None
        for _, refusal in outcome.withheld:
            assert refusal.message
