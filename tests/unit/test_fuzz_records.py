"""Hostile heartbeats and correction feedback: JSON values a neighbour or a department chose.

Each example is a real heartbeat or feedback event, encoded, then broken in one field (a huge or
non-finite number, Unicode digits, the wrong type, deep nesting), or replaced by hostile bytes.
A heartbeat that parses is then taken all the way: the peer watch, the cascade view and this
node's own heartbeat up (which its parent must parse in turn). Properties: only EnvelopeError or
a Refused with a reason escapes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.core import heartbeat
from node.core.catalog import Catalog
from node.core.envelope import CREATED_MS, HOPS, RECORD_ID, RESOURCE
from node.core.feedback import (
    CORRECTS,
    FEEDBACK,
    REPORT,
    STATUS,
    VERSION,
    FeedbackBook,
    Forward,
    Report,
    Status,
    StatusChange,
    correction,
    decode,
    take,
)  # fmt: skip
from node.core.outcome import Reason, Refused
from node.core.peers import CHILD, PARENT, PeerWatch
from node.core.routing import Arrival
from node.core.topology import Topology
from node.errors import EnvelopeError
from tests.unit.test_fuzz_headers import HANG_LIMIT_S, attempt, fuzz, hop_texts, hostile_bytes
from tests.unit.test_fuzz_payload import CATALOG

FUZZ = fuzz(150)
CITY = Topology("410100", "city", "410000", ("410102", "410103"))
json_leaves = st.one_of(
    st.none(), st.booleans(), st.text(max_size=20),
    st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
)  # fmt: skip
hostile_numbers = st.one_of(
    st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1" * 4000, "-" + "9" * 400,
                     "0", "-1", "0.0", "1e-400", "true", "null", '"5"', "[]", "{}"]),
    st.integers(-(2**80), 2**80).map(str),
    st.floats().map(json.dumps),
)  # fmt: skip
"""JSON number texts: past float range, past int() conversion, non-finite, and the wrong types."""


def nested(depth: int) -> str:
    """A JSON array nested ``depth`` deep."""
    return "[" * depth + "]" * depth


def views(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    """Cascade views as a child reports its subtree, ``depth`` levels deep."""
    base = st.fixed_dictionaries(
        {"region": st.from_regex(r"41[0-9]{4}", fullmatch=True), "stale": st.booleans()},
        optional={"heartbeat_age_s": json_leaves, "node": json_leaves, "links": json_leaves},
    )
    if depth == 0:
        return base
    return st.builds(
        lambda v, c: {**v, "children": c}, base, st.lists(views(depth - 1), max_size=2)
    )


beats = st.builds(
    heartbeat.Beat,
    region=st.sampled_from(["410102", "410103", "410000", "999999"]),
    node=st.text(max_size=20),
    level=st.sampled_from(["county", "city", "province"]),
    sent_ms=st.integers(0, 2**45),
    interval_s=st.floats(0.01, 600),
    links=st.dictionaries(st.text(max_size=8), json_leaves, max_size=3),
    sent_up=st.dictionaries(st.integers(0, 2**45), st.integers(0, 10**6), max_size=5),
    bucket_s=st.integers(1, 86400),
    subtree=st.lists(views(2), max_size=3).map(tuple),
)


@st.composite
def beat_values(draw: st.DrawFn) -> bytes:
    """A heartbeat value: a real beat, a real beat with one field broken, or hostile bytes."""
    beat = draw(beats)
    body = json.loads(beat.encode())
    how = draw(st.sampled_from(["keep", "field", "drop", "key", "deep", "links", "bytes"]))
    if how == "keep":
        return beat.encode()
    if how == "links":  # shown, not interpreted: but re-encoded in this node's own beat up
        depth = draw(st.integers(1, 1100) | st.integers(55, 70) | st.integers(980, 1000))
        body["links"] = {**body["links"], "deep": "__deep__"}
        return json.dumps(body).replace('"__deep__"', nested(depth)).encode()
    if how == "bytes":
        return draw(hostile_bytes | st.integers(1, 200_000).map(nested).map(str.encode))
    name = draw(st.sampled_from(sorted(body)))
    if how == "drop":
        del body[name]
        return json.dumps(body).encode()
    text = json.dumps(body)
    marker = '"__hostile__"'
    if how == "key":  # a sent_up bucket whose key is not plain digits
        key = draw(st.sampled_from(["²", "١٢", "1" * 5000, "-1", "", " 1", "1.5"]))
        body["sent_up"] = {key: draw(st.integers(0, 9) | st.just("1"))}
        return json.dumps(body).encode()
    body[name] = "__hostile__"
    text = json.dumps(body)
    hostile = draw(hostile_numbers) if how == "field" else nested(draw(st.integers(500, 100_000)))
    return text.replace(marker, hostile).encode()


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(beat_values(), st.integers(0, 2**45))
def test_a_heartbeat_is_refused_by_name_or_survives_the_whole_way_up(
    value: bytes, now_ms: int
) -> None:
    """A beat decodes or is refused as cx-heartbeat, and a decoded one goes all the way.

    It feeds the peer watch and the cascade view, then this node's own beat up, which must
    encode and decode again at the parent.
    """
    beat = attempt(lambda: heartbeat.decode(value), EnvelopeError)
    if isinstance(beat, EnvelopeError):
        assert beat.header == heartbeat.HEARTBEAT
        assert str(beat).startswith(f"header {heartbeat.HEARTBEAT}: ")
        return
    peers = PeerWatch(CITY, 0, 5.0, bucket_s=60, keep=10, settle_s=30)
    for role in (CHILD, PARENT):
        if peers.sender_problem(beat, role) is None:
            peers.heard(beat, now_ms)
    peers.received_from(beat.region, [beat.sent_ms, now_ms], now_ms)
    peers.readings(now_ms)
    peers.silence_changes(now_ms, CHILD)
    peers.silence_changes(now_ms, PARENT)
    peers.completeness(now_ms)
    subtree = tuple(peers.children_views(now_ms))
    if CITY.parent is not None:
        peers.view(CITY.parent, now_ms)
    up = heartbeat.Beat(CITY.region, "city-node", CITY.level, now_ms, 5.0, {},
                        peers.sent_up.recent(now_ms), 60, subtree)  # fmt: skip
    encoded = up.encode()
    again = attempt(lambda: heartbeat.decode(encoded), EnvelopeError)
    if isinstance(again, EnvelopeError):  # a child's beat near the limit makes this one pass it
        assert "nested deeper than" in str(again)
        return
    assert list(again.subtree) == json.loads(json.dumps(subtree))


REPORTED = Report(
    "R-1", "rec-1", "410102-PSB-00001", "410102", "PSB", ("id_number",), "wrong check digit",
    "410103", "HRSS", 1_800_000_000_000,
)  # fmt: skip
REJECTED = StatusChange(
    "R-1", Status.REJECTED, "it is right", 0, "410102", "PSB", 1_800_000_000_001, "rec-1",
    "410102-PSB-00001", "410103", "HRSS",
)  # fmt: skip


@st.composite
def feedback_values(draw: st.DrawFn) -> tuple[bytes | None, bytes | None]:
    """A feedback record's kind header and value: real events with one field broken, or junk."""
    event: Report | StatusChange = REPORTED if draw(st.booleans()) else REJECTED
    kind = draw(st.just(REPORT if isinstance(event, Report) else STATUS) | st.sampled_from(
        [REPORT, STATUS, b"", None, b"\xff", b"REPORT"]
    ))  # fmt: skip
    body = json.loads(event.encode())
    how = draw(st.sampled_from(["keep", "field", "json", "drop", "deep", "bytes"]))
    if how == "keep":
        return kind, event.encode()
    if how == "bytes":
        return kind, draw(hostile_bytes | st.none())
    name = draw(st.sampled_from(sorted(body)))
    if how == "drop":
        del body[name]
        return kind, json.dumps(body).encode()
    if how == "field":
        body[name] = draw(json_leaves | hostile_bytes.map(lambda b: b.decode("latin-1"))
                          | st.lists(json_leaves, max_size=3))  # fmt: skip
        return kind, json.dumps(body).encode()
    body[name] = "__hostile__"
    hostile = draw(hostile_numbers) if how == "json" else nested(draw(st.integers(500, 100_000)))
    return kind, json.dumps(body).replace('"__hostile__"', hostile).encode()


