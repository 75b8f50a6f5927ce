"""Heartbeats, completeness and the cascade view: the pure parts, and a real Link taking beats."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry
from sample_records import PERSON, sample

from node.catalog_files import load_catalog, packaged_catalog_dir
from node.codec import load_schemas, packaged_schema_dir
from node.config import FlowConfig
from node.core.envelope import HOPS, REFUSAL_MESSAGE, REFUSAL_REASON
from node.core.heartbeat import (
    HEARTBEAT,
    VERSION,
    Beat,
    BucketCounts,
    decode,
    is_heartbeat,
    settled_range,
)
from node.core.peers import CHILD, PARENT, Completeness, PeerWatch
from node.core.policy import Policy, PolicySnapshot
from node.core.routing import Arrival, Router
from node.core.topology import Topology
from node.errors import EnvelopeError
from node.kafka.bridge import Destinations, Link, LinkTotals, Watch
from node.kafka.topics import TopicNames, level_writers
from node.ops.cascade import CascadeView
from node.ops.metrics import Metrics
from node.supervisor import Health
from tests.memory_transport import MemoryCluster, MemorySink, MemorySource

PROVINCE, CITY, COUNTY, OTHER = "410000", "410100", "410102", "410103"
CITY_TOPOLOGY = Topology(CITY, "city", PROVINCE, (COUNTY, OTHER))
T0 = 1_779_999_600_000  # ms; a multiple of 60 s
MINUTE = 60_000


def beat(region: str = COUNTY, sent_ms: int = T0, **fields: Any) -> Beat:
    """A heartbeat from ``region``."""
    return dataclasses.replace(Beat(region, f"n-{region}", "county", sent_ms, 5.0), **fields)


def watch(started_ms: int = T0) -> PeerWatch:
    """The city's watch: 60 s buckets, 10 kept, settled 2 minutes after their end."""
    return PeerWatch(CITY_TOPOLOGY, started_ms, 5.0, bucket_s=60, keep=10, settle_s=120)


def test_a_beat_survives_encoding() -> None:
    """What is encoded decodes to the same beat, bucket keys included."""
    sent = beat(sent_up={T0: 3, T0 + MINUTE: 4}, links={"local": {"up": True}}, subtree=({"a": 1},))
    assert decode(sent.encode()) == sent


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"{", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"region": "41"}', "not a region code"),
        (Beat(COUNTY, "n", "county", T0, 5.0).encode().replace(b'"sent_ms"', b'"x"'), "sent_ms"),
        (beat(sent_up={T0: 1}).encode().replace(f'"{T0}"'.encode(), b'"abc"'), "sent_up"),
        (beat(interval_s=0.0).encode(), "positive"),
    ],
)
def test_a_malformed_beat_says_what_is_wrong(value: bytes, says: str) -> None:
    """Each malformed heartbeat raises an EnvelopeError naming the problem."""
    with pytest.raises(EnvelopeError, match=says):
        decode(value)


def test_only_a_first_heartbeat_header_marks_a_heartbeat() -> None:
    """The first header decides; a heartbeat header further down does not make one."""
    assert is_heartbeat([(HEARTBEAT, VERSION)])
    assert not is_heartbeat([("cx-id", b"1"), (HEARTBEAT, VERSION)])
    assert not is_heartbeat([])


def test_buckets_count_by_creation_time_and_forget_old_ones() -> None:
    """Records fall in the bucket of their creation time; older than the kept window are not."""
    counts = BucketCounts(60, keep=3)
    now = T0 + 10 * MINUTE
    counts.add([now, now + 1, now - MINUTE, now - 3 * MINUTE, -1], now)
    assert counts.recent(now) == {now: 2, now - MINUTE: 1}
    assert counts.recent(now + 2 * MINUTE) == {now: 2}


def test_the_settled_range_ends_settle_s_before_the_beat() -> None:
    """Only buckets that ended ``settle_s`` before the beat, and still kept, are compared."""
    sent = T0 + 10 * MINUTE + 30_000
    first, last = settled_range(beat(sent_ms=sent, bucket_s=60), keep=10, settle_s=120)
    assert last == T0 + 7 * MINUTE  # the bucket [7, 8) min ended 2.5 min before the beat
    assert first == T0 + 2 * MINUTE  # one bucket fewer than the ten kept


def test_a_beat_is_accepted_only_from_a_neighbour_in_its_role() -> None:
    """A child's beat on the link from below, the parent's on the link from above; no other."""
    peers = watch()
    assert peers.sender_problem(beat(COUNTY), CHILD) is None
    assert peers.sender_problem(beat(PROVINCE), PARENT) is None
    assert "not a child" in (peers.sender_problem(beat(PROVINCE), CHILD) or "")
    assert "not the parent" in (peers.sender_problem(beat(COUNTY), PARENT) or "")
    assert "not a child" in (peers.sender_problem(beat("410199"), CHILD) or "")


