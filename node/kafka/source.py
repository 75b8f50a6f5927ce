"""A source over aiokafka: one consumer group reading one or more topics, with explicit commits.

Implements ``node.transport.RecordSource``. Every aiokafka error is translated to TransportError
here. Three things a plain consumer hides are made visible:

- A commit has a deadline; past it TransportError is raised (the link goes down and retries).
- While no records come, the cluster is probed every ``probe_s`` (end offsets, with the same
  deadline), so an unreachable cluster is reported instead of looking like an idle topic.
- Records lost before they were read (retention removed them, or the topic was recreated) are
  reported as a ``Gap`` with the exact lost offset range; the source then resumes at the earliest
  or the latest offset, as configured. It never silently restarts from the beginning.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    KafkaError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
)

from node.errors import TransportError
from node.kafka.closing import close_quietly
from node.kafka.connection import Connection, client_options
from node.transport import Batch, Gap, Partition

CLOSE_TIMEOUT_S = 5.0
T = TypeVar("T")


class KafkaSource:
    """Reads ``topic`` (one or several) as consumer ``group``; auto-commit off, earliest first.

    Given several topics, ``topic`` is their names joined with commas (for messages).
    """

    def __init__(
        self,
        bootstrap: Connection | str,
        topic: str | Sequence[str],
        group: str,
        *,
        max_batch: int,
        fetch_timeout_ms: int,
        deadline_s: float = 30.0,
        probe_s: float = 5.0,
        on_gap: Callable[[Gap], None] = lambda gap: None,
        resume_at: str = "earliest",
        fetch_max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.topics = (topic,) if isinstance(topic, str) else tuple(topic)
        self.topic = ",".join(self.topics)
        self.bootstrap = bootstrap
        self._group = group
        self._max_batch = max_batch
        self._fetch_timeout_ms = fetch_timeout_ms
        self._deadline_s = deadline_s
        self._probe_s = probe_s
        self._on_gap = on_gap
        self._resume_at = resume_at
        self._fetch_max_bytes = fetch_max_bytes
        self._consumer: AIOKafkaConsumer | None = None
        self._last_heard = time.monotonic()
        self._committed: dict[TopicPartition, int] = {}  # as far as this member knows
        self._ends: dict[TopicPartition, int] = {}  # from the last probe

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *self.topics,
            **client_options(self.bootstrap),
            group_id=self._group,
            client_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="none",  # a missing position is handled here, never silently
            max_partition_fetch_bytes=min(4 * 1024 * 1024, self._fetch_max_bytes),
            fetch_max_bytes=self._fetch_max_bytes,
            request_timeout_ms=int(max(self._deadline_s, 5.0) * 1000) + 5000,
        )

    @property
    def _running(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise TransportError(f"consumer of {self.topic} is not started")
        return self._consumer

    async def start(self) -> None:
        """Connect and join the group; raise TransportError if the cluster is unreachable."""
        consumer = self._new_consumer()
        try:
            await asyncio.wait_for(consumer.start(), self._deadline_s)
        except (KafkaError, TimeoutError) as error:
            await _close(consumer)
            raise TransportError(
                f"consumer of {self.topic} on {self.bootstrap}: {error!r}"
            ) from error
        self._consumer = consumer
        self._last_heard = time.monotonic()

    async def fetch(self) -> Batch:
        """Wait up to the fetch timeout for records; empty if none came.

        Raises TransportError when the cluster has not answered a probe within the deadline.
        """
        consumer = self._running
        try:
            fetched = await consumer.getmany(
                timeout_ms=self._fetch_timeout_ms, max_records=self._max_batch
            )
        except NoOffsetForPartitionError as error:
            await self._start_fresh(consumer, error)
            return {}
        except OffsetOutOfRangeError as error:
            await self._report_gaps(consumer, error.args[0] if error.args else {})
            return {}
        except KafkaError as error:
            raise TransportError(f"fetching {self.topic}: {error!r}") from error
        if fetched:
            self._last_heard = time.monotonic()
            for tp, records in fetched.items():
                self._committed.setdefault(tp, records[0].offset)  # where the group stood
            return {Partition(tp.topic, tp.partition): records for tp, records in fetched.items()}
        if time.monotonic() - self._last_heard >= self._probe_s:
            await self._probe(consumer)
        return {}

    async def _probe(self, consumer: AIOKafkaConsumer) -> None:
        """Ask for end offsets within the deadline: proof that the cluster answers."""
        known = self._known(consumer) or [TopicPartition(self.topics[0], 0)]
        ends = consumer.end_offsets(known)
        self._ends = await self._answered(ends, self._deadline_s, "probing")
        for tp in consumer.assignment() - self._committed.keys():  # known once, then tracked
            committed = await self._answered(consumer.committed(tp), self._deadline_s, "probing")
            if committed is not None:
                self._committed[tp] = committed

    async def _answered(self, asking: Awaitable[T], timeout_s: float, doing: str) -> T:
        """Await a question to the cluster within ``timeout_s``; TransportError if unanswered."""
        try:
            answer = await asyncio.wait_for(asking, timeout_s)
        except TimeoutError as error:
            raise TransportError(
                f"{doing} {self.topic}: {self.bootstrap} did not answer within {timeout_s:g} s"
            ) from error
        except KafkaError as error:
            raise TransportError(f"{doing} {self.topic} on {self.bootstrap}: {error!r}") from error
        self._last_heard = time.monotonic()
        return answer

    async def _start_fresh(self, consumer: AIOKafkaConsumer, error: Exception) -> None:
        """Start a partition with no committed offset (a new group) at its beginning."""
        partitions = [p for p in error.args if isinstance(p, TopicPartition)]
        partitions = partitions or list(consumer.assignment())
        try:
            await consumer.seek_to_beginning(*partitions)
        except KafkaError as failure:
            raise TransportError(f"seeking {self.topic}: {failure!r}") from failure

    async def _report_gaps(self, consumer: AIOKafkaConsumer, lost: Mapping[object, int]) -> None:
        """Report each out-of-range position as a Gap, then resume as configured."""
        partitions = [tp for tp in lost if isinstance(tp, TopicPartition)]
        reading = "reading offsets of"
        firsts = await self._answered(
            consumer.beginning_offsets(partitions), self._deadline_s, reading
        )
        ends = await self._answered(consumer.end_offsets(partitions), self._deadline_s, reading)
        for tp in partitions:
            position, first, end = lost[tp], firsts[tp], ends[tp]
            resume = first if self._resume_at == "earliest" else end
            if position < first:
                gap = Gap(Partition(tp.topic, tp.partition), position, first - 1, resume,
                          "retention removed them before they were forwarded")  # fmt: skip
            else:
                gap = Gap(Partition(tp.topic, tp.partition), end, None, resume,
                          f"the topic ends at {end} but the position was {position}: "
                          "it was recreated or truncated")  # fmt: skip
            self._on_gap(gap)
            consumer.seek(tp, resume)

    def _known(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """Every partition of the topics known from the consumer's metadata."""
        return [
            TopicPartition(topic, p)
            for topic in self.topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]

    def partition_count(self) -> int | None:
        """Partitions of each topic, from the consumer's metadata.

        None before they are known, or when the topics' counts differ.
        """
        if self._consumer is None:
            return None
        counts = {len(self._consumer.partitions_for_topic(t) or ()) for t in self.topics}
        return counts.pop() if len(counts) == 1 and 0 not in counts else None

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        """Commit the next offsets to read; False if the group rebalanced (records come again).

        Raises TransportError when the commit fails or takes longer than the deadline.
        """
        commit = {TopicPartition(tp.topic, tp.partition): o for tp, o in offsets.items()}
        try:
            await self._answered(self._running.commit(commit), self._deadline_s, "committing")
        except TransportError as error:
            if isinstance(error.__cause__, CommitFailedError):
                return False
            raise
        self._committed.update(commit)
        return True

    def lag_by_partition(self) -> dict[int, int]:
        """Count records per assigned partition not committed yet (no I/O).

        Partitions of the same number in several topics are added up. The last seen end offset
        (high watermark of the last fetch, or of the last probe) less the committed offset;
        partitions where either is unknown are left out.
        """
        consumer = self._consumer
        if consumer is None:
            return {}
        found: dict[int, int] = {}
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            end = self._ends.get(tp) if end is None else end
            committed = self._committed.get(tp)
            if end is not None and committed is not None:
                found[tp.partition] = found.get(tp.partition, 0) + max(0, end - committed)
        return found

    def rewind(self, offsets: Mapping[Partition, int]) -> None:
        """Fetch again from ``offsets`` (after a failed delivery)."""
        consumer = self._running
        assigned = consumer.assignment()
        for tp, offset in offsets.items():
            partition = TopicPartition(tp.topic, tp.partition)
            if partition in assigned:
                consumer.seek(partition, offset)

    async def lag(self, timeout_s: float) -> int | None:
        """Count the records of the topics that the group has not committed yet.

        Measured from the group's committed offsets, not this member's positions, so it also
        holds when another member of the group owns the partitions. None before the topic's
        partitions are known; TransportError when the cluster does not answer within
        ``timeout_s``.
        """
        consumer = self._running
        partitions = self._known(consumer)
        if not partitions:
            return None

        async def behind() -> int:
            ends = await consumer.end_offsets(partitions)
            firsts = await consumer.beginning_offsets(partitions)
            total = 0
            for tp in partitions:
                committed = await consumer.committed(tp)
                total += max(0, ends[tp] - (firsts[tp] if committed is None else committed))
            return total

        return await self._answered(behind(), timeout_s, "measuring the lag of")

    async def stop(self) -> None:
        """Leave the group and close connections; give up after a few seconds."""
        consumer, self._consumer = self._consumer, None
        self._committed.clear()
        self._ends.clear()
        if consumer is not None:
            await _close(consumer)


async def _close(consumer: AIOKafkaConsumer) -> None:
    await close_quietly(consumer.stop(), CLOSE_TIMEOUT_S)
