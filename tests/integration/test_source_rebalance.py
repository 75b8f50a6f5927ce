"""A source that loses partitions to a new member of its group keeps going (real brokers).

Two worker processes of one node share a consumer group: the second one's join takes partitions
from the first while the first has batches under way. Committing those batches must not fail
the first's link (it used to: aiokafka refuses to commit a partition no longer assigned, and the
link restarted after a backoff, joined again, and set off the next rebalance), nor cost the
first its place in the group (a commit answered after the generation changed made aiokafka
forget its member id, and the whole group then stood still until that session timed out).
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from node.kafka.source import KafkaSource
from node.kafka.topics import ensure_topics
from node.transport import Partition

PARTITIONS = 4
PER_PARTITION = 10
WAIT_S = 60.0


async def fill(bootstrap: str, topic: str) -> None:
    """Write PER_PARTITION records to each partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition in range(PARTITIONS):
            for n in range(PER_PARTITION):
                await producer.send_and_wait(topic, b"v", key=f"{n}".encode(), partition=partition)
    finally:
        await producer.stop()


async def read_everything(source: KafkaSource) -> dict[Partition, int]:
    """Fetch until every record of the topic came (bounded); return the next offset per partition."""
    after: dict[Partition, int] = {}
    deadline = time.monotonic() + WAIT_S
    while sum(after.values()) < PARTITIONS * PER_PARTITION:
        assert time.monotonic() < deadline, f"only {sum(after.values())} records fetched"
        batch = await source.fetch()
        after |= {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
    return after


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offset per partition (None: none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        await consumer.stop()


async def two_members(bootstrap: str, topic: str, group: str) -> tuple[KafkaSource, KafkaSource]:
    """Fill ``topic`` (PARTITIONS partitions); return two sources of one group, not started."""
    await ensure_topics(bootstrap, [topic], PARTITIONS, 1)
    await fill(bootstrap, topic)
    first, second = (
        KafkaSource(bootstrap, topic, group, max_batch=100, fetch_timeout_ms=200) for _ in "12"
    )
    return first, second


async def test_a_commit_after_a_rebalance_took_partitions_commits_the_rest(
    clusters: dict[str, str], prefix: str
) -> None:
    """False (records come again to the new owner), the kept partitions committed, no error."""
    bootstrap, topic, group = clusters["city"], f"{prefix}.up.410102", f"{prefix}-group"
    first, second = await two_members(bootstrap, topic, group)
    await first.start()
    try:
        offsets = await read_everything(first)  # the first owns every partition
        assert len(offsets) == PARTITIONS
        await second.start()  # joins: the group rebalances, the first keeps part of it
        deadline = time.monotonic() + WAIT_S
        while len(assigned(first)) == PARTITIONS:
            assert time.monotonic() < deadline, "the group did not rebalance"
            await asyncio.gather(first.fetch(), second.fetch())
        kept = assigned(first)
        assert 0 < len(kept) < PARTITIONS

        assert await first.commit(offsets) is False  # not all of it: the rest comes again
        found = await committed(bootstrap, group, topic)
        assert {p for p, at in found.items() if at == PER_PARTITION} == kept
        assert await first.commit({tp: o for tp, o in offsets.items() if tp.partition in kept})
    finally:
        await second.stop()
        await first.stop()


SESSION_S = 10.0
"""aiokafka's default session timeout: how long a group waits for a member that left unannounced."""


async def test_a_commit_under_way_while_the_group_rebalances_costs_no_member_its_place(
    clusters: dict[str, str], prefix: str
) -> None:
    """The commit is answered before the first joins the next generation: it keeps its member id.

    A member that joins again as a stranger leaves its former self in the group, which the group
    may wait for until that session times out: in a full bench run, 10 s in which neither worker
    copied a record.
    """
    bootstrap, topic, group = clusters["city"], f"{prefix}.up.410102", f"{prefix}-group"
    first, second = await two_members(bootstrap, topic, group)
    await first.start()
    joining: asyncio.Task[None] | None = None
    try:
        offsets = await read_everything(first)
        member = member_id(first)
        held, release = asyncio.Event(), asyncio.Event()
        hold_next_commit_request(first, held, release)
        committing = asyncio.create_task(first.commit(offsets))
        await asyncio.wait_for(held.wait(), WAIT_S)  # built in this generation, not yet sent
        joining = asyncio.create_task(second.start())
        await asyncio.sleep(3.0)  # ungated, the first joins the next generation meanwhile
        release.set()
        await asyncio.wait_for(committing, WAIT_S)
        await asyncio.wait_for(joining, WAIT_S)
        gap = await longest_gap(first, second, SESSION_S + 4)
        assert member_id(first) == member, "the first joined again as a new member"
        assert gap < SESSION_S / 2, f"the group held no full assignment for {gap:.1f} s"
        assert assigned(first)
        assert assigned(second)
    finally:
        if joining is not None:
            joining.cancel()
            await asyncio.gather(joining, return_exceptions=True)
        await second.stop()
        await first.stop()


def member_id(source: KafkaSource) -> str:
    """The id the group knows the source's consumer by (aiokafka's coordinator: no API has it)."""
    consumer = source._consumer
    assert consumer is not None
    return str(consumer._coordinator.member_id)


def hold_next_commit_request(
    source: KafkaSource, held: asyncio.Event, release: asyncio.Event
) -> None:
    """Keep the source's next OffsetCommit request from leaving until ``release`` (a slow link)."""
    consumer = source._consumer
    assert consumer is not None
    coordinator = consumer._coordinator  # aiokafka's: no API delays a request
    send = coordinator._send_req

    async def later(request: object) -> object:
        if type(request).__name__.startswith("OffsetCommitRequest") and not held.is_set():
            held.set()
            await release.wait()
        return await send(request)

    coordinator._send_req = later


async def longest_gap(first: KafkaSource, second: KafkaSource, watch_s: float) -> float:
    """Watch for ``watch_s``; return the longest time the two did not own every partition."""
    began = time.monotonic()
    gap_from: float | None = None
    longest = 0.0
    while (now := time.monotonic()) - began < watch_s:
        whole = len(assigned(first) | assigned(second)) == PARTITIONS
        if whole and gap_from is not None:
            longest, gap_from = max(longest, now - gap_from), None
        elif not whole and gap_from is None:
            gap_from = now
        await asyncio.sleep(0.1)
    return longest if gap_from is None else max(longest, time.monotonic() - gap_from)


def assigned(source: KafkaSource) -> set[int]:
    """The partitions a source's consumer owns now (test introspection)."""
    consumer = source._consumer  # what the group gave it is not part of its API
    assert consumer is not None
    return {tp.partition for tp in consumer.assignment()}
