"""Inputs the fuzzers found that crashed a parser, each kept as a plain test of its clear refusal."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from sample_records import PERSON, sample

from node.compose import ComposeError, _from_json, compose, to_json
from node.config import load_config, parse_config
from node.core import heartbeat
from node.core.catalog import Catalog
from node.core.envelope import CREATED_MS, GRADE, Envelope
from node.core.feedback import CORRECTS, VERSION, FeedbackBook, correction
from node.core.feedback import decode as decode_feedback
from node.core.outcome import Copy, Delivered, Direction, Reason, Refused
from node.core.peers import CHILD, PeerWatch
from node.core.policy import Policy, PolicySnapshot
from node.core.topology import Topology
from node.errors import ConfigError, EnvelopeError
from node.ops.gateway import _Answer, decode_cursor
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
    with pytest.raises(EnvelopeError, match="not JSON"):
        decode_feedback(b"report", b"[" * 100_000)


BEAT = json.loads(heartbeat.Beat("410102", "n", "county", 1_000, 5.0).encode())


def _beat(text: str) -> bytes:
    return text.encode()


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (b"[" * 100_000, "not JSON"),
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
def test_a_config_file_tomllib_cannot_hold_is_a_config_error(tmp_path: Path, text: bytes) -> None:
    """Past TOMLDecodeError, tomllib raised ValueError (4301 digits) and RecursionError."""
    path = tmp_path / "node.toml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_config(path)
    assert caught.value.path == str(path)
