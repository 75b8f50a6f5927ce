"""Inputs the fuzzers found that crashed a parser, each kept as a plain test of its clear refusal."""

from __future__ import annotations

import base64
import copy
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
from sample_records import PERSON, sample

from node.compose import ComposeError, _from_json, compose, to_json
from node.config import load_config, parse_config
from node.core import heartbeat
from node.core.audit import EntryError, parse_entry
from node.core.catalog import Catalog
from node.core.envelope import (
    CREATED_MS,
    GRADE,
    HOPS,
    RECORD_ID,
    RESOURCE,
    SHARING,
    SOURCE_DEPT,
    SOURCE_REGION,
    TARGET,
    Envelope,
)  # fmt: skip
from node.core.feedback import CORRECTS, FEEDBACK, REPORT, VERSION, FeedbackBook, Report, correction
from node.core.feedback import decode as decode_feedback
from node.core.grants import Grant, GrantStatus
from node.core.outcome import Copy, Delivered, Direction, Reason, Refused
from node.core.peers import CHILD, PeerWatch
from node.core.policy import Policy, PolicySnapshot
from node.core.quality_ledger import QualityLine
from node.core.quoting import MESSAGE_CHARS, QUOTE_CHARS, bounded, quoted
from node.core.stats import StatsLine
from node.core.topology import Topology
from node.core.trust import TrustedKey
from node.core.writers import Writer, Writers
from node.errors import ConfigError, EnvelopeError, StatsError
from node.kafka.lenient import LenientReadError
from node.kafka.lenient import parse as parse_leniently
from node.kafka.source import Unreadable, unreadable_refusals
from node.ops.gateway import _Answer, _record_item, decode_cursor
from tests.unit.test_fuzz_config import SHIPPED
from tests.unit.test_fuzz_gateway import Record, _shown
from tests.unit.test_fuzz_payload import CATALOG, HERE, SCHEMAS

PUBLISHED = sample(SCHEMAS, PERSON, HERE, f"region:{HERE}", seed=5, created_ms=1_790_000_000_000)
LONG_NUMBER = b"1" * 4301
"""One digit past Python's int() conversion limit: int() raises ValueError, not our refusal."""


def _with(name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(n, value if n == name else v) for n, v in PUBLISHED.envelope.to_headers()]


@pytest.mark.parametrize("name", [GRADE, CREATED_MS])
@pytest.mark.parametrize("value", [LONG_NUMBER, b"9" * 20, "²".encode(), "\uff14".encode()])
def test_an_overlong_or_unicode_number_header_is_refused_naming_it(name: str, value: bytes) -> None:
    """cx-grade / cx-created-ms of 4301 digits raised ValueError from int(); now EnvelopeError."""
    with pytest.raises(EnvelopeError) as caught:
        Envelope.from_headers(_with(name, value))
    assert caught.value.header == name


def test_the_sharing_rules_refuse_an_overlong_grade() -> None:
    """The policy read cx-grade with isdigit() + int() too: now a bad_envelope refusal."""
    policy = Policy(PolicySnapshot(Catalog({})))
    routed = Delivered((Copy(Direction.LOCAL, HERE, b""),))
    outcome = policy.apply((b"R", HERE.encode(), b"PSB", LONG_NUMBER), routed)
    assert isinstance(outcome, Refused)
    assert outcome.reason is Reason.BAD_ENVELOPE
    assert "cx-grade" in outcome.message


@pytest.mark.parametrize(
    "headers",
    [
        [(CORRECTS, b"R-1"), (VERSION, LONG_NUMBER)],
        [(CORRECTS, b"R-1"), (VERSION, None)],
        [(CORRECTS, None), (VERSION, b"2")],
        [(CORRECTS, b"R-1"), (VERSION, b"2"), ("cx-id", None), ("cx-resource", None)],
    ],
)
def test_a_correction_with_an_overlong_or_null_header_is_refused(
    headers: list[tuple[str, Any]],
) -> None:
    """cx-version past int()'s limit, or null header values, raised; now a refusal."""
    made = correction(headers, Topology(HERE, "county", "410100", ()), FeedbackBook(), 0)
    assert isinstance(made, Refused)
    assert made.reason is Reason.BAD_ENVELOPE


def test_deeply_nested_feedback_is_refused() -> None:
    """json.loads raised RecursionError on 100 000 nested arrays."""
    with pytest.raises(EnvelopeError, match="nested deeper than"):
        decode_feedback(b"report", b"[" * 100_000)


BEAT = json.loads(heartbeat.Beat("410102", "n", "county", 1_000, 5.0).encode())