def _book() -> FeedbackBook:
    book = FeedbackBook()
    book.add(REPORTED)
    return book


COUNTY = Topology("410102", "county", "410100", ())


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(
    feedback_values(),
    hop_texts.map(str.encode) | hostile_bytes | st.none(),
    st.sampled_from(list(Arrival)),
    st.sampled_from([COUNTY, CITY, Topology("410103", "county", "410100", ())]),
    st.sampled_from([CATALOG, Catalog({})]),
)
def test_feedback_is_forwarded_one_hop_or_refused_with_a_reason(
    record: tuple[bytes | None, bytes | None],
    hops: bytes | None,
    arrival: Arrival,
    topology: Topology,
    catalog: Catalog,
) -> None:
    """``decode`` raises only EnvelopeError naming cx-feedback; ``take`` forwards or refuses."""
    kind, value = record
    event = attempt(lambda: decode(kind or b"", value), EnvelopeError)
    assert not isinstance(event, EnvelopeError) or event.header == FEEDBACK
    taken = take(kind or b"", value, hops, arrival, topology, catalog, _book(),
                 frozenset({"HRSS", "PSB"}))  # fmt: skip
    if isinstance(taken, Refused):
        assert isinstance(taken.reason, Reason)
        assert taken.message
    else:
        assert isinstance(taken, Forward)
        assert taken.hops.startswith(hops or b"")


correction_headers = st.lists(
    st.tuples(
        st.sampled_from([CORRECTS, VERSION, RECORD_ID, RESOURCE, HOPS, CREATED_MS]),
        st.sampled_from([b"R-1", b"rec-1", b"410102-PSB-00001", b"2", b"17"])
        | hostile_bytes
        | st.none(),
    ),
    max_size=8,
)


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(correction_headers, st.sampled_from([COUNTY, CITY]))
def test_a_correction_makes_a_status_or_is_refused_whatever_its_headers(
    headers: list[tuple[str, bytes | None]], topology: Topology
) -> None:
    """``cx-corrects``/``cx-version``/``cx-id`` of any value: None, a status, or a refusal."""
    made = correction(headers, topology, _book(), 1_800_000_000_000)  # type: ignore[arg-type]
    if isinstance(made, Refused):
        assert made.message
    else:
        assert made is None or made.status is Status.CORRECTED
