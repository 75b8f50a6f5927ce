"""Avro single-object framing of resource records: schemas, round trips, and every broken value."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st
from sample_records import LEGAL_ENTITY, LICENCE, PERSON

from node.codec import HEADER_SIZE, MAGIC, SchemaSet, load_schemas, packaged_schema_dir
from node.errors import NodeError, PayloadError, SchemaError

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "resources"
SCHEMAS = load_schemas(SCHEMA_DIR)
UTC = dt.UTC

RECORDS: list[tuple[str, dict[str, Any]]] = [
    (PERSON, {
        "id_number": "41010219850317002X", "name": "张伟", "gender": "MALE",
        "birth_date": dt.date(1985, 3, 17), "ethnicity": "01", "household_region": "410102",
        "address": "河南省郑州市中原区建设路68号院3号楼2单元501室", "phone": "13803710000",
        "updated_at": dt.datetime(2026, 3, 1, 8, 30, 15, 123000, tzinfo=UTC),
    }),
    (PERSON, {
        "id_number": "650102199212240017", "name": "买买提·艾力", "gender": "UNSPECIFIED",
        "birth_date": dt.date(1992, 12, 24), "ethnicity": "05", "household_region": "650102",
        "address": "新疆维吾尔自治区乌鲁木齐市天山区解放南路18号", "phone": None,
        "updated_at": dt.datetime(1971, 1, 1, tzinfo=UTC),
    }),
    (LEGAL_ENTITY, {
        "credit_code": "91410100MA9G6XQ71K", "name": "郑州中原数据科技有限公司",
        "entity_type": "有限责任公司（自然人投资或控股）", "legal_representative": "王芳",  # noqa: RUF001 - full-width brackets are how Chinese registers write it
        "registered_capital_fen": 500_000_000, "established_date": dt.date(2018, 6, 1),
        "registration_authority": "郑州市市场监督管理局", "region": "410100",
        "address": "河南省郑州市金水区花园路1号", "status": "ACTIVE",
        "business_scope": "数据处理和存储支持服务；信息系统集成服务；技术服务、技术开发、技术咨询",  # noqa: RUF001 - Chinese punctuation
        "updated_at": dt.datetime(2026, 1, 15, 9, 0, tzinfo=UTC),
    }),
    (LEGAL_ENTITY, {
        "credit_code": "92500103MA5U7X2P3B", "name": "重庆市渝中区老张小面馆", "entity_type": "个体工商户",
        "legal_representative": "张建国", "registered_capital_fen": None,
        "established_date": dt.date(2009, 9, 9), "registration_authority": "重庆市渝中区市场监督管理局",
        "region": "500103", "address": "重庆市渝中区解放碑民族路166号", "status": "CANCELLED",
        "business_scope": "餐饮服务", "updated_at": dt.datetime(2024, 5, 20, tzinfo=UTC),
    }),
    (LICENCE, {
        "licence_id": "LIC-410102-0000012345", "licence_type": "11100000000000000X", "licence_name": "营业执照",
        "holder_name": "郑州中原数据科技有限公司", "holder_id_type": "CREDIT_CODE", "holder_id": "91410100MA9G6XQ71K",
        "issuer": "郑州市中原区市场监督管理局", "issuer_code": "11410102MB1234567X",
        "issue_date": dt.date(2018, 6, 1), "valid_until": None, "status": "VALID",
        "file_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    }),
    (LICENCE, {
        "licence_id": "LIC-341502-0000000007", "licence_type": "11100000000000012X", "licence_name": "不动产权证书",
        "holder_name": "李秀英", "holder_id_type": "ID_NUMBER", "holder_id": "34150219700101002X",
        "issuer": "六安市不动产登记中心", "issuer_code": "12341500MB1A2B3C4D", "issue_date": dt.date(2015, 3, 2),
        "valid_until": dt.date(2085, 3, 1), "status": "EXPIRED", "file_sha256": None,
    }),
]  # fmt: skip


def crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint of the Avro specification ("Schema Fingerprints"), written out independently."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


# ---- schemas -------------------------------------------------------------------------------


def test_the_three_base_resource_schemas_load_with_distinct_fingerprints() -> None:
    """Person, legal entity and electronic licence load by full name, each with its own 8-byte fingerprint."""
    assert set(SCHEMAS.by_name) == {PERSON, LEGAL_ENTITY, LICENCE}
    assert {len(s.fingerprint) for s in SCHEMAS.by_name.values()} == {8}
    assert {s.name: s for s in SCHEMAS.by_fingerprint.values()} == SCHEMAS.by_name


def test_packaged_schemas_are_the_source_trees() -> None:
    """The schema folder the node ships holds the same three schemas."""
    packaged = load_schemas(packaged_schema_dir())
    assert {n: s.fingerprint for n, s in packaged.by_name.items()} == {
        n: s.fingerprint for n, s in SCHEMAS.by_name.items()
    }


@pytest.mark.parametrize("name", [PERSON, LEGAL_ENTITY, LICENCE])
def test_fingerprints_are_crc64_avro_of_the_canonical_form(name: str) -> None:
    """Each fingerprint is CRC-64-AVRO of the parsing canonical form, little-endian, as the spec says."""
    schema = SCHEMAS.by_name[name]
    canonical = to_parsing_canonical_form(parse_schema(schema.definition)).encode()
    assert schema.fingerprint == crc64_avro(canonical).to_bytes(8, "little")


def test_the_fingerprint_of_null_is_the_reference_value() -> None:
    """The fingerprint of the "null" schema is the one the Avro specification's algorithm gives."""
    assert crc64_avro(b'"null"') == 7195948357588979594
    assert SchemaSet.parse("null").fingerprint == (7195948357588979594).to_bytes(8, "little")


