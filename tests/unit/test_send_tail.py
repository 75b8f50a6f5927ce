"""``exchange-node send`` and ``tail`` without a broker: input, checks, rendering, topic names."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from sample_records import PERSON

from node.app import Reference
from node.catalog_files import load_catalog, packaged_catalog_dir
from node.codec import load_schemas, packaged_schema_dir
from node.config import parse_config
from node.core.envelope import (
    HOPS,
    REFUSAL_MESSAGE,
    REFUSAL_REASON,
    REFUSED_BY,
    Envelope,
    Hop,
    Mark,
    Sharing,
    Target,
)
from node.core.heartbeat import HEARTBEAT
from node.errors import ConfigError
from node.kafka.bridge import PROJECTION
from node.send_cli import InputError, check_records, parse_records
from node.subscriber import Subscriber, ValueReader, read_record
from node.tail_cli import cluster_of, render_json, render_text, resolve_topic

SCHEMAS = load_schemas(packaged_schema_dir())
REFERENCE = Reference(SCHEMAS, load_catalog(packaged_catalog_dir(), SCHEMAS))
RESOURCE = "410102-PSB-00001"
PERSON_JSON: dict[str, Any] = {
    "id_number": "41010219850317002X", "name": "张伟", "gender": "MALE",
    "birth_date": "1985-03-17", "ethnicity": "01", "household_region": "410102",
    "address": "建设路68号", "updated_at": "2026-03-01T08:30:15.123+00:00",
}  # fmt: skip
ENVELOPE = Envelope(
    "id-1", RESOURCE, "410102", "PSB", Target.parse("region:410100"), 2, Sharing.UNCONDITIONAL,
    1_772_353_815_123, (Hop("410102", Mark.UP), Hop("410100", Mark.DELIVERED)),
)  # fmt: skip


def check(records: list[Any], **overrides: str) -> tuple[list[Any], list[str]]:
    """Check ``records`` as PSB of 410102 sending to the city."""
    args = {"region": "410102", "dept": "PSB", "resource": RESOURCE, "target": "region:410100"}
    args.update(overrides)
    return check_records(records, REFERENCE, now_ms=1, **args)


def test_an_object_an_array_and_json_lines_are_read_as_records() -> None:
    """One object, an array and JSON lines (blank lines ignored) give the records in order."""
    one, two = {"a": 1}, {"b": [2]}
    assert parse_records(json.dumps(one, indent=2)) == [one]
    assert parse_records(json.dumps([one, two])) == [one, two]
    assert parse_records(f"{json.dumps(one)}\n\n{json.dumps(two)}\n") == [one, two]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no records in the input"),
        ("[]", "no records in the input (an empty array)"),
        ('"x"', "expected a JSON object, an array of objects, or JSON lines"),
        ('[{"a": 1},', "not JSON: Expecting value: line 1 column 11 (char 10)"),
        ('{"a": 1}\n{"b": }\n', "line 2: not JSON: Expecting value: line 1 column 7 (char 6)"),
    ],
)
def test_input_that_is_not_records_is_refused_saying_where(text: str, problem: str) -> None:
    """Empty input, a bare value and broken JSON (with its line) are refused."""
    with pytest.raises(InputError) as raised:
        parse_records(text)
    assert str(raised.value) == problem


def test_every_bad_record_is_listed_with_its_number_and_field() -> None:
    """All records are checked, and each problem names the record and the field."""
    bad_date = {**PERSON_JSON, "birth_date": "17/03/1985"}
    missing = {k: v for k, v in PERSON_JSON.items() if k != "name"}
    unknown = {**PERSON_JSON, "nickname": "伟"}
    composed, problems = check([PERSON_JSON, bad_date, missing, unknown, "x"])
    assert composed == [composed[0]]
    assert problems == [
        "record 2: $.birth_date: expected a date YYYY-MM-DD, got '17/03/1985'",
        "record 3: $.name: is required (null or missing)",
        "record 4: $.nickname: is not a field of this resource",
        "record 5: $: expected an object",
    ]


def test_good_records_get_distinct_ids_and_the_catalog_envelope() -> None:
    """Each record gets a fresh id; the envelope comes from the arguments and the catalog."""
    composed, problems = check([PERSON_JSON, PERSON_JSON], target="subtree:410100")
    assert problems == []
    first, second = (record.envelope for record in composed)
    assert first.record_id != second.record_id
    assert (first.resource, first.source_dept, first.source_region) == (RESOURCE, "PSB", "410102")
    assert (str(first.target), first.grade, first.hops) == ("subtree:410100", 2, ())
    assert SCHEMAS.decode(composed[0].value)[1]["name"] == "张伟"


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"dept": "HRSS"}, "--resource: 410102-PSB-00001 is published only by PSB@410102"),
        ({"resource": "410102-XX-1"}, "--resource: '410102-XX-1' is not in the catalog"),
        ({"target": "region:4101"}, "--target: header cx-target: '4101' is not a six-digit"),
    ],
)
def test_a_bad_argument_is_reported_once(overrides: dict[str, str], problem: str) -> None:
    """A wrong department, resource or target is one problem, not one per record."""
    composed, problems = check([PERSON_JSON, PERSON_JSON], **overrides)
    assert composed == []
    assert len(problems) == 1
    assert problems[0].startswith(f"exchange-node send: {problem}")


@pytest.mark.parametrize(
    ("name", "full"),
    [
        ("outbox.PSB", "cx.outbox.PSB"),
        ("up.410102", "cx.up.410102"),
        ("refused", "cx.refused"),
        ("deliver.PSB", "cx.deliver.PSB"),
        ("down.410102", "cx.down.410102"),
        ("cx.refused", "cx.refused"),
        ("other.outbox", "other.outbox"),
        ("plain", "plain"),
    ],
)
def test_topic_names_are_resolved_under_the_prefix(name: str, full: str) -> None:
    """Short names get the prefix; full names and unknown names are kept."""
    assert resolve_topic(name, "cx") == full


def record(headers: list[tuple[str, bytes]], value: bytes | None) -> Any:
    """Read one consumed record at cx.refused/1@7."""
    return read_record(ValueReader(SCHEMAS), "cx.refused", 1, 7, 0, b"k", value, headers)


def test_a_refused_record_is_rendered_with_envelope_reason_and_value() -> None:
    """Text shows the envelope, the refusal and the decoded value; JSON carries all of it."""
    (composed,), _ = check([PERSON_JSON])
    refusal = [
        (REFUSAL_REASON, b"cycle"),
        (REFUSAL_MESSAGE, b"would revisit 410100"),
        (REFUSED_BY, b"410100/local"),
    ]
    delivered = record([*ENVELOPE.to_headers(), *refusal], composed.value)
    assert render_text(delivered).splitlines() == [
        "record id-1  (cx.refused/1@7)",
        "  resource  410102-PSB-00001  (grade 2, unconditional)",
        "  source    PSB@410102",
        "  target    region:410100",
        "  hops      410102^,410100.",
        "  created   2026-03-01T08:30:15.123Z",
        "  refused   cycle: would revisit 410100 (by 410100/local)",
        '  value     {"id_number":"41010219850317002X","name":"张伟","gender":"MALE",'
        '"birth_date":"1985-03-17","ethnicity":"01","household_region":"410102",'
        '"address":"建设路68号","phone":null,"updated_at":"2026-03-01T08:30:15.123000+00:00"}',
    ]
    line = render_json(delivered)
    assert "\n" not in line
    assert json.loads(line) == {
        "topic": "cx.refused", "partition": 1, "offset": 7, "id": "id-1",
        "envelope": {
            "id": "id-1", "resource": RESOURCE, "source_region": "410102", "source_dept": "PSB",
            "target": "region:410100", "grade": 2, "sharing": "unconditional",
            "created_ms": 1_772_353_815_123, "created": "2026-03-01T08:30:15.123Z",
            "hops": ["410102^", "410100."],
        },
        "refusal": {"reason": "cycle", "message": "would revisit 410100", "refused_by": "410100/local"},
        "projection": None, "schema": PERSON, "value": {**PERSON_JSON, "phone": None,
        "updated_at": "2026-03-01T08:30:15.123000+00:00"}, "error": None,
    }  # fmt: skip


def test_a_projected_value_is_decoded_with_the_items_it_keeps() -> None:
    """A value cut to a grant's items decodes with the derived schema."""
    (composed,), _ = check([PERSON_JSON])
    projected = SCHEMAS.project(composed.value, ("name", "id_number"))
    delivered = record([*ENVELOPE.to_headers(), (PROJECTION, b"name,id_number")], projected)
    assert (delivered.error, delivered.projection) == (None, ("name", "id_number"))
    assert delivered.value == {"id_number": "41010219850317002X", "name": "张伟"}
    assert "  items     name,id_number" in render_text(delivered).splitlines()


