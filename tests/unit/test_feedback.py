"""Correction feedback: the pure parts, and links taking feedback aside over memory clusters."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
import structlog
from prometheus_client import CollectorRegistry
from sample_records import PERSON, sample

from node.catalog_files import load_catalog, packaged_catalog_dir
from node.codec import load_schemas, packaged_schema_dir
from node.config import FlowConfig
from node.core.envelope import HOPS, REFUSAL_MESSAGE, REFUSAL_REASON
from node.core.feedback import (
    CORRECTS,
    FEEDBACK,
    REPORT,
    STATUS,
    VERSION,
    FeedbackBook,
    Forward,
    NextHop,
    Report,
    Status,
    StatusChange,
    Way,
    correction,
    decode,
    is_feedback,
    key_of,
    next_hop,
    take,
)
from node.core.outcome import Reason, Refused
from node.core.peers import PeerWatch
from node.core.policy import Policy, PolicySnapshot
from node.core.routing import Arrival, Router
from node.core.topology import Topology
from node.errors import EnvelopeError
from node.kafka.bridge import Destinations, Link, Watch
from node.kafka.topics import TopicNames, level_writers
from node.ops.metrics import Metrics
from node.supervisor import Health
from tests.memory_transport import MemoryCluster, MemorySink, MemorySource

PROVINCE, CITY, COUNTY, OTHER = "410000", "410100", "410102", "410103"
PROVINCE_TOPOLOGY = Topology(PROVINCE, "province", None, (CITY,))
CITY_TOPOLOGY = Topology(CITY, "city", PROVINCE, (COUNTY, OTHER))
COUNTY_TOPOLOGY = Topology(COUNTY, "county", CITY, ())
RESOURCE = f"{COUNTY}-PSB-00001"
T0 = 1_779_999_600_000
SCHEMAS = load_schemas(packaged_schema_dir())
CATALOG = load_catalog(packaged_catalog_dir(), SCHEMAS)
DEPTS = frozenset({"PSB", "HRSS"})


def report(**fields: object) -> Report:
    """A province HRSS report about a county PSB person record."""
    made = Report(
        "r-1", "rec-1", RESOURCE, COUNTY, "PSB", ("name",), "名字错了", PROVINCE, "HRSS", T0
    )
    return dataclasses.replace(made, **fields)  # type: ignore[arg-type]


def status(**fields: object) -> StatusChange:
    """The county PSB rejecting ``report()``."""
    made = StatusChange(
        "r-1", Status.REJECTED, "记录无误", 0, COUNTY, "PSB", T0 + 5, "rec-1", RESOURCE, PROVINCE,
        "HRSS",
    )  # fmt: skip
    return dataclasses.replace(made, **fields)  # type: ignore[arg-type]


def test_reports_and_status_changes_survive_encoding() -> None:
    """What is encoded decodes to the same event."""
    assert decode(REPORT, report(fields=("name", "address")).encode()) == report(
        fields=("name", "address")
    )
    assert decode(STATUS, status().encode()) == status()


@pytest.mark.parametrize(
    ("kind", "value", "says"),
    [
        (REPORT, b"{", "not JSON"),
        (REPORT, b"[]", "JSON object"),
        (REPORT, report().encode().replace(b'"record_id"', b'"x"'), "'record_id'"),
        (REPORT, report(source_region="41").encode(), "'source_region'"),
        (REPORT, report(fields=()).encode(), "'fields'"),
        (REPORT, report(problem=" ").encode(), "'problem'"),
        (STATUS, status().encode().replace(b'"rejected"', b'"maybe"'), "'status'"),
        (STATUS, status().encode().replace(b'"version":0', b'"version":"0"'), "'version'"),
        (b"other", report().encode(), "neither report nor status"),
    ],
)
def test_malformed_feedback_names_the_field(kind: bytes, value: bytes, says: str) -> None:
    """Each malformed feedback value raises an EnvelopeError naming what is wrong."""
    with pytest.raises(EnvelopeError, match=says):
        decode(kind, value)


def test_only_a_first_feedback_header_marks_feedback() -> None:
    """The first header decides, as for heartbeats."""
    assert is_feedback([(FEEDBACK, REPORT)])
    assert not is_feedback([("cx-id", b"1"), (FEEDBACK, REPORT)])
    assert not is_feedback([])


def test_each_event_has_its_own_key_so_compaction_keeps_the_history() -> None:
    """The report and each status change are keyed apart; a duplicate keeps its key."""
    keys = {key_of(report()), key_of(status()), key_of(status(at_ms=T0 + 9))}
    assert len(keys) == 3
    assert key_of(status()) == key_of(status())


@pytest.mark.parametrize(
    ("topology", "destination", "expected"),
    [
        (COUNTY_TOPOLOGY, PROVINCE, NextHop(Way.UP, CITY)),
        (COUNTY_TOPOLOGY, OTHER, NextHop(Way.UP, CITY)),
        (CITY_TOPOLOGY, COUNTY, NextHop(Way.DOWN, COUNTY)),
        (PROVINCE_TOPOLOGY, COUNTY, NextHop(Way.DOWN, CITY)),
        (CITY_TOPOLOGY, CITY, NextHop(Way.HERE, CITY)),
    ],
)
def test_next_hop_climbs_then_descends(
    topology: Topology, destination: str, expected: NextHop
) -> None:
    """Up until the subtree holds the destination, then down the child towards it, then here."""
    assert next_hop(topology, destination) == expected


def test_next_hop_says_why_there_is_none() -> None:
    """Below but served by no child, or above the root: refused with the routing reasons."""
    unknown = next_hop(CITY_TOPOLOGY, "410199")
    above = next_hop(PROVINCE_TOPOLOGY, "420000")
    assert isinstance(unknown, Refused)
    assert unknown.reason is Reason.UNKNOWN_REGION
    assert isinstance(above, Refused)
    assert above.reason is Reason.UNROUTABLE


def test_the_book_folds_reports_and_changes() -> None:
    """Open until a change; the latest change wins; re-reading an event changes nothing."""
    book = FeedbackBook()
    assert book.state("r-1") is None
    assert book.add(report())
    state = book.state("r-1")
    assert state is not None
    assert (state.status, state.closed) == (Status.OPEN, False)
    corrected = status(status=Status.CORRECTED, reason="", version=2, at_ms=T0 + 9)
    assert book.add(corrected)
    assert book.add(status())  # an earlier rejection arriving late
    assert not book.add(status())
    state = book.state("r-1")
    assert state is not None
    assert state.closed
    assert (state.status, [c.status for c in state.history]) == (
        Status.CORRECTED, [Status.REJECTED, Status.CORRECTED],
    )  # fmt: skip
    assert json.loads(json.dumps(state.to_json()))["report"]["fields"] == ["name"]


def test_a_status_alone_is_known_without_its_report() -> None:
    """A node that saw only the status still answers, with no report."""
    book = FeedbackBook()
    book.add(status())
    state = book.state("r-1")
    assert state is not None
    assert (state.report, state.status) == (None, Status.REJECTED)


def taking(
    value: bytes, kind: bytes = REPORT, hops: bytes = b"", *, at: Topology = PROVINCE_TOPOLOGY,
    arrival: Arrival = Arrival.FROM_BELOW, book: FeedbackBook | None = None,
) -> Forward | Refused:  # fmt: skip
    """What ``at`` does with one feedback record."""
    return take(kind, value, hops, arrival, at, CATALOG, book or FeedbackBook(), DEPTS)


def test_a_fresh_report_goes_one_hop_towards_the_source() -> None:
    """Written at the province, it goes down to the city with the province on its path."""
    taken = taking(report().encode())
    assert isinstance(taken, Forward)
    assert (taken.way, taken.region, taken.hops, taken.department) == (
        Way.DOWN, CITY, b"410000v", None,
    )  # fmt: skip
    at_city = taking(
        report().encode(), hops=b"410000v", at=CITY_TOPOLOGY, arrival=Arrival.FROM_ABOVE
    )
    assert isinstance(at_city, Forward)
    assert at_city.hops == b"410000v,410100v"
    at_county = taking(
        report().encode(), hops=b"410000v,410100v", at=COUNTY_TOPOLOGY, arrival=Arrival.FROM_ABOVE
    )
    assert isinstance(at_county, Forward)
    assert (at_county.way, at_county.department) == (Way.HERE, "PSB")


@pytest.mark.parametrize(
    ("value", "kind", "hops", "at", "arrival", "reason", "says"),
    [
        (report(source_dept="TAX").encode(), REPORT, b"", PROVINCE_TOPOLOGY, Arrival.FROM_BELOW,
         Reason.BAD_ENVELOPE, "whose one source is PSB@410102"),
        (report(fields=("salary",)).encode(), REPORT, b"", PROVINCE_TOPOLOGY, Arrival.FROM_BELOW,
         Reason.BAD_ENVELOPE, "not items"),
        (report(resource="410102-XX-1").encode(), REPORT, b"", PROVINCE_TOPOLOGY,
         Arrival.FROM_BELOW, Reason.UNKNOWN_RESOURCE, "not in the catalog"),
        (report(reporter_region=CITY).encode(), REPORT, b"", PROVINCE_TOPOLOGY,
         Arrival.FROM_BELOW, Reason.BAD_ENVELOPE, "names 410100 as its origin"),
        (report(reporter_dept="TAX").encode(), REPORT, b"", PROVINCE_TOPOLOGY,
         Arrival.FROM_BELOW, Reason.BAD_ENVELOPE, "no feedback topic"),
        (report(reporter_region=OTHER).encode(), REPORT, b"410199^", CITY_TOPOLOGY,
         Arrival.FROM_BELOW, Reason.BAD_ENVELOPE, "not a child"),
        (report(reporter_region=OTHER).encode(), REPORT, b"410102^", CITY_TOPOLOGY,
         Arrival.FROM_BELOW, Reason.BAD_ENVELOPE, "outside its subtree"),
        (report(reporter_region=OTHER).encode(), REPORT, b"410000v", COUNTY_TOPOLOGY,
         Arrival.FROM_ABOVE, Reason.BAD_ENVELOPE, "not the parent"),
        (report(reporter_region=COUNTY).encode(), REPORT, b"410100v", COUNTY_TOPOLOGY,
         Arrival.FROM_ABOVE, Reason.BAD_ENVELOPE, "inside this subtree"),
        (report().encode(), REPORT, b"410000v,410100v,410000v", CITY_TOPOLOGY,
         Arrival.FROM_ABOVE, Reason.CYCLE, "comes back"),
        (status(status=Status.CORRECTED).encode(), STATUS, b"", COUNTY_TOPOLOGY,
         Arrival.FROM_BELOW, Reason.BAD_ENVELOPE, "made by the node"),
        (status(by_dept="HRSS").encode(), STATUS, b"410102^", CITY_TOPOLOGY, Arrival.FROM_BELOW,
         Reason.NOT_AUTHORITATIVE, "only by PSB@410102"),
        (status(at_region=OTHER).encode(), STATUS, b"410103^", CITY_TOPOLOGY, Arrival.FROM_BELOW,
         Reason.NOT_AUTHORITATIVE, "only by PSB@410102"),
        (status().encode(), STATUS, b"", COUNTY_TOPOLOGY, Arrival.FROM_BELOW,
         Reason.BAD_ENVELOPE, "unknown at 410102"),
        (status(status=Status.OPEN).encode(), STATUS, b"410102^", CITY_TOPOLOGY,
         Arrival.FROM_BELOW, Reason.BAD_ENVELOPE, "only corrected or rejected"),
    ],
)  # fmt: skip
def test_forged_or_misplaced_feedback_is_refused_with_a_reason(
    value: bytes, kind: bytes, hops: bytes, at: Topology, arrival: Arrival, reason: Reason,
    says: str,
) -> None:  # fmt: skip
    """Wrong source, unknown items, a stranger, a loop or a forged status: refused, saying why."""
    refused = taking(value, kind, hops, at=at, arrival=arrival)
    assert isinstance(refused, Refused)
    assert refused.reason is reason
    assert says in refused.message


def test_a_rejection_enters_only_at_the_source_for_a_known_report() -> None:
    """The source department rejects at its node a report that reached it; it goes back up."""
    book = FeedbackBook()
    book.add(report())
    taken = taking(status().encode(), STATUS, at=COUNTY_TOPOLOGY, book=book)
    assert isinstance(taken, Forward)
    assert (taken.way, taken.hops) == (Way.UP, b"410102^")
    wrong = taking(status(reporter_dept="PSB").encode(), STATUS, at=COUNTY_TOPOLOGY, book=book)
    assert isinstance(wrong, Refused)
    assert "does not match" in wrong.message
    home = taking(status().encode(), STATUS, b"410102^,410100^", at=PROVINCE_TOPOLOGY, book=book)
    assert isinstance(home, Forward)
    assert (home.way, home.department) == (Way.HERE, "HRSS")


def correcting(version: bytes = b"2", record_id: bytes = b"rec-1") -> list[tuple[str, bytes]]:
    """Headers of a correction of ``report()`` (the envelope's two fields read here)."""
    return [("cx-id", record_id), ("cx-resource", RESOURCE.encode()), (VERSION, version),
            (CORRECTS, b"r-1")]  # fmt: skip


def test_a_correction_makes_the_corrected_status_at_the_source() -> None:
    """A correction of a known report, version above 1, makes ``corrected`` with that version."""
    book = FeedbackBook()
    assert correction([("cx-id", b"rec-1")], COUNTY_TOPOLOGY, book, T0) is None
    unknown = correction(correcting(), COUNTY_TOPOLOGY, book, T0)
    assert isinstance(unknown, Refused)
    assert "unknown at 410102" in unknown.message
    book.add(report())
    made = correction(correcting(), COUNTY_TOPOLOGY, book, T0 + 7)
    assert made == status(status=Status.CORRECTED, reason="", version=2, at_ms=T0 + 7)
    for headers, says in (
        (correcting(version=b"1"), "version > 1"),
        (correcting(record_id=b"rec-2"), "not rec-2"),
    ):
        refused = correction(headers, COUNTY_TOPOLOGY, book, T0)
        assert isinstance(refused, Refused)
        assert says in refused.message
    elsewhere = correction(correcting(), CITY_TOPOLOGY, book, T0)
    assert isinstance(elsewhere, Refused)
    assert elsewhere.reason is Reason.NOT_AUTHORITATIVE


def county_link(book: FeedbackBook) -> tuple[MemoryCluster, MemoryCluster, Link]:
    """The county's local link over memory clusters, with ``book``."""
    local, parent = MemoryCluster(), MemoryCluster()
    topics = TopicNames("cascade")
    health = Health()
    health.register("local")
    peers = PeerWatch(COUNTY_TOPOLOGY, T0, 5.0, bucket_s=60, keep=10, settle_s=120)
    link = Link(
        "local", MemorySource(local, topics.outbox("PSB"), "g", 100), Arrival.FROM_BELOW,
        Router(COUNTY_TOPOLOGY), Policy(PolicySnapshot(CATALOG)),
        Destinations(MemorySink(local), topics, MemorySink(parent), topics, COUNTY),
        Metrics(CollectorRegistry(), ["local"], peers=[COUNTY, CITY]), health, schemas=SCHEMAS,
        settings=FlowConfig(), peer=COUNTY, log=structlog.get_logger("test"),
        clock=lambda: (T0 + 7) / 1000, watch=Watch(peers, feedback=book, feedback_departments=DEPTS),
        writers=level_writers(topics, COUNTY, DEPTS, ()),
    )  # fmt: skip
    return local, parent, link


async def test_the_source_link_turns_a_correction_into_a_corrected_status() -> None:
    """A correction goes up with its ``corrected`` status, logged here; forgeries are refused."""
    book = FeedbackBook()
    book.add(report())
    local, parent, link = county_link(book)
    topics = TopicNames("cascade")
    fixed = sample(SCHEMAS, PERSON, COUNTY, f"region:{PROVINCE}", seed=3, created_ms=T0)
    envelope = dataclasses.replace(fixed.envelope, record_id="rec-1")
    outbox = topics.outbox("PSB")
    local.produce(outbox, b"rec-1", fixed.value,
                  [*envelope.to_headers(), (VERSION, b"2"), (CORRECTS, b"r-1")])  # fmt: skip
    forged = status(status=Status.CORRECTED, version=2)
    local.produce(outbox, b"f", forged.encode(), [(FEEDBACK, STATUS), (HOPS, b"")])
    local.produce(outbox, b"g", b"garbage", [(FEEDBACK, REPORT), (HOPS, b"")])
    task = asyncio.create_task(link.run())
    try:
        await local.wait_until(lambda: local.committed_total("g", outbox) == 3)
    finally:
        link.request_stop()
        await asyncio.wait_for(task, 10)
    up = parent.records(topics.up(COUNTY))
    assert [dict(r.headers).get("cx-id") for r in up if not is_feedback(r.headers)] == [b"rec-1"]
    [sent] = [r for r in up if is_feedback(r.headers)]
    assert dict(sent.headers)[HOPS] == b"410102^"
    made = status(status=Status.CORRECTED, reason="", version=2, at_ms=T0 + 7)
    assert decode(STATUS, sent.value) == made
    [logged] = local.records(topics.feedback)
    assert (logged.key, decode(STATUS, logged.value)) == (key_of(made), made)
    refused = local.records(topics.refused)
    assert [dict(r.headers)[REFUSAL_REASON] for r in refused] == [b"bad_envelope"] * 2
    messages = " | ".join(sorted(dict(r.headers)[REFUSAL_MESSAGE].decode() for r in refused))
    assert "made by the node" in messages
    assert "not JSON" in messages
    state = book.state("r-1")
    assert state is not None
    assert state.status is Status.CORRECTED  # known once committed
    assert (link.totals.records_in, link.totals.copies_out, link.totals.refused) == (3, 1, 2)
