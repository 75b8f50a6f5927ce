"""Avro single-object framing of resource records."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.codec import MAGIC, SchemaSet, packaged_schema_dir
from node.core.ingress import check_ingress
from node.core.outcome import Reason
from node.errors import PayloadError, SchemaError
from node.samples import BUILDERS, PERSON, sample

SCHEMAS = SchemaSet.load(packaged_schema_dir())


def test_the_three_base_resource_schemas_load() -> None:
    """Person, legal entity and electronic licence are shipped, with distinct fingerprints."""
    assert set(SCHEMAS.by_name) == set(BUILDERS)
    assert len(SCHEMAS.by_fingerprint) == 3


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_sample_records_round_trip_with_the_framing(name: str) -> None:
    """Each resource encodes as C3 01 + fingerprint + body and decodes back unchanged."""
    datum = BUILDERS[name](random.Random(5), "410102")
    value = SCHEMAS.encode(name, datum)
    assert value[:2] == MAGIC
    assert value[2:10] == SCHEMAS.by_name[name].fingerprint
    assert SCHEMAS.decode(value) == (name, datum)


def test_the_fingerprint_is_the_avro_reference_value() -> None:
    """The CRC-64-AVRO fingerprint of the "null" schema matches the Avro specification's."""
    assert SchemaSet.parse("null").fingerprint == (7195948357588979594).to_bytes(8, "little")


@pytest.mark.parametrize(
    ("mangle", "needle"),
    [(lambda v: v[:-3], "does not decode"), (lambda v: v + b"\x00", "bytes after"),
     (lambda v: b"\x00\x01" + v[2:], "not Avro single-object"), (lambda v: v[:2] + b"\xff" * 8 + v[10:], "unknown schema"),
     (lambda v: v[:5], "not Avro single-object")],
)  # fmt: skip
def test_broken_values_raise_payload_errors(mangle: object, needle: str) -> None:
    """Truncated, padded, unframed and unknown-schema values are each reported clearly."""
    value = sample(SCHEMAS, PERSON, "410102", "region:410000", seed=1, created_ms=0).value
    with pytest.raises(PayloadError, match=needle):
        SCHEMAS.decode(mangle(value))  # type: ignore[operator]


def test_encoding_a_record_that_does_not_fit_is_a_payload_error() -> None:
    """A record missing a required field cannot be encoded."""
    with pytest.raises(PayloadError, match="does not fit"):
        SCHEMAS.encode(PERSON, {"name": "张三"})


def test_a_schema_folder_without_schemas_is_refused(tmp_path: Path) -> None:
    """An empty or unparsable schema folder stops start-up with the path."""
    with pytest.raises(SchemaError, match=r"no \*\.avsc"):
        SchemaSet.load(tmp_path)
    (tmp_path / "bad.avsc").write_text('{"type": "record"}')
    with pytest.raises(SchemaError, match=r"bad\.avsc"):
        SchemaSet.load(tmp_path)


@given(
    st.builds(
        dict,
        id_number=st.from_regex(r"[0-9]{17}[0-9X]", fullmatch=True),
        name=st.text(min_size=1, max_size=8),
        gender=st.sampled_from(["MALE", "FEMALE", "UNSPECIFIED"]),
        birth_date=st.dates(dt.date(1900, 1, 1), dt.date(2030, 1, 1)),
        ethnicity=st.from_regex(r"[0-9]{2}", fullmatch=True),
        household_region=st.from_regex(r"[0-9]{6}", fullmatch=True),
        address=st.text(max_size=40),
        phone=st.none() | st.from_regex(r"1[0-9]{10}", fullmatch=True),
        updated_at=st.datetimes(
            dt.datetime(1971, 1, 1), dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC)
        ).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000)),
    )
)
def test_any_person_round_trips(person: dict[str, object]) -> None:
    """decode(encode(person)) gives the person back, for any valid field values."""
    assert SCHEMAS.decode(SCHEMAS.encode(PERSON, person)) == (PERSON, person)


def test_ingress_refuses_a_source_region_other_than_where_it_was_published() -> None:
    """A record claiming another platform's region is refused as a bad envelope."""
    published = sample(SCHEMAS, PERSON, "410103", "region:410000", seed=2, created_ms=0)
    refusal = check_ingress(published.envelope.to_headers(), published.value, "410102", SCHEMAS)
    assert refusal is not None
    assert refusal.reason is Reason.BAD_ENVELOPE
    assert "410103" in refusal.message


def test_ingress_accepts_a_good_record_and_refuses_a_bad_payload() -> None:
    """A well-formed record passes; the same envelope with a broken value is ``bad_payload``."""
    published = sample(SCHEMAS, PERSON, "410102", "region:410000", seed=3, created_ms=0)
    headers = published.envelope.to_headers()
    assert check_ingress(headers, published.value, "410102", SCHEMAS) is None
    refusal = check_ingress(headers, published.value[:-2], "410102", SCHEMAS)
    assert refusal is not None
    assert refusal.reason is Reason.BAD_PAYLOAD
