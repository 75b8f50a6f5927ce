"""How a source shares its fetch budget out among the partitions it reads."""

from __future__ import annotations

from node.kafka.source import (
    PARTITION_FETCH_LEAST,
    PARTITION_FETCH_MOST,
    KafkaSource,
    partition_fetch_bytes,
)

MB = 1024 * 1024


def test_few_partitions_fetch_the_most_each() -> None:
    """One topic of 3 partitions under a 32 MB budget: 4 MB each, the ceiling."""
    assert partition_fetch_bytes(32 * MB, 3) == PARTITION_FETCH_MOST


def test_many_partitions_share_the_budget() -> None:
    """A county reading 24 outboxes of 3 partitions buffers at most the budget in all."""
    share = partition_fetch_bytes(32 * MB, 72)
    assert share * 72 <= 32 * MB
    assert share == 32 * MB // 72


def test_a_share_never_falls_below_the_floor() -> None:
    """Thousands of partitions still fetch a useful amount each (and a larger batch whole)."""
    assert partition_fetch_bytes(32 * MB, 10_000) == PARTITION_FETCH_LEAST
    assert partition_fetch_bytes(32 * MB, 0) == PARTITION_FETCH_MOST


async def test_a_source_counts_every_topic_it_reads() -> None:
    """The share is per partition of every topic: 24 topics of 3 partitions count 72."""
    topics = [f"cx.outbox.D{n}" for n in range(24)]
    source = KafkaSource("127.0.0.1:1", topics, "g", max_batch=10, fetch_timeout_ms=100,
                         partitions=3)  # fmt: skip
    consumer = source._new_consumer()  # built, never started: no connection is made
    try:
        assert consumer._max_partition_fetch_bytes == 32 * MB // 72
    finally:
        await consumer.stop()