def _beat(text: str) -> bytes:
    return text.encode()


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (b"[" * 100_000, "nested"),
        (json.dumps({**BEAT, "sent_up": {"²": 1}}).encode(), "sent_up"),
        (json.dumps({**BEAT, "sent_up": {"1" * 5000: 1}}).encode(), "sent_up"),
        (json.dumps(BEAT).replace('"interval_s": 5.0', '"interval_s": 1' + "0" * 400).encode(), "digits"),
        (json.dumps(BEAT).replace('"sent_ms": 1000', '"sent_ms": 1' + "0" * 400).encode(), "digits"),
        (json.dumps(BEAT).replace('"interval_s": 5.0', '"interval_s": NaN').encode(), "NaN"),
        (json.dumps(BEAT).replace('"interval_s": 5.0', '"interval_s": Infinity').encode(), "Infinity"),
        (json.dumps(BEAT).replace('"interval_s": 5.0', '"interval_s": 1e400').encode(), "range"),
        (json.dumps({**BEAT, "links": {"x": "*"}}).replace('"*"', "[" * 300 + "]" * 300).encode(), "nested"),
    ],
)  # fmt: skip
def test_a_hostile_heartbeat_is_refused_saying_why(value: bytes, needle: str) -> None:
    """Each of these raised (RecursionError, ValueError, OverflowError) or slipped through."""
    with pytest.raises(EnvelopeError) as caught:
        heartbeat.decode(value)
    assert caught.value.header == heartbeat.HEARTBEAT
    assert needle in str(caught.value)


def test_a_child_beat_at_the_nesting_limit_still_lets_this_node_build_its_own() -> None:
    """A child's beat nested deep, and this node's own beat up built from it.

    Links nested 990 deep were accepted, then this node's beat up raised RecursionError in
    json.dumps; now a beat past MAX_NESTING is refused, and one just within it still lets ours
    encode.
    """
    topology = Topology("410100", "city", "410000", ("410102",))
    peers = PeerWatch(topology, 0, 5.0, bucket_s=60, keep=10, settle_s=30)
    deepest = heartbeat.MAX_NESTING - 3  # body > links > x > the arrays
    body = json.dumps({**BEAT, "links": {"x": "*"}}).replace('"*"', "[" * deepest + "]" * deepest)
    beat = heartbeat.decode(body.encode())
    assert peers.sender_problem(beat, CHILD) is None
    peers.heard(beat, 2_000)
    up = heartbeat.Beat("410100", "c", "city", 2_000, 5.0, {}, {}, 60,
                        tuple(peers.children_views(2_000)))  # fmt: skip
    assert up.encode()


@pytest.mark.parametrize("stamp", [10**20, -(10**15), 10**400, 253402300800000])
def test_an_epoch_ms_out_of_range_is_refused_naming_the_field(stamp: int) -> None:
    """Epoch ms that ``fromtimestamp`` cannot take were a 500 from the gateway (OSError...)."""
    record = {**to_json(SCHEMAS.decode(PUBLISHED.value)[1]), "updated_at": stamp}
    with pytest.raises(ComposeError) as caught:
        compose(CATALOG, SCHEMAS, f"{HERE}-PSB-00001", record, region=HERE, department="PSB",
                target=f"region:{HERE}", created_ms=0, record_id="r-1")  # fmt: skip
    assert caught.value.field == "$.updated_at"


def test_a_double_past_float_range_is_refused_naming_the_field() -> None:
    """float(10**400) raised OverflowError (no shipped schema has a double; the code path does)."""
    with pytest.raises(ComposeError) as caught:
        _from_json("double", 10**400, "$.amount")
    assert caught.value.field == "$.amount"


def test_a_cursor_nested_too_deep_is_a_400() -> None:
    """A cursor decoding to 3000 nested arrays raised RecursionError: a 500 from the gateway."""
    with pytest.raises(_Answer) as caught:
        decode_cursor(base64.urlsafe_b64encode(b"[" * 3000).decode())
    assert caught.value.status == 400


def test_a_delivered_record_with_an_overlong_creation_time_is_still_shown() -> None:
    """cx-created-ms of 4301 digits made GET deliveries fail; now it shows as 0."""
    headers = [
        (n, LONG_NUMBER if n == CREATED_MS else v) for n, v in PUBLISHED.envelope.to_headers()
    ]
    shown = _shown(Record(0, 0, b"k", PUBLISHED.value, headers, 0))
    assert shown["created_ms"] == 0
    assert shown["value"] is not None


