"""A source: one consumer group reading one topic, with manual, explicit commits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from node.errors import TransportError

Batch = Mapping[TopicPartition, Sequence[Any]]
"""Fetched records by partition, in offset order (aiokafka ConsumerRecord objects)."""


class Source:
    """Reads ``topic`` as consumer ``group``; auto-commit off; a new group starts earliest."""

    def __init__(
        self, bootstrap: str, topic: str, group: str, *, max_batch: int, fetch_timeout_ms: int
    ) -> None:
        self.topic = topic
        self.bootstrap = bootstrap
        self._max_batch = max_batch
        self._fetch_timeout_ms = fetch_timeout_ms
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )

    async def start(self) -> None:
        """Connect and join the group; raise TransportError if the cluster is unreachable."""
        try:
            await self._consumer.start()
        except KafkaError as error:
            raise TransportError(
                f"consumer of {self.topic} on {self.bootstrap}: {error!r}"
            ) from error

    async def fetch(self) -> Batch:
        """Wait up to the fetch timeout for the next records; empty if none came."""
        try:
            batch: Batch = await self._consumer.getmany(
                timeout_ms=self._fetch_timeout_ms, max_records=self._max_batch
            )
        except KafkaError as error:
            raise TransportError(f"fetching {self.topic}: {error!r}") from error
        return batch

    def partition_count(self) -> int | None:
        """Partitions of the topic, from the consumer's metadata; None before it is known."""
        partitions = self._consumer.partitions_for_topic(self.topic)
        return len(partitions) if partitions else None

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> bool:
        """Commit the next offsets to read; False if the group rebalanced (records come again)."""
        try:
            await self._consumer.commit(dict(offsets))
        except CommitFailedError:
            return False
        except KafkaError as error:
            raise TransportError(f"committing {self.topic}: {error!r}") from error
        return True

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Fetch again from ``offsets`` (after a failed delivery)."""
        for partition, offset in offsets.items():
            if partition in self._consumer.assignment():
                self._consumer.seek(partition, offset)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Leave the group and close connections; give up after ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._consumer.stop(), timeout_s)
