"""A source over aiokafka: one consumer group reading one or more topics, with explicit commits.

Implements ``node.transport.RecordSource``. Every aiokafka error is translated to TransportError
here. Three things a plain consumer hides are made visible:

- A commit has a deadline; past it TransportError is raised (the link goes down and retries).
- While no records come, the cluster is probed every ``probe_s`` (end offsets, with the same
  deadline), so an unreachable cluster is reported instead of looking like an idle topic.
- Records lost before they were read (retention removed them, or the topic was recreated) are
  reported as a ``Gap`` with the exact lost offset range; the source then resumes at the earliest
  or the latest offset, as configured. It never silently restarts from the beginning.
- A record aiokafka cannot read (a header key that is not UTF-8: its C reader raises a bare
  UnicodeDecodeError, its Python reader CorruptRecordException) would otherwise fail every fetch
  of its partition for ever, and take with it the records fetched before it. The source goes
  back to the records it has not handed out yet, reads them one at a time up to the bad one, and
  hands that one out as an ``Unreadable`` stand-in at its offset, which the link refuses
  (``bad_envelope``) to the dead-letter topic; the partition then moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    CorruptRecordException,
    IllegalStateError,
    KafkaError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
)

from node.core.outcome import Reason, Refused
from node.errors import TransportError
from node.kafka.closing import close_quietly
from node.kafka.connection import Connection, client_options
from node.kafka.lenient import LenientReadError, read_batch
from node.kafka.rebalance import CommitGate
from node.transport import Batch, Gap, Header, Partition, Record

CLOSE_TIMEOUT_S = 5.0
T = TypeVar("T")
UNREADABLE = (UnicodeDecodeError, CorruptRecordException)
"""What aiokafka raises for a record it cannot parse (CorruptRecordException is a KafkaError)."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Stand-in for the record at ``offset`` that could not be read; ``problem`` says why.

    It has no key, value or headers (none could be read): the link refuses it as
    ``bad_envelope`` with ``problem`` as the message, so a stub reaches the dead-letter topic
    and the offset is committed like any other.
    """

    topic: str
    partition: int
    offset: int
    problem: str
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[Header, ...] = ()
    timestamp: int = 0


def unreadable_refusals(records: Sequence[Record]) -> dict[int, Refused]:
    """Return the refusal of each ``Unreadable`` stand-in, by its index in ``records``."""
    return {
        index: Refused(Reason.BAD_ENVELOPE, record.problem)
        for index, record in enumerate(records)
        if record.__class__ is Unreadable
    }


def _bad_header_key(error: Exception) -> bool:
    """Tell whether aiokafka failed on a header key that is not UTF-8 (C or Python reader)."""
    return isinstance(error, UnicodeDecodeError) or isinstance(error.__cause__, UnicodeDecodeError)


def _problem(error: Exception, topic: str, partition: int, offset: int, first: int) -> str:
    """Say why the record at ``offset`` could not be read, ``first`` the run's first such.

    aiokafka parses a record batch from its start, so every record after a bad one in the same
    batch fails too: those are said to follow ``first``.
    """
    where = f"of {topic} partition {partition}"
    if _bad_header_key(error):
        why = "header key is not UTF-8"
    else:
        why = f"record batch is corrupt ({str(error)[:160]})"
    if offset == first:
        return f"{why} at offset {offset} {where}: the record cannot be read"
    return (
        f"record at offset {offset} {where} cannot be read: it follows, in the same record "
        f"batch, the record at offset {first} ({why}), which the client cannot read past"
    )


PARTITION_FETCH_MOST = 4 * 1024 * 1024
PARTITION_FETCH_LEAST = 64 * 1024
"""Bounds of one partition's share of a fetch (a larger first batch still comes, whole)."""