def test_a_missing_schema_folder_is_refused(tmp_path: Path) -> None:
    """A folder that does not exist stops start-up, naming it."""
    with pytest.raises(SchemaError, match="does not exist"):
        load_schemas(tmp_path / "absent")


def test_a_schema_folder_without_schemas_is_refused(tmp_path: Path) -> None:
    """A folder with no ``*.avsc`` file stops start-up."""
    (tmp_path / "README.txt").write_text("no schemas here")
    with pytest.raises(SchemaError, match=r"no \*\.avsc"):
        load_schemas(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "record"}',
        "{not json",
        '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nosuch"}]}',
        '"nosuchtype"',
        '{"type": "enum", "name": "E", "symbols": ["A", "A"]}',
    ],
)
def test_an_unusable_schema_file_is_named(tmp_path: Path, text: str) -> None:
    """Invalid JSON, an incomplete record or an unknown type each stop start-up naming the file."""
    (tmp_path / "bad.avsc").write_text(text, encoding="utf-8")
    with pytest.raises(SchemaError, match=r"bad\.avsc"):
        load_schemas(tmp_path)


def test_a_schema_defined_twice_is_refused(tmp_path: Path) -> None:
    """Two files defining the same full name are refused, naming the second."""
    shutil.copy(SCHEMA_DIR / "person.avsc", tmp_path / "a.avsc")
    shutil.copy(SCHEMA_DIR / "person.avsc", tmp_path / "b.avsc")
    with pytest.raises(SchemaError, match=r"b\.avsc.*defined twice"):
        load_schemas(tmp_path)


# ---- round trips and framing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "datum"),
    RECORDS,
    ids=[f"{n.rsplit('.', 1)[1]}-{i}" for i, (n, _) in enumerate(RECORDS)],
)
def test_realistic_records_round_trip(name: str, datum: dict[str, Any]) -> None:
    """Records with Chinese names, addresses and scopes, nulls and enums decode back unchanged."""
    assert SCHEMAS.decode(SCHEMAS.encode(name, datum)) == (name, datum)


@pytest.mark.parametrize(("name", "datum"), RECORDS[::2])
def test_framing_is_marker_fingerprint_then_plain_avro_body(
    name: str, datum: dict[str, Any]
) -> None:
    """A value is C3 01, the schema's 8-byte fingerprint, then exactly the Avro binary body."""
    value = SCHEMAS.encode(name, datum)
    assert value[0] == 0xC3
    assert value[1] == 0x01
    assert value[:2] == MAGIC
    assert HEADER_SIZE == 10
    assert value[2:10] == SCHEMAS.by_name[name].fingerprint
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(SCHEMAS.by_name[name].definition), datum)
    assert value[10:] == body.getvalue()
    assert SCHEMAS.schema_of(value).name == name


def test_strings_are_utf8_on_the_wire() -> None:
    """Chinese text is carried as UTF-8 bytes inside the body."""
    name, datum = RECORDS[0]
    assert "河南省郑州市中原区".encode() in SCHEMAS.encode(name, datum)