def test_heartbeat_readings_age_from_the_send_time() -> None:
    """Age counts from the beat's send time; a silent peer ages from the node's start."""
    peers = watch()
    peers.heard(beat(COUNTY, T0 + 1000, interval_s=2.0), T0 + 1250)
    peers.heard(beat(COUNTY, T0 + 500), T0 + 1300)  # a late, older duplicate changes nothing
    by_peer = {r.peer: r for r in peers.readings(T0 + 4000)}
    county = by_peer[COUNTY]
    assert (county.role, county.age_s, county.hop_s, county.interval_s, county.received) == (
        CHILD, 3.0, 0.25, 2.0, 2,
    )  # fmt: skip
    silent = by_peer[OTHER]
    assert (silent.age_s, silent.hop_s, silent.interval_s, silent.received) == (4.0, None, 5.0, 0)
    assert by_peer[PROVINCE].role == PARENT


def test_completeness_compares_settled_buckets_only() -> None:
    """Sent and received agree when all arrived; a missing record shows once its bucket settled."""
    peers = watch()
    now = T0 + 10 * MINUTE
    settled, fresh = T0 + 5 * MINUTE, T0 + 9 * MINUTE
    peers.received_from(COUNTY, [settled] * 4 + [fresh] * 2, now)
    peers.heard(beat(COUNTY, now, sent_up={settled: 5, fresh: 9}), now)
    assert peers.completeness(now) == [Completeness(COUNTY, 5, 4)]  # fresh: still on its way
    peers.received_from(COUNTY, [settled, settled], now)  # the late one, and a duplicate
    assert peers.completeness(now) == [Completeness(COUNTY, 5, 6)]


def test_a_child_that_never_beat_has_no_completeness_yet() -> None:
    """Completeness is reported only for children whose heartbeat came."""
    peers = watch()
    peers.received_from(COUNTY, [T0], T0)
    assert peers.completeness(T0) == []


def test_the_view_nests_what_children_report_and_marks_silence_stale() -> None:
    """A child's view carries its reported subtree; a silent or late one is stale."""
    peers = watch()
    below = {"region": "410102001", "stale": False}
    peers.heard(beat(COUNTY, T0, links={"local": {"up": True}}, subtree=(below,)), T0 + 10)
    fresh, silent = peers.children_views(T0 + 5000)
    assert (fresh["region"], fresh["stale"]) == (COUNTY, False)
    assert (fresh["children"], fresh["links"]) == ([below], {"local": {"up": True}})
    assert (silent["region"], silent["stale"], silent["node"]) == (OTHER, True, None)
    assert peers.children_views(T0 + 16_000)[0]["stale"] is True  # more than 3 intervals


def test_rates_cover_about_ten_seconds_whenever_asked() -> None:
    """Rates come from the link's own samples: right on the first question, and zero when idle."""
    totals = LinkTotals()
    totals.sample(0.0)
    for second in range(1, 31):
        totals.records_in += 100
        totals.copies_out += 90
        totals.sample(float(second))
    assert totals.rates(30.0) == pytest.approx((100.0, 90.0, 0.0))
    assert totals.rates(30.5) == pytest.approx((1000 / 10.5, 900 / 10.5, 0.0), rel=0.01)
    assert totals.rates(45.0) == (0.0, 0.0, 0.0)  # nothing moved for longer than the window


def test_a_silent_childs_reported_subtree_ages_with_it_and_goes_stale() -> None:
    """Grandchildren age by the carrier's heartbeat age and are stale once it is."""
    peers = watch()
    grandchild = {"region": "410102001", "stale": False, "heartbeat_age_s": 1.0, "children": []}
    peers.heard(beat(COUNTY, T0, subtree=(grandchild,)), T0)
    [shown] = peers.children_views(T0 + 2000)[0]["children"]
    assert (shown["heartbeat_age_s"], shown["stale"]) == (3.0, False)
    [shown] = peers.children_views(T0 + 60_000)[0]["children"]
    assert (shown["heartbeat_age_s"], shown["stale"]) == (61.0, True)