def partition_fetch_bytes(fetch_max_bytes: int, partitions: int) -> int:
    """Bytes to fetch per partition, so what the consumer buffers for all fits one fetch's budget.

    aiokafka keeps each partition's fetched bytes until they are handed out and fetches for
    every partition without any: a county reading 24 outboxes of 3 partitions at 4 MB each
    could hold 288 MB unread.
    """
    share = fetch_max_bytes // max(1, partitions)
    return max(PARTITION_FETCH_LEAST, min(PARTITION_FETCH_MOST, share))


HEARTBEAT_MS = 1000
"""How often a member tells the group coordinator it is alive, and so learns of a rebalance: a
worker process joining waits until every member has noticed (aiokafka's default is 3 s; the
session still times out after 10 s)."""


class KafkaSource:
    """Reads ``topic`` (one or several) as consumer ``group``; auto-commit off, earliest first.

    Given several topics, ``topic`` is their names joined with commas (for messages).
    ``partitions`` is how many partitions each topic is expected to have; it shares
    ``fetch_max_bytes`` out among them (``partition_fetch_bytes``).
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
        partitions: int = 1,
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
        self._partition_fetch_bytes = partition_fetch_bytes(
            fetch_max_bytes, partitions * len(self.topics)
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._gate = CommitGate()  # the current consumer's
        self._last_heard = time.monotonic()
        self._committed: dict[TopicPartition, int] = {}  # as far as this member knows
        self._handed: dict[TopicPartition, int] = {}  # next offset to hand out, once known
        self._ends: dict[TopicPartition, int] = {}  # from the last probe

    def _new_consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            **client_options(self.bootstrap),
            group_id=self._group,
            client_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="none",  # a missing position is handled here, never silently
            max_partition_fetch_bytes=self._partition_fetch_bytes,
            fetch_max_bytes=self._fetch_max_bytes,
            request_timeout_ms=int(max(self._deadline_s, 5.0) * 1000) + 5000,
            heartbeat_interval_ms=HEARTBEAT_MS,
        )
        self._gate = CommitGate()
        consumer.subscribe(list(self.topics), listener=self._gate)
        return consumer

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
        except UNREADABLE:  # before KafkaError: CorruptRecordException is one
            return await self._past_unreadable(consumer)
        except KafkaError as error:
            raise TransportError(f"fetching {self.topic}: {error!r}") from error
        if fetched:
            self._last_heard = time.monotonic()
            for tp, records in fetched.items():
                self._committed.setdefault(tp, records[0].offset)  # where the group stood
                self._handed[tp] = records[-1].offset + 1
            return {Partition(tp.topic, tp.partition): records for tp, records in fetched.items()}
        if time.monotonic() - self._last_heard >= self._probe_s:
            await self._probe(consumer)
        return {}

    async def _past_unreadable(self, consumer: AIOKafkaConsumer) -> Batch:
        """Read up to and past a record aiokafka cannot parse; return what was read.

        aiokafka drops the records it parsed in the failed call (their positions already moved),
        so every partition first goes back to the first record not handed out. Then partitions
        are read one record at a time until one fails. A header key that is not UTF-8: its
        record batch is fetched and parsed by ``node.kafka.lenient``, its good records handed
        out, each bad one as an ``Unreadable`` stand-in, and the partition resumes after the
        batch. Otherwise (a corrupt batch, or the lenient read failed) the failing offset becomes
        an ``Unreadable`` and so does each later record of the same batch (aiokafka cannot parse
        past the bad one), until a record reads again. If none fails (the error did not come
        back), what was read is returned as it is. Raises TransportError when the cluster does
        not answer.
        """
        assigned = sorted(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
        reading = "reading past an unreadable record of"
        ends = await self._answered(consumer.end_offsets(assigned), self._deadline_s, reading)
        for tp in assigned:
            committed = await self._answered(consumer.committed(tp), self._deadline_s, reading)
            known = [o for o in (self._handed.get(tp), committed) if o is not None]
            if known:
                consumer.seek(tp, max(known))
            else:
                await self._answered(consumer.seek_to_beginning(tp), self._deadline_s, reading)
        batch: dict[Partition, list[Record]] = {}
        room, give_up = self._max_batch, time.monotonic() + self._deadline_s
        for tp in assigned:
            read: list[Record] = []
            first_bad: int | None = None  # where the current run of unreadable records began
            while room > len(read) and time.monotonic() < give_up:
                at = await self._answered(consumer.position(tp), self._deadline_s, reading)
                if at >= ends[tp]:
                    break
                try:
                    got = await consumer.getmany(
                        tp, timeout_ms=self._fetch_timeout_ms, max_records=1
                    )
                except UNREADABLE as error:
                    if first_bad is None and _bad_header_key(error):  # read it without aiokafka
                        with contextlib.suppress(LenientReadError):
                            read += await self._leniently(consumer, tp, at)
                            continue
                    first_bad = at if first_bad is None else first_bad
                    problem = _problem(error, tp.topic, tp.partition, at, first_bad)
                    read.append(Unreadable(tp.topic, tp.partition, at, problem))
                    consumer.seek(tp, at + 1)
                    continue
                except KafkaError as error:
                    raise TransportError(f"{reading} {self.topic}: {error!r}") from error
                records = got.get(tp, [])
                if records:
                    first_bad = None  # read again: past the batch that held the bad record
                read.extend(records)
            room -= len(read)
            if read:
                batch[Partition(tp.topic, tp.partition)] = read
                self._committed.setdefault(tp, read[0].offset)
                self._handed[tp] = read[-1].offset + 1
            if any(r.__class__ is Unreadable for r in read):
                break
        self._last_heard = time.monotonic()
        return batch

    async def _leniently(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, at: int
    ) -> list[Record]:
        """Read the batch holding ``at`` with ``lenient``; stand-ins for its bad records.

        Seeks ``tp`` past the batch. Raises LenientReadError when it cannot be read so.
        """
        fetching = read_batch(
            consumer, tp, at, self._fetch_max_bytes, self._fetch_timeout_ms / 1000
        )
        got = await self._answered(fetching, self._deadline_s, "reading a raw batch of")
        found: list[Record] = [*got.records]
        found += [
            Unreadable(tp.topic, tp.partition, offset, f"{why} at offset {offset} of {tp.topic} "
                       f"partition {tp.partition}: the record cannot be read")
            for offset, why in got.bad
        ]  # fmt: skip
        found.sort(key=lambda record: record.offset)
        consumer.seek(tp, got.next_offset)
        return found

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
        for tp in partitions:
            self._handed.pop(tp, None)
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
            self._handed[tp] = resume

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

        Partitions a rebalance took from this member meanwhile are left to their new owner,
        which reads them again from their last committed offset; the others are committed.
        No commit goes while the group rebalances (``CommitGate``): it waits for the new
        assignment, up to the deadline. Raises TransportError when the commit fails or takes
        longer than the deadline.
        """
        consumer = self._running
        commit = {TopicPartition(tp.topic, tp.partition): o for tp, o in offsets.items()}
        done = await self._gate.through(
            lambda: self._commit_mine(consumer, commit), self._deadline_s
        )  # None: the group was still rebalancing after the deadline
        return bool(done)

    async def _commit_mine(
        self, consumer: AIOKafkaConsumer, commit: dict[TopicPartition, int]
    ) -> bool:
        """Commit the partitions of ``commit`` still assigned; False if not all of them."""
        assigned = consumer.assignment()
        mine = {tp: offset for tp, offset in commit.items() if tp in assigned}
        if not mine:
            return False
        try:
            await self._answered(consumer.commit(mine), self._deadline_s, "committing")
        except TransportError as error:
            if isinstance(error.__cause__, CommitFailedError | IllegalStateError):
                return False  # the group rebalanced, or took a partition, while committing
            raise
        self._committed.update(mine)
        return len(mine) == len(commit)

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
                self._handed[partition] = offset

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
        self._handed.clear()
        self._ends.clear()
        if consumer is not None:
            await _close(consumer)


async def _close(consumer: AIOKafkaConsumer) -> None:
    await close_quietly(consumer.stop(), CLOSE_TIMEOUT_S)
