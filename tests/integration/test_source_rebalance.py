"""A source that loses partitions to a new member of its group keeps going (real brokers).

Two worker processes of one node share a consumer group: the second one's join takes partitions
from the first while the first has batches under way. Committing those batches must not fail
the first's link (it used to: aiokafka refuses to commit a partition no longer assigned, and the
link restarted after a backoff, joined again, and set off the next rebalance).
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


async def test_a_commit_after_a_rebalance_took_partitions_commits_the_rest(
    clusters: dict[str, str], prefix: str
) -> None:
    """False (records come again to the new owner), the kept partitions committed, no error."""
    bootstrap = clusters["city"]
    topic, group = f"{prefix}.up.410102", f"{prefix}-group"
    await ensure_topics(bootstrap, [topic], PARTITIONS, 1)
    await fill(bootstrap, topic)
    first = KafkaSource(bootstrap, topic, group, max_batch=100, fetch_timeout_ms=200)
    second = KafkaSource(bootstrap, topic, group, max_batch=100, fetch_timeout_ms=200)
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


def assigned(source: KafkaSource) -> set[int]:
    """The partitions a source's consumer owns now (test introspection)."""
    consumer = source._consumer  # what the group gave it is not part of its API
    assert consumer is not None
    return {tp.partition for tp in consumer.assignment()}
