"""The delivery contract against KafkaSink and a real broker (the city cluster).

The same checks as the in-memory suite (``tests/contract_checks.py``); topics are created with
their ``max.message.bytes`` as a topic config, and read back to their end offsets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from node.kafka.sink import KafkaSink
from node.kafka.topics import TopicLimits, ensure_topics
from tests.contract_checks import BATCH_BYTES, CHECKS, ID, TIMEOUT_S, Check, Landed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@dataclass
class KafkaTarget:
    """KafkaSink on one real cluster, with fresh topics under a unique prefix."""

    bootstrap: str
    prefix: str
    kafka_sink: KafkaSink
    partitions: dict[str, int] = field(default_factory=dict)

    @property
    def sink(self) -> KafkaSink:
        """The sink under test."""
        return self.kafka_sink

    async def create_topic(self, partitions: int, max_message_bytes: int | None = None) -> str:
        """Create a fresh topic, with its max.message.bytes when given."""
        name = f"{self.prefix}.contract.{len(self.partitions)}"
        configs = (
            None if max_message_bytes is None else {"max.message.bytes": f"{max_message_bytes}"}
        )
        await asyncio.wait_for(
            ensure_topics(self.bootstrap, [name], partitions, 1, configs), TIMEOUT_S
        )
        self.partitions[name] = partitions
        return name

    async def read_back(self, topic: str) -> list[Landed]:
        """Read ``topic`` from the beginning to its end offsets (no group, nothing committed)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await asyncio.wait_for(consumer.start(), TIMEOUT_S)
        landed: list[Landed] = []
        try:
            assigned = [TopicPartition(topic, p) for p in range(self.partitions[topic])]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            ends = await asyncio.wait_for(consumer.end_offsets(assigned), TIMEOUT_S)
            deadline = time.monotonic() + TIMEOUT_S
            while [tp for tp in assigned if await consumer.position(tp) < ends[tp]]:
                assert time.monotonic() < deadline, f"{topic} not read to its end in time"
                batch = await consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    landed += [
                        Landed(tp.partition, r.offset, r.key, dict(r.headers)[ID].decode())
                        for r in records
                    ]
        finally:
            await asyncio.wait_for(consumer.stop(), TIMEOUT_S)
        return sorted(landed, key=lambda r: (r.partition, r.offset))


@pytest.fixture
async def target(clusters: dict[str, str], prefix: str) -> AsyncIterator[KafkaTarget]:
    """A KafkaSink on the city cluster producing batches of BATCH_BYTES at most."""
    bootstrap = clusters["city"]
    sink = KafkaSink(
        bootstrap, f"{prefix}-contract", TopicLimits(bootstrap), batch_bytes=BATCH_BYTES
    )
    yield KafkaTarget(bootstrap, prefix, sink)
    await asyncio.wait_for(sink.stop(), TIMEOUT_S)


@pytest.mark.parametrize("check", CHECKS, ids=[check.__name__ for check in CHECKS])
async def test_kafka_sink_keeps_the_contract(target: KafkaTarget, check: Check) -> None:
    """KafkaSink against a real broker passes every delivery-contract check."""
    await check(target)
