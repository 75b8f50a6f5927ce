"""Hostile gateway input: publication bodies, JSON records, cursors and delivered records.

The gateway's pure parsers are fuzzed directly (no HTTP): ``_publication`` and ``_record_item``
(the body of a publication), ``compose`` (a JSON record into a framed value), ``decode_cursor``
and ``_delivered`` (a record read back from a delivery topic). JSON records start as real sample
records with one field replaced by a hostile JSON value. Properties: only the documented answers
(``_Answer``, ComposeError) escape; a delivered record is always shown.
"""

from __future__ import annotations

import base64
import json
from functools import partial
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sample_records import resource_code

from node.compose import ComposeError, compose, to_json
from node.core.envelope import CREATED_MS, HOPS, RESOURCE
from node.kafka.bridge import PROJECTION
from node.ops.gateway import (
    MAX_CURSOR_CHARS,
    Gateway,
    _Answer,
    _publication,
    _record_item,
    decode_cursor,
)  # fmt: skip
from tests.unit.test_fuzz_headers import HANG_LIMIT_S, attempt, fuzz, hostile_bytes
from tests.unit.test_fuzz_payload import CATALOG, HERE, NAMES, SCHEMAS, framed, published

FUZZ = fuzz(150)
json_values = st.recursive(
    st.none() | st.booleans() | st.text(max_size=20) | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
sharp_json = st.one_of(
    st.integers(-(10**400), 10**400),
    st.sampled_from([10**20, -(10**20), 2**63, 10**16, -(10**16), 253402300800000, -62135596800001]),
    st.sampled_from(["\ud800", "0000-00-00", "+10000-01-01", "2026-02-30", "9999-12-31T23:59:59-14:00",
                     "0001-01-01T00:00:00+14:00", "24:00", "1970-01-01T00:00:00Z", "", "²"]),
)  # fmt: skip
hostile_json = sharp_json | json_values | st.text(max_size=60)
"""JSON values a department might send: huge epoch milliseconds, edge dates, lone surrogates."""


@st.composite
def json_records(draw: st.DrawFn) -> tuple[str, Any]:
    """A resource code and a JSON record for it: a real one with fields replaced or added."""
    made = draw(published())
    name, datum = SCHEMAS.decode(made.value)
    record: dict[str, Any] = to_json(datum)
    if draw(st.booleans()):
        record[draw(st.sampled_from(sorted(record)))] = draw(sharp_json)
    for field in draw(st.lists(st.sampled_from([*sorted(record), "extra"]), max_size=2)):
        record[field] = draw(hostile_json)
    if draw(st.booleans()) and record:
        del record[draw(st.sampled_from(sorted(record)))]
    return resource_code(name, HERE), draw(st.just(record) | hostile_json)


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(json_records(), st.sampled_from([f"region:{HERE}", "subtree:410100", "level:x", "nowhere"]))
def test_a_json_record_composes_or_is_refused_naming_the_field(
    case: tuple[str, Any], target: str
) -> None:
    """``compose`` frames a record that decodes back, or raises ComposeError with a field path."""
    code, record = case
    entry = CATALOG.get(code)
    assert entry is not None
    composed = attempt(
        lambda: compose(CATALOG, SCHEMAS, code, record, region=HERE, department=entry.source_dept,
                        target=target, created_ms=0, record_id="r-1"),
        ComposeError,
    )  # fmt: skip
    if isinstance(composed, ComposeError):
        assert composed.field == "target" or composed.field.startswith("$")
        assert composed.problem
        return
    assert SCHEMAS.decode(composed.value)[0] == entry.schema


FIELDS = [(name, f["name"]) for name in NAMES for f in SCHEMAS.by_name[name].parsed["fields"]]


@pytest.mark.timeout(HANG_LIMIT_S)
@pytest.mark.parametrize(("schema", "field"), FIELDS)
@fuzz(8)
@given(data=st.data())
def test_each_field_of_a_json_record_takes_any_json_value_or_is_named(
    schema: str, field: str, data: st.DataObject
) -> None:
    """Per field: a sharp or random JSON value composes, or ComposeError names that field."""
    made = data.draw(published((schema,)))
    record = {**to_json(SCHEMAS.decode(made.value)[1]), field: data.draw(sharp_json | hostile_json)}
    code = resource_code(schema, HERE)
    entry = CATALOG.get(code)
    assert entry is not None
    composed = attempt(
        lambda: compose(CATALOG, SCHEMAS, code, record, region=HERE, department=entry.source_dept,
                        target=f"region:{HERE}", created_ms=0, record_id="r-1"),
        ComposeError,
    )  # fmt: skip
    if isinstance(composed, ComposeError):
        assert composed.field == "$" or composed.field.startswith(f"$.{field}"), composed


bodies = st.one_of(
    hostile_json,
    st.fixed_dictionaries(
        {"target": hostile_json | st.just(f"region:{HERE}")},
        optional={
            "record": hostile_json,
            "records": st.lists(hostile_json, max_size=4) | hostile_json,
            "extra": hostile_json,
        },
    ),
)


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(bodies, st.integers(1, 3))
def test_a_publication_body_is_read_or_answered_with_a_status(body: Any, max_batch: int) -> None:
    """``_publication`` and ``_record_item`` raise only an answer (4xx) or a ComposeError."""
    read = attempt(lambda: _publication(body, max_batch), _Answer)
    if isinstance(read, _Answer):
        assert read.status in (413, 422)
        assert read.body["error"]
        return
    target, items = read
    assert isinstance(target, str)
    assert 1 <= len(items) <= max_batch
    for item in items:
        made = attempt(partial(_record_item, item), ComposeError)
        if isinstance(made, ComposeError):
            assert made.field
        else:
            assert 1 <= len(made[0]) <= 64


cursors = st.one_of(
    st.text(max_size=100),
    st.binary(max_size=60).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    json_values.map(lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).decode()),
    st.sampled_from(["e30", "eyIxIjotMX0", "eyLCsiI6MX0", "W10", "=" * 10, "a" * (MAX_CURSOR_CHARS + 1)]),
    st.integers(1, 3000).map(lambda n: base64.urlsafe_b64encode(b"[" * n).decode()),
)  # fmt: skip


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(cursors)
def test_a_cursor_is_decoded_or_answered_400(cursor: str) -> None:
    """Any cursor text decodes to partition offsets or is a 400 answer."""
    positions = attempt(lambda: decode_cursor(cursor), _Answer)
    if isinstance(positions, _Answer):
        assert positions.status == 400
        return
    assert all(isinstance(p, int) and 0 <= o < 2**63 for p, o in positions.items())


