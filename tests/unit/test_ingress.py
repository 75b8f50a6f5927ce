"""Ingress validation: what a freshly published record must pass before it enters the cascade."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fastavro import parse_schema, schemaless_writer
from sample_records import LEGAL_ENTITY, LICENCE, PERSON, sample

from node.catalog_files import load_catalog, packaged_catalog_dir
from node.codec import MAGIC, load_schemas
from node.core.envelope import GRADE, SOURCE_REGION, TARGET, Envelope, Sharing, Target, TargetKind
from node.core.ingress import check_ingress
from node.core.outcome import Reason

SCHEMAS = load_schemas(Path(__file__).resolve().parents[2] / "schemas" / "resources")
PUBLISHED = sample(SCHEMAS, PERSON, "410102", "region:410000", seed=3, created_ms=1_790_000_000_000)
HEADERS = PUBLISHED.envelope.to_headers()


def replaced(name: str, value: bytes) -> list[tuple[str, bytes]]:
    """The published headers with header ``name`` set to ``value``."""
    return [(k, value if k == name else v) for k, v in HEADERS]


@pytest.mark.parametrize("schema", [PERSON, LEGAL_ENTITY, LICENCE])
def test_a_well_formed_record_of_each_resource_enters(schema: str) -> None:
    """A complete envelope from this region with a decodable value passes (None)."""
    published = sample(SCHEMAS, schema, "410102", "subtree:410100", seed=7, created_ms=0)
    assert (
        check_ingress(published.envelope.to_headers(), published.value, "410102", SCHEMAS) is None
    )


@pytest.mark.parametrize(
    ("name", "value"), [(GRADE, b"9"), (TARGET, b"region:41"), (SOURCE_REGION, b"41-102")]
)
def test_a_bad_envelope_is_refused_naming_the_header(name: str, value: bytes) -> None:
    """A malformed header is ``bad_envelope`` and the message names that header."""
    refusal = check_ingress(replaced(name, value), PUBLISHED.value, "410102", SCHEMAS)
    assert refusal is not None
    assert refusal.reason is Reason.BAD_ENVELOPE
    assert name in refusal.message


def test_a_missing_header_is_refused() -> None:
    """A record without ``cx-id`` is ``bad_envelope``, naming it."""
    refusal = check_ingress(
        [h for h in HEADERS if h[0] != "cx-id"], PUBLISHED.value, "410102", SCHEMAS
    )
    assert refusal is not None
    assert refusal.reason is Reason.BAD_ENVELOPE
    assert "cx-id: missing" in refusal.message


def test_a_record_claiming_another_source_region_is_refused() -> None:
    """A record published at 410102 that says it comes from 410103 is ``bad_envelope``, naming both."""
    refusal = check_ingress(replaced(SOURCE_REGION, b"410103"), PUBLISHED.value, "410102", SCHEMAS)
    assert refusal is not None
    assert refusal.reason is Reason.BAD_ENVELOPE
    assert "410103" in refusal.message
    assert "410102" in refusal.message
    assert SOURCE_REGION in refusal.message


@pytest.mark.parametrize(
    ("value", "needle"),
    [(None, "no value"), (b"", "C3 01"), (b"\xc3\x01" + b"\x00" * 8, "unknown schema fingerprint"),
     ("张伟".encode(), "C3 01")],
)  # fmt: skip
def test_an_undecodable_value_is_a_bad_payload(value: bytes | None, needle: str) -> None:
    """No value, an empty one, an unknown schema or raw text are ``bad_payload``, saying why."""
    refusal = check_ingress(HEADERS, value, "410102", SCHEMAS)
    assert refusal is not None
    assert refusal.reason is Reason.BAD_PAYLOAD
    assert needle in refusal.message


def test_a_truncated_value_is_a_bad_payload() -> None:
    """The published value cut by two bytes no longer decodes."""
    assert PUBLISHED.value is not None
    refusal = check_ingress(HEADERS, PUBLISHED.value[:-2], "410102", SCHEMAS)
    assert refusal is not None
    assert refusal.reason is Reason.BAD_PAYLOAD


def test_the_envelope_is_checked_before_the_payload() -> None:
    """A record wrong in both header and value is refused for its envelope first."""
    refusal = check_ingress(replaced(GRADE, b"0"), b"garbage", "410102", SCHEMAS)
    assert refusal is not None
    assert refusal.reason is Reason.BAD_ENVELOPE


def test_without_schemas_the_value_is_not_inspected() -> None:
    """With payload validation switched off any value passes, but the envelope is still checked."""
    assert check_ingress(HEADERS, b"not avro", "410102", None) is None
    assert check_ingress(HEADERS, None, "410102", None) is None
    refusal = check_ingress(replaced(GRADE, b"0"), None, "410102", None)
    assert refusal is not None
    assert refusal.reason is Reason.BAD_ENVELOPE


def test_hand_built_envelope_enters() -> None:
    """An envelope built field by field (not by the sample helper) passes the same checks."""
    envelope = Envelope(
        "b0c1-1", "410102-PSB-00001", "410102", "PSB", Target(TargetKind.LEVEL, "province"),
        2, Sharing.UNCONDITIONAL, 1_790_000_000_000,
    )  # fmt: skip
    assert check_ingress(envelope.to_headers(), PUBLISHED.value, "410102", SCHEMAS) is None


def test_a_date_beyond_the_calendar_is_a_bad_payload_not_a_crash() -> None:
    """A Person whose birth_date is day 2**31-1 (valid Avro, no Python date) is refused, not raised."""
    definition = json.loads(json.dumps(SCHEMAS.by_name[PERSON].definition))
    for item in definition["fields"]:  # write the dates and times as their raw ints
        if isinstance(item["type"], dict) and "logicalType" in item["type"]:
            item["type"] = item["type"]["type"]
    datum = {"id_number": "41010219850317002X", "name": "张伟", "gender": "MALE", "birth_date": 2**31 - 1,
             "ethnicity": "01", "household_region": "410102", "address": "", "phone": None, "updated_at": 0}  # fmt: skip
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(definition), datum)
    value = MAGIC + SCHEMAS.by_name[PERSON].fingerprint + body.getvalue()
    refusal = check_ingress(HEADERS, value, "410102", SCHEMAS)
    assert refusal is not None
    assert refusal.reason is Reason.BAD_PAYLOAD


def test_a_value_of_another_resources_schema_is_refused_against_the_catalog() -> None:
    """A valid legal-entity datum sent as a person resource is ``bad_payload``, naming both."""
    catalog = load_catalog(packaged_catalog_dir(), SCHEMAS)
    entity = sample(SCHEMAS, LEGAL_ENTITY, "410102", "region:410000", seed=5, created_ms=0)
    assert check_ingress(HEADERS, PUBLISHED.value, "410102", SCHEMAS, catalog) is None
    refusal = check_ingress(HEADERS, entity.value, "410102", SCHEMAS, catalog)
    assert refusal is not None
    assert refusal.reason is Reason.BAD_PAYLOAD
    assert f"value is a {LEGAL_ENTITY}, but {PUBLISHED.envelope.resource}" in refusal.message