@settings(max_examples=100)
@given(
    st.fixed_dictionaries(
        {
            "id_number": st.from_regex(r"[1-8][0-9]{16}[0-9X]", fullmatch=True),
            "name": st.text(min_size=1, max_size=8),
            "gender": st.sampled_from(["MALE", "FEMALE", "UNSPECIFIED"]),
            "birth_date": st.dates(dt.date(1900, 1, 1), dt.date(2030, 1, 1)),
            "ethnicity": st.from_regex(r"[0-5][0-9]", fullmatch=True),
            "household_region": st.from_regex(r"[0-9]{6}", fullmatch=True),
            "address": st.text(max_size=60),
            "phone": st.none() | st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
            "updated_at": st.datetimes(
                dt.datetime(1971, 1, 1), dt.datetime(2100, 1, 1), timezones=st.just(UTC)
            ).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000)),
        }
    )
)
def test_any_person_round_trips(person: dict[str, Any]) -> None:
    """decode(encode(person)) gives the person back, for any valid field values (any Unicode text)."""
    value = SCHEMAS.encode(PERSON, person)
    assert value[:HEADER_SIZE] == MAGIC + SCHEMAS.by_name[PERSON].fingerprint
    assert SCHEMAS.decode(value) == (PERSON, person)


# ---- broken values -------------------------------------------------------------------------

PERSON_VALUE = SCHEMAS.encode(*RECORDS[0])


@pytest.mark.parametrize(("name", "datum"), RECORDS)
def test_every_truncation_is_a_payload_error(name: str, datum: dict[str, Any]) -> None:
    """Cutting a value short anywhere, in the header or the body, raises PayloadError."""
    value = SCHEMAS.encode(name, datum)
    for length in range(len(value)):
        with pytest.raises(PayloadError):
            SCHEMAS.decode(value[:length])


@pytest.mark.parametrize(
    ("mangle", "needle"),
    [(lambda v: b"", "no C3 01 marker"), (lambda v: v[:1], "no C3 01 marker"), (lambda v: v[:9], "no C3 01 marker"),
     (lambda v: b"\x00\x01" + v[2:], "no C3 01 marker"), (lambda v: b"\xc3\x02" + v[2:], "no C3 01 marker"),
     (lambda v: v[10:], "no C3 01 marker"), (lambda v: b'{"name": "\xe5\xbc\xa0\xe4\xbc\x9f"}', "no C3 01 marker"),
     (lambda v: v[:2] + b"\xff" * 8 + v[10:], "unknown schema fingerprint ffffffffffffffff"),
     (lambda v: v[:2] + bytes(reversed(v[2:10])) + v[10:], "unknown schema fingerprint"),
     (lambda v: v[:10], "does not decode"), (lambda v: v[:-3], "does not decode"),
     (lambda v: v + b"\x00", "1 bytes after"), (lambda v: v + v, "bytes after"),
     (lambda v: v[:10] + b"\x7f" + v[11:], "does not decode"),  # id_number length -64
     (lambda v: v[:10] + b"\x24" + b"\xff" * 18 + v[29:], "does not decode")],  # not UTF-8
)  # fmt: skip
def test_broken_values_raise_payload_errors(mangle: Callable[[bytes], bytes], needle: str) -> None:
    """Empty, truncated, padded, unframed, garbled and unknown-schema values are each reported clearly."""
    with pytest.raises(PayloadError, match=needle):
        SCHEMAS.decode(mangle(PERSON_VALUE))


def test_a_value_of_another_schema_family_is_unknown() -> None:
    """A value framed with a schema this node does not know (a projection) is refused by fingerprint."""
    projected = SCHEMAS.project(PERSON_VALUE, ("id_number", "name"))
    with pytest.raises(PayloadError, match="unknown schema fingerprint"):
        SCHEMAS.decode(projected)


KNOWN_HEADERS = {MAGIC + schema.fingerprint for schema in SCHEMAS.by_name.values()}


@settings(max_examples=200)
@given(
    st.binary(max_size=64)
    | st.sampled_from(sorted(KNOWN_HEADERS)).flatmap(
        lambda h: st.binary(max_size=40).map(lambda b: h + b)
    )
)
def test_arbitrary_bytes_never_escape_as_anything_but_payload_errors(value: bytes) -> None:
    """Bytes without a known header raise PayloadError; any others decode to a record or raise PayloadError."""
    if value[:HEADER_SIZE] not in KNOWN_HEADERS:
        with pytest.raises(PayloadError):
            SCHEMAS.decode(value)
        return
    try:
        name, datum = SCHEMAS.decode(value)
    except PayloadError:
        return  # the refusal we want; anything else escaping fails the test
    assert name == SCHEMAS.schema_of(value).name
    assert isinstance(datum, dict)


def test_payload_errors_are_node_errors_and_not_retriable() -> None:
    """An undecodable value is refused, never retried."""
    assert issubclass(PayloadError, NodeError)
    assert PayloadError("x").retriable is False