class Record(NamedTuple):
    """A record read from a delivery topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, Any]]
    timestamp: int


def _shown(record: Record) -> dict[str, Any]:
    """Run the gateway's ``_delivered`` without the rest of a gateway."""
    fake: Any = SimpleNamespace(_schemas=SCHEMAS, _catalog=CATALOG, _projections={})
    fake._decode = lambda *args: Gateway._decode(fake, *args)
    shown: dict[str, Any] = Gateway._delivered(fake, record)
    return shown


@st.composite
def delivered(draw: st.DrawFn) -> Record:
    """A record as read from a delivery topic, its headers and value possibly broken."""
    made = draw(published())
    headers: list[tuple[str, Any]] = list(made.headers)
    changes = st.tuples(
        st.sampled_from([CREATED_MS, HOPS, RESOURCE, PROJECTION, "cx-id"]),
        hostile_bytes
        | st.none()
        | st.sampled_from([b"id_number,name", b"nope", b",", b"", b"9" * 5000, "²".encode()]),
    )
    headers += draw(st.lists(changes, max_size=3))
    value = draw(framed(made.value))
    return Record(0, 0, b"k", value, headers, 0)


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(delivered())
def test_a_delivered_record_is_always_shown_as_json(record: Record) -> None:
    """Whatever its headers and value, a delivered record is shown (with a problem if need be)."""
    shown = _shown(record)
    json.dumps(shown)
    assert ("problem" in shown) == (shown["value"] is None)
    assert shown["resource"] == "" or shown["resource"] in {
        resource_code(n, HERE) for n in NAMES
    } | {v.decode("latin-1") for _, v in record.headers if isinstance(v, bytes)}