def test_unreadable_records_carry_the_problem_instead_of_raising() -> None:
    """A bad envelope, a stub without value and an undecodable value are described, not raised."""
    headers = [(k, v) for k, v in ENVELOPE.to_headers() if k != HOPS]
    delivered = record(headers, b"\xc3\x01" + bytes(8) + b"junk")
    assert delivered.envelope is None
    assert delivered.value is None
    assert delivered.error == (
        "envelope: header cx-hops: missing; value: unknown schema fingerprint 0000000000000000"
    )
    text = render_text(delivered)
    assert text.splitlines()[0] == "record id-1  (cx.refused/1@7)"
    assert "  problem   envelope: header cx-hops: missing;" in text
    stub = record(ENVELOPE.to_headers(), None)
    assert stub.error == "value: none (a refusal stub or a deletion marker)"
    assert stub.envelope == ENVELOPE


class FakeConsumer:
    """Stands in for AIOKafkaConsumer: one batch holding a heartbeat and a record."""

    def __init__(self, records: list[Any]) -> None:
        self.batches = [{TopicPartition("cx.inbox", 0): records}]

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        """Return the next batch, then nothing."""
        return self.batches.pop(0) if self.batches else {}


async def test_poll_skips_heartbeats_and_decodes_the_rest() -> None:
    """A heartbeat in the batch is left out; the record after it is decoded."""
    (composed,), _ = check([PERSON_JSON])
    beat = ConsumerRecord("cx.inbox", 0, 3, 0, 0, None, b"{}", None, 2, 0, [(HEARTBEAT, b"1")])
    headers = ENVELOPE.to_headers()
    one = ConsumerRecord("cx.inbox", 0, 4, 5, 0, b"k", composed.value, None, 1, 100, headers)
    subscriber = Subscriber("127.0.0.1:9", "cx.inbox", schemas=SCHEMAS)
    subscriber._consumer = FakeConsumer([beat, one])
    (delivered,) = await subscriber.poll(0.01)
    assert (delivered.offset, delivered.timestamp_ms, delivered.envelope) == (4, 5, ENVELOPE)
    assert delivered.value is not None
    assert delivered.value["name"] == "张伟"
    assert await subscriber.poll(0.01) == []


def test_tail_reads_the_local_or_the_parent_cluster() -> None:
    """``--cluster parent`` takes the parent's address and prefix; a root has none."""
    node = {"id": "n", "level": "county", "region": "410102"}
    local = {"bootstrap": "127.0.0.1:1", "topic_prefix": "a"}
    child = parse_config({"node": node, "local": local, "parent": {
        "bootstrap": "127.0.0.1:2", "region": "410100", "topic_prefix": "b"}})  # fmt: skip
    local_connection, local_prefix = cluster_of(child, "local")
    parent_connection, parent_prefix = cluster_of(child, "parent")
    assert (str(local_connection), local_connection.link, local_prefix) == (
        "127.0.0.1:1",
        "local",
        "a",
    )
    assert (str(parent_connection), parent_connection.link, parent_prefix) == (
        "127.0.0.1:2",
        "parent",
        "b",
    )
    root = parse_config({"node": node, "local": local})
    with pytest.raises(ConfigError, match="no parent"):
        cluster_of(root, "parent")