def plain_body(name: str, datum: dict[str, Any]) -> bytes:
    """Frame ``datum`` for schema ``name`` with its logical types written as their raw ints."""
    definition = json.loads(json.dumps(SCHEMAS.by_name[name].definition))
    for item in definition["fields"]:
        if isinstance(item["type"], dict) and "logicalType" in item["type"]:
            item["type"] = item["type"]["type"]
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(definition), datum)
    return MAGIC + SCHEMAS.by_name[name].fingerprint + body.getvalue()


RAW_PERSON = {"id_number": "41010219850317002X", "name": "张伟", "gender": "MALE", "birth_date": 0, "ethnicity": "01",
              "household_region": "410102", "address": "", "phone": None, "updated_at": 0}  # fmt: skip


def test_raw_logical_values_in_range_decode() -> None:
    """The plain-int framing helper is sound: day 0 and millisecond 0 decode as the epoch."""
    _, datum = SCHEMAS.decode(plain_body(PERSON, RAW_PERSON))
    assert datum["birth_date"] == dt.date(1970, 1, 1)
    assert datum["updated_at"] == dt.datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("field", "raw"), [("birth_date", -(2**31)), ("birth_date", 3_000_000)])
def test_dates_outside_the_calendar_are_payload_errors(field: str, raw: int) -> None:
    """A date before year 1 or after 9999 is refused as a payload error."""
    with pytest.raises(PayloadError, match="does not decode"):
        SCHEMAS.decode(plain_body(PERSON, {**RAW_PERSON, field: raw}))


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("birth_date", 2**31 - 1),
        ("updated_at", 10**15),
        ("updated_at", 2**63 - 1),
        ("updated_at", -(2**63)),
    ],
)
def test_dates_and_times_too_large_for_python_are_payload_errors(field: str, raw: int) -> None:
    """A value whose date or timestamp overflows Python's calendar is refused as a payload error."""
    with pytest.raises(PayloadError):
        SCHEMAS.decode(plain_body(PERSON, {**RAW_PERSON, field: raw}))


# ---- encoding errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "needle"),
    [({"gender": "BOTH"}, "does not fit"), ({"phone": 13803710000}, "does not fit"), ({"name": None}, "does not fit"),
     ({"name": b"\xe5\xbc\xa0"}, "does not fit"), ({"id_number": "\ud800"}, "does not fit")],
)  # fmt: skip
def test_a_record_that_does_not_fit_is_a_payload_error(change: dict[str, Any], needle: str) -> None:
    """A wrong enum symbol, a wrong type or an unencodable string cannot be encoded."""
    with pytest.raises(PayloadError, match=needle):
        SCHEMAS.encode(PERSON, {**RECORDS[0][1], **change})


def test_a_record_missing_a_required_field_is_a_payload_error() -> None:
    """A record without its required fields cannot be encoded."""
    with pytest.raises(PayloadError, match="does not fit"):
        SCHEMAS.encode(PERSON, {"name": "张三"})


def test_an_unknown_schema_name_is_a_payload_error() -> None:
    """Encoding with a schema the node does not know names it."""
    with pytest.raises(PayloadError, match=re.escape("unknown schema 'cn.gov.exchange.Nothing'")):
        SCHEMAS.encode("cn.gov.exchange.Nothing", {})


def test_an_int_too_large_for_its_avro_type_is_a_payload_error() -> None:
    """A date given as a day number beyond 32 bits does not fit an Avro int and is refused when encoding."""
    with pytest.raises(PayloadError, match="does not fit"):
        SCHEMAS.encode(PERSON, {**RECORDS[0][1], "birth_date": 2**40})


# ---- projection ----------------------------------------------------------------------------


def test_projection_keeps_only_the_granted_items() -> None:
    """A projected value carries only the listed items, framed with the projection's own fingerprint."""
    items = ("name", "household_region", "id_number")  # order given differs from the schema's
    projected = SCHEMAS.project(PERSON_VALUE, items)
    schema = SCHEMAS.projection(PERSON, items)
    assert projected[:10] == MAGIC + schema.fingerprint
    assert [f["name"] for f in schema.definition["fields"]] == [
        "id_number",
        "name",
        "household_region",
    ]
    datum = schemaless_reader(io.BytesIO(projected[10:]), schema.parsed, None)
    assert datum == {
        "id_number": "41010219850317002X",
        "name": "张伟",
        "household_region": "410102",
    }
    assert SCHEMAS.projection(PERSON, items) is schema  # derived once
