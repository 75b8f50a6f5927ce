"""Grants in Kafka: the store that reads them and the relays that spread them through the cascade.

Every node keeps grant events on its own cluster's compacted ``PREFIX.grants`` topic, keyed by
grant id. ``GrantStore`` reads that topic from the beginning (so grants survive restarts) and hands
each new ``GrantBook`` to the policy. It fails closed: while it cannot confirm it has read the topic
up to its end within ``max_staleness_s``, the book it hands over is empty, so a revocation takes
effect within that bound even when the topic cannot be read.


``GrantRelay`` spreads events: up to the parent's topic when they originate in this subtree, and
down from the parent's topic when they originate outside it. An event therefore climbs only
through its origin's ancestors and descends only into subtrees without its origin: no loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from node.core.grants import Grant, GrantBook, newer
from node.core.topology import Topology
from node.errors import TransportError
from node.kafka.sink import Message, Sink
from node.kafka.source import Source

Clock = Callable[[], float]


class GrantStore:
    """The latest version of every grant this node has seen, kept current from Kafka."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        on_change: Callable[[GrantBook], None],
        *,
        max_staleness_s: float,
        clock: Clock = time.time,
        poll_ms: int = 100,
    ) -> None:
        self.topic = topic
        self.grants: dict[str, Grant] = {}
        self.started = False
        self.fresh = False
        self._bootstrap = bootstrap
        self._on_change = on_change
        self._max_staleness_s = max_staleness_s
        self._clock = clock
        self._poll_ms = poll_ms
        self._next_expiry_ms: int | None = None
        self._stopping = asyncio.Event()
        self._log = structlog.get_logger("node.grants").bind(topic=topic)

    def request_stop(self) -> None:
        """Return from run() after the current poll."""
        self._stopping.set()

    async def run(self) -> None:
        """Read the grants topic until stopped, publishing a new book on every change."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            await consumer.start()
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            self.started = True
            caught_up_at: float | None = None
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=self._poll_ms)
                applied = [self._apply(r.value) for records in batch.values() for r in records]
                changed = any(applied)  # every record applied first: any() would stop early
                now = self._clock()
                if await self._at_end(consumer, partitions, self._max_staleness_s / 2):
                    caught_up_at = now
                fresh = caught_up_at is not None and now - caught_up_at <= self._max_staleness_s
                expired = self._next_expiry_ms is not None and now * 1000 >= self._next_expiry_ms
                if changed or fresh != self.fresh or expired:
                    self.fresh = fresh
                    self._publish(now)
        except KafkaError as error:
            raise TransportError(f"reading grants from {self.topic}: {error!r}") from error
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(consumer.stop(), 10)

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        for _ in range(50):
            found = consumer.partitions_for_topic(self.topic)
            if found:
                return [TopicPartition(self.topic, p) for p in sorted(found)]
            await consumer._client.force_metadata_update()  # aiokafka has no public refresh
            await asyncio.sleep(0.1)
        raise TransportError(f"grants topic {self.topic} does not exist")

    @staticmethod
    async def _at_end(
        consumer: AIOKafkaConsumer, partitions: list[TopicPartition], timeout_s: float
    ) -> bool:
        """Tell whether every partition is read to its end (False if the broker does not say)."""
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(partitions), timeout_s)
        except (TimeoutError, KafkaError):
            return False
        for partition in partitions:
            if await consumer.position(partition) < ends[partition]:
                return False
        return True

    def _apply(self, value: bytes | None) -> bool:
        if value is None:
            return False
        try:
            grant = Grant.from_json(value)
        except (ValueError, TypeError) as error:
            self._log.warning("grant_unreadable", error=str(error))
            return False
        if not newer(self.grants.get(grant.grant_id), grant):
            return False
        self.grants[grant.grant_id] = grant
        return True

    def _publish(self, now: float) -> None:
        book = GrantBook(self.grants.values(), int(now * 1000)) if self.fresh else GrantBook()
        self._next_expiry_ms = book.next_expiry_ms
        self._on_change(book)
        self._log.info("grants_updated", active=len(book), known=len(self.grants), fresh=self.fresh)


class GrantRelay:
    """Copies grant events from one cluster's grants topic to another's, filtered by origin."""

    def __init__(
        self, source: Source, sink: Sink, topic: str, keep: Callable[[Grant], bool]
    ) -> None:
        self._source = source
        self._sink = sink
        self._topic = topic
        self._keep = keep
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        """Return from run() after the current batch."""
        self._stopping.set()

    async def run(self) -> None:
        """Relay until stopped; commit only what was relayed (or filtered out)."""
        await self._source.start()
        try:
            while not self._stopping.is_set():
                batch = await self._source.fetch()
                if not batch:
                    continue
                messages = []
                for records in batch.values():
                    for record in records:
                        try:
                            grant = Grant.from_json(record.value or b"")
                        except (ValueError, TypeError):
                            continue
                        if self._keep(grant):
                            messages.append(Message(self._topic, record.key, record.value, []))
                if messages:
                    await self._sink.deliver(messages)
                await self._source.commit({tp: recs[-1].offset + 1 for tp, recs in batch.items()})
        finally:
            await self._source.stop()


def relays(
    topology: Topology,
    local_bootstrap: str,
    local_topic: str,
    parent_bootstrap: str,
    parent_topic: str,
    local_sink: Sink,
    parent_sink: Sink,
    group_prefix: str,
) -> list[GrantRelay]:
    """Return the up and down relays of a node that has a parent."""

    def source(bootstrap: str, topic: str, name: str) -> Source:
        group = f"{group_prefix}.{name}"
        return Source(bootstrap, topic, group, max_batch=500, fetch_timeout_ms=100)

    def mine(grant: Grant) -> bool:
        return topology.contains(grant.origin)

    return [
        GrantRelay(
            source(local_bootstrap, local_topic, "grants-up"), parent_sink, parent_topic, mine
        ),
        GrantRelay(
            source(parent_bootstrap, parent_topic, "grants-down"), local_sink, local_topic,
            lambda grant: not mine(grant),
        ),
    ]  # fmt: skip