async def city_link(
    peers: PeerWatch, tallies: list[object]
) -> tuple[MemoryCluster, MemoryCluster, Link, Metrics]:
    """The city's local link over memory clusters, watched by ``peers``."""
    schemas = load_schemas(packaged_schema_dir())
    local, parent = MemoryCluster(), MemoryCluster()
    topics = TopicNames("cascade")
    registry = CollectorRegistry()
    metrics = Metrics(registry, ["local"], peers=[CITY, COUNTY, OTHER, PROVINCE])
    health = Health()
    health.register("local")
    link = Link(
        "local", MemorySource(local, topics.up(COUNTY), "g", 100), Arrival.FROM_BELOW,
        Router(CITY_TOPOLOGY), Policy(PolicySnapshot(load_catalog(packaged_catalog_dir(), schemas))),
        Destinations(MemorySink(local), topics, MemorySink(parent), topics, CITY), metrics, health,
        schemas=schemas, settings=FlowConfig(), peer=CITY, log=structlog.get_logger("test"),
        watch=Watch(peers, lambda code: code, lambda now_ms, tally: tallies.append(tally)),
        writers=level_writers(topics, CITY, (), CITY_TOPOLOGY.children),
    )  # fmt: skip
    return local, parent, link, metrics


async def test_a_link_takes_heartbeats_aside_and_refuses_forged_ones() -> None:
    """A child's beat is taken (never routed), a stranger's or garbage is refused with a reason.

    The stranger's beat came by the child's own topic: it is forged.
    """
    peers = watch()
    tallies: list[object] = []
    local, parent, link, metrics = await city_link(peers, tallies)
    topics = TopicNames("cascade")
    schemas = load_schemas(packaged_schema_dir())
    up = sample(schemas, PERSON, COUNTY, f"region:{PROVINCE}", seed=1, created_ms=T0)
    headers = [(n, v) for n, v in up.envelope.to_headers() if n != HOPS] + [(HOPS, b"410102^")]
    handed_up = topics.up(COUNTY)
    local.produce(handed_up, b"k", up.value, headers)
    local.produce(handed_up, b"b", beat(COUNTY).encode(), [(HEARTBEAT, VERSION)])
    local.produce(handed_up, b"b", beat("410199").encode(), [(HEARTBEAT, VERSION)])
    local.produce(handed_up, b"b", b"garbage", [(HEARTBEAT, VERSION)])
    task = asyncio.create_task(link.run())
    try:
        await local.wait_until(lambda: local.committed_total("g", handed_up) == 4)
    finally:
        link.request_stop()
        await asyncio.wait_for(task, 10)
    assert [dict(r.headers)["cx-id"].decode() for r in parent.records(topics.up(CITY))] == [
        up.envelope.record_id
    ]
    refused = local.records(topics.refused)
    assert [dict(r.headers)[REFUSAL_REASON] for r in refused] == [b"forged", b"bad_envelope"]
    messages = [dict(r.headers)[REFUSAL_MESSAGE].decode() for r in refused]
    assert "cascade.up.410102" in messages[0]
    assert "heartbeat field region is '410199'" in messages[0]
    assert "not JSON" in messages[1]
    assert [r.peer for r in peers.readings(10**13) if r.received] == [COUNTY]
    assert (link.totals.records_in, link.totals.copies_out) == (3, 1)  # the beat taken aside
    assert link.totals.refused_by == {"forged": 1, "bad_envelope": 1}
    sample_value = metrics.registry.get_sample_value
    assert sample_value("exchange_peer_records_total", {"peer": COUNTY, "way": "in"}) == 1
    assert sample_value("exchange_peer_records_total", {"peer": PROVINCE, "way": "out"}) == 1
    labels = {"resource": up.envelope.resource, "direction": "up"}
    assert sample_value("exchange_resource_records_total", labels) == 1
    assert len(tallies) == 1


def test_the_view_builds_the_document_and_both_beats() -> None:
    """The document names the node, its links and its children; the beat up carries them."""
    peers = watch()
    peers.heard(beat(COUNTY, T0), T0)
    health = Health()
    health.register("local")
    health.up("local")

    class Quiet:
        totals = LinkTotals(records_in=10, refused=2, refused_by={"no_grant": 2})

        def lag_by_partition(self) -> dict[int, int]:
            return {0: 3, 1: 4}

    view = CascadeView(
        "city", CITY_TOPOLOGY, health, {"local": Quiet()}, peers, interval_s=5.0, bucket_s=60,
        clock=lambda: T0 / 1000 + 1,
    )  # fmt: skip
    document = view.document()
    assert (document["node"], document["region"], document["level"]) == ("city", CITY, "city")
    assert (document["links"]["local"]["up"], document["links"]["local"]["lag"]) == (True, 7)
    assert document["refusals"] == {"no_grant": 2}
    assert [c["region"] for c in document["children"]] == [COUNTY, OTHER]
    assert (document["parent"]["region"], document["parent"]["stale"]) == (PROVINCE, True)
    up = decode(view.beat_up().encode())
    assert (up.region, [c["region"] for c in up.subtree]) == (CITY, [COUNTY, OTHER])
    assert decode(view.beat_down().encode()).subtree == ()
