"""Department-side helpers: publish resource records into outboxes, read a topic back.

Each department of a level publishes to its own topic, ``PREFIX.outbox.DEPT``:
``send_to_outboxes`` and ``publish_to_outboxes`` send each record to its ``cx-source-dept``'s.

Used by the demo, the tests and the benchmarks. Every wait is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from node.core.envelope import Envelope
from node.core.heartbeat import is_heartbeat


@dataclass(frozen=True, slots=True)
class Published:
    """A record to publish: its envelope, its framed value and its key."""

    envelope: Envelope
    value: bytes
    key: bytes | None = None
    partition: int | None = None
    """None: the producer's key partitioner picks it."""


@dataclass(frozen=True, slots=True)
class Received:
    """A record read back from a topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def record_id(self) -> str:
        """The ``cx-id`` header."""
        return self.headers.get("cx-id", "")


class Publisher:
    """One producer (acks=all) kept open for many ``send`` calls; use as an async context."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._producer.stop()

    async def send(self, topic: str, records: Sequence[Published]) -> None:
        """Produce ``records`` to ``topic`` and wait until all are acked."""
        futures = [
            await self._producer.send(
                topic, r.value, key=r.key or r.envelope.record_id.encode(),
                headers=r.envelope.to_headers(), partition=r.partition,
            )
            for r in records
        ]  # fmt: skip
        await asyncio.gather(*futures)

    async def send_to_outboxes(self, prefix: str, records: Sequence[Published]) -> None:
        """Produce each record to its department's ``PREFIX.outbox.DEPT``; wait for every ack."""
        by_topic: dict[str, list[Published]] = {}
        for record in records:
            by_topic.setdefault(outbox_of(prefix, record.envelope), []).append(record)
        await asyncio.gather(*(self.send(topic, some) for topic, some in by_topic.items()))


def outbox_of(prefix: str, envelope: Envelope) -> str:
    """Return the topic the record's source department publishes to."""
    return f"{prefix}.outbox.{envelope.source_dept}"


async def publish_to_outboxes(bootstrap: str, prefix: str, records: Sequence[Published]) -> None:
    """Produce each record to its department's outbox under ``prefix``; wait for every ack."""
    async with Publisher(bootstrap) as publisher:
        await publisher.send_to_outboxes(prefix, records)


async def publish(bootstrap: str, topic: str, records: Sequence[Published]) -> None:
    """Produce ``records`` to ``topic`` (acks=all) and wait until all are acked."""
    async with Publisher(bootstrap) as publisher:
        await publisher.send(topic, records)


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Received]], bool],
    timeout_s: float,
    heartbeats: bool = False,
) -> list[Received]:
    """Read ``topic`` from the beginning until ``until(records)`` holds or ``timeout_s`` passes.

    Uses no consumer group and commits nothing. Returns what was read either way; the caller
    asserts on it. Heartbeats between nodes (in up and hand-over topics) are left out
    unless ``heartbeats`` is set.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    received: list[Received] = []
    try:
        partitions = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout_s
        while partitions is None and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()  # aiokafka has no public refresh
            partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            return received
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        while not until(received) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                received.extend(
                    Received(
                        tp.partition, r.offset, r.key, r.value,
                        {k: v.decode("utf-8", "replace") for k, v in r.headers or ()},
                    )
                    for r in records
                    if heartbeats or not is_heartbeat(r.headers)
                )  # fmt: skip
    finally:
        await consumer.stop()
    return received