def _config(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(SHIPPED[0])
    for table, value in changes.items():
        document[table] = {**document.get(table, {}), **value}
    return document


@pytest.mark.parametrize(
    ("document", "path"),
    [
        (_config(local={"bootstrap": "kafka:²"}), "local.bootstrap"),
        (_config(local={"bootstrap": "kafka:" + "1" * 5000}), "local.bootstrap"),
        (_config(grants={"max_staleness_s": 10**400}), "grants.max_staleness_s"),
        ({**_config(), "": 1}, '""'),
    ],
)
def test_configuration_crashes_found_are_config_errors(document: dict[str, Any], path: str) -> None:
    """Each raised, or gave an error without a path; now ConfigError naming the field.

    ``int('²')`` and int() past 4300 digits raised ValueError, float(10**400) OverflowError, and
    an empty key gave an error with an empty path.
    """
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert caught.value.path == path


@pytest.mark.parametrize(
    "text",
    [b"a = " + b"1" * 5000, b"a = " + b"[" * 5000 + b"]" * 5000, b"a = {" * 3000, b"a = '\xff'"],
)
def test_a_config_file_the_parser_cannot_hold_is_a_config_error(
    tmp_path: Path, text: bytes
) -> None:
    """Past TOMLDecodeError, the parser raises ValueError (4301 digits) and RecursionError."""
    path = tmp_path / "node.toml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_config(path)
    assert caught.value.path == str(path)


WRITERS = Writers(
    "410100",
    [Writer("cascade.outbox.PSB", department="PSB"), Writer("cascade.up.410102", child="410102")],
)
_DEPT, _CHILD = "cascade.outbox.PSB", "cascade.up.410102"


@pytest.mark.parametrize(
    ("topic", "headers", "forged"),
    [
        (_DEPT, [(SOURCE_DEPT, None)], False),
        (_DEPT, [(HOPS, None), (SOURCE_DEPT, b"PSB")], False),
        (_CHILD, [(HOPS, None)], True),
        (_CHILD, [(HOPS, b"410102^"), (SOURCE_REGION, None)], False),
        (_CHILD, [(FEEDBACK, REPORT), (HOPS, None)], False),
        (_CHILD, [(FEEDBACK, None), (HOPS, b"410102^")], False),
    ],
)
def test_a_null_header_on_a_writer_topic_is_taken_as_missing(
    topic: str, headers: list[tuple[str, Any]], forged: bool
) -> None:
    """Null cx-source-dept / cx-hops / cx-source-region raised TypeError or AttributeError.

    A null value is now as if the header were missing: left to the envelope checks, except that
    a child's record without a hop path is forged (it was not handed up).
    """
    refused = WRITERS.check(WRITERS._by_topic[topic], topic, headers, None)
    assert (refused is not None) == forged
    if refused is not None:
        assert refused.reason is Reason.FORGED
        assert "missing" in refused.message


def test_a_null_hop_path_on_child_feedback_is_forged_when_the_report_parses() -> None:
    """Feedback with cx-hops null made ``b"".join`` raise TypeError; now the hop check runs."""
    report = Report("R-1", "r-1", "410102-PSB-00001", "410102", "PSB", ("name",), "wrong",
                    "410102", "PSB", 1)  # fmt: skip
    headers: list[tuple[str, Any]] = [(FEEDBACK, REPORT), (HOPS, None)]
    refused = WRITERS.check(WRITERS._by_topic[_CHILD], _CHILD, headers, report.encode())
    assert isinstance(refused, Refused)
    assert refused.reason is Reason.FORGED
    assert "hop path ending 410102^" in refused.message


def test_a_deeply_nested_trust_record_is_a_value_error() -> None:
    """``TrustedKey.from_json`` let RecursionError out of json.loads (a child writes these)."""
    with pytest.raises(ValueError, match="nested deeper than"):
        TrustedKey.from_json(b"[" * 100_000)


GRANT = json.loads(
    Grant("G1", "410102-PSB-00001", "HRSS", "410100", ("id_number",), 2**45,
          GrantStatus.APPROVED, 3, "ok", "410100").to_json()
)  # fmt: skip


@pytest.mark.parametrize(
    ("number", "needle"),
    [("1e400", "out of range"), ("-1e400", "out of range"), ("NaN", "not a number"),
     ("Infinity", "not a number"), ("1" * 4000, "digits"), ("[" * 5000 + "]" * 5000, "nested")],
)  # fmt: skip
def test_a_relayed_grant_with_a_hostile_number_is_a_value_error(number: str, needle: str) -> None:
    """expires_ms 1e400 raised OverflowError (int(inf)), deep nesting RecursionError.

    The grants relay catches only ValueError and TypeError, so either stopped it.
    """
    value = json.dumps({**GRANT, "expires_ms": "*"}).replace('"*"', number).encode()
    with pytest.raises(ValueError, match=needle):
        Grant.from_json(value)


@pytest.mark.parametrize("value", [b"[" * 100_000, b'{"v": 1e400}', b'{"v": ' + b"1" * 5000 + b"}"])
def test_hostile_stats_quality_and_audit_lines_are_refused_by_their_own_error(value: bytes) -> None:
    """Stats and quality ledger lines and audit lines are read from Kafka: RecursionError got out."""
    with pytest.raises(StatsError) as stats:
        StatsLine.from_json(value)
    assert stats.value.field == "value"
    with pytest.raises(StatsError):
        QualityLine.from_json(value)
    with pytest.raises(EntryError):
        parse_entry(value)


@pytest.mark.parametrize("name", [RECORD_ID, RESOURCE, SOURCE_DEPT, SOURCE_REGION, TARGET, HOPS,
                                  GRADE, SHARING, CREATED_MS])  # fmt: skip
def test_a_refusal_quotes_at_most_a_bounded_part_of_a_hostile_header(name: str) -> None:
    """A 5000-character cx-id was copied whole into the refusal message (cx-refusal-message)."""
    with pytest.raises(EnvelopeError) as caught:
        Envelope.from_headers(_with(name, b"A" * 4000 + b"\xff" * 1000))
    message = str(caught.value)
    assert len(message) < 300
    if name not in (HOPS,):  # a bad hop path quotes its bad entry, itself bounded
        assert "..." in message or "not ASCII" in message


def test_a_refusal_message_is_bounded_as_a_whole() -> None:
    """Whatever a message holds, cx-refusal-message carries at most MESSAGE_CHARS of it."""
    assert quoted("x" * 5000) == repr("x" * QUOTE_CHARS) + "... (5000 characters)"
    assert quoted(b"y" * 65) == repr(b"y" * QUOTE_CHARS) + "... (65 bytes)"
    assert quoted(None) == "null"
    assert len(bounded("z" * 50_000)) == MESSAGE_CHARS
    assert bounded("short") == "short"


def _batch_with_a_bad_header_key(count: int, bad: int) -> bytes:
    """A v2 record batch of ``count`` records whose record ``bad`` has a header key not UTF-8."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for n in range(count):
        headers = [("cx-id", f"r{n}".encode())] + ([("cx-marker!", None)] if n == bad else [])
        builder.append(n, timestamp=1_000 + n, key=b"k", value=b"v", headers=headers)
    data = bytearray(builder.build()).replace(b"cx-marker!", b"cx-\xff\xfe-bad!")
    struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))
    return bytes(data)


def test_a_batch_aiokafka_cannot_read_is_read_leniently_around_the_bad_header_key() -> None:
    """Aiokafka raised UnicodeDecodeError for the batch and every record after the bad one.

    The lenient reader returns the good records from the asked offset on (null header values
    kept), the bad one's offset with why, and where the next batch starts.
    """
    data = _batch_with_a_bad_header_key(6, bad=3)
    with pytest.raises(UnicodeDecodeError):
        list(DefaultRecordBatch(bytearray(data)))
    read = parse_leniently(data, TopicPartition("t", 0), 1)
    assert [r.offset for r in read.records] == [1, 2, 4, 5]
    assert [dict(r.headers)["cx-id"] for r in read.records] == [b"r1", b"r2", b"r4", b"r5"]
    assert read.bad == [(3, "header key is not UTF-8")]
    assert read.next_offset == 6
    assert read.records[0].timestamp == 1_001


def test_an_unreadable_stand_in_is_refused_as_a_bad_envelope_saying_why() -> None:
    """The link refuses the source's stand-in by index; other records are left to the rules."""
    problem = "header key is not UTF-8 at offset 3 of t partition 0: the record cannot be read"
    records: list[Any] = [object(), Unreadable("t", 0, 3, problem)]
    assert unreadable_refusals(records) == {1: Refused(Reason.BAD_ENVELOPE, problem)}


def test_a_batch_failing_its_crc_is_not_read_leniently() -> None:
    """A corrupt batch is left to the stand-ins: its records are never handed out as good."""
    data = bytearray(_batch_with_a_bad_header_key(3, bad=1))
    data[-1] ^= 0xFF
    with pytest.raises(LenientReadError, match="CRC"):
        parse_leniently(bytes(data), TopicPartition("t", 0), 0)


@pytest.mark.parametrize(("key", "field"), [("", '""'), ("x" * 5000, "x" * 64)])
def test_an_unknown_record_item_field_is_named_bounded_and_never_empty(
    key: str, field: str
) -> None:
    """An item ``{"": null}`` gave a ComposeError with an empty field name."""
    with pytest.raises(ComposeError) as caught:
        _record_item({key: None, "value": {}})
    assert caught.value.field == field
