"""An in-memory transport for tests: a cluster, a source and a sink under the delivery contract.

``MemoryCluster`` holds topics (partitions of stored records with offsets), the committed offset
of each group and each topic's ``max.message.bytes``. ``MemorySource`` reads one topic as a group;
``MemorySink`` writes under the contract of ``node.transport`` (per-partition order through
``PartitionOrder``, RecordRejected for a record too large for its topic, reset abandons).

Faults are deterministic and set on the cluster: ``fail_next`` (the next partition writes raise
DeliveryError, optionally after landing, as a lost ack does), ``stall``/``release`` (writes block;
a blocked write abandoned by ``reset`` never lands), ``reject_size`` (lower a topic's limit) and
``lose_connection``/``restore`` (the source raises TransportError, writes block). Every change
wakes ``wait_until``, so tests await conditions instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

from node.errors import DeliveryError, RecordRejected, TransportError
from node.transport import Batch, Header, Message, Partition, PartitionOrder, Substitute

DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
RECORD_OVERHEAD = 70
"""Bytes a record costs beyond its key, value and headers (Kafka's batch and record framing)."""
Row = tuple[bytes | None, bytes | None, list[Header]]


class Stored(NamedTuple):
    """A record as the cluster keeps it (and as MemorySource returns it)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    timestamp: int
    """When the cluster appended it, in ms since the epoch (Kafka's CreateTime)."""


def record_size(key: bytes | None, value: bytes | None, headers: Sequence[Header]) -> int:
    """Return what one record weighs against ``max.message.bytes``."""
    named = sum(len(name) + len(data) for name, data in headers)
    return len(key or b"") + len(value or b"") + named + RECORD_OVERHEAD


def partition_for(key: bytes | None, partitions: int) -> int:
    """Pick a partition by a stable hash of the key (partition 0 without a key)."""
    return zlib.crc32(key) % partitions if key is not None else 0


@dataclass(slots=True)
class _Topic:
    partitions: list[list[Stored]]
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


@dataclass(slots=True)
class MemoryCluster:
    """Topics, committed offsets, fault switches and write counters of one in-memory cluster."""

    default_partitions: int = 3
    topics: dict[str, _Topic] = field(default_factory=dict)
    committed: dict[tuple[str, Partition], int] = field(default_factory=dict)
    writes: int = 0  # partition writes attempted: each chunk of a partition's share of a call
    failed_writes: int = 0
    blocked_writes: int = 0  # waiting right now for release() or restore()
    abandoned_writes: int = 0  # cancelled while blocked
    connected: bool = True
    stalled: bool = False
    watchers: list[Callable[[], None]] = field(default_factory=list)  # also called on changes
    _failures: deque[tuple[str, bool]] = field(default_factory=deque)
    _open: asyncio.Event = field(default_factory=asyncio.Event)  # connected and not stalled
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._open.set()

    def create_topic(self, name: str, partitions: int = 0, max_message_bytes: int = 0) -> None:
        """Create ``name`` (default partition count if 0); a limit > 0 replaces its limit."""
        if name not in self.topics:
            self.topics[name] = _Topic([[] for _ in range(partitions or self.default_partitions)])
        if max_message_bytes:
            self.topics[name].max_message_bytes = max_message_bytes

    def topic(self, name: str) -> _Topic:
        """Return ``name``, creating it with the defaults if missing (as auto-create does)."""
        self.create_topic(name)
        return self.topics[name]

    def reject_size(self, topic: str, limit: int) -> None:
        """Set ``topic``'s ``max.message.bytes`` to ``limit``."""
        self.create_topic(topic, max_message_bytes=limit)

    def produce(self, topic: str, key: bytes | None, value: bytes | None,
                headers: Sequence[Header]) -> Stored:  # fmt: skip
        """Append one record as a department would (no faults); the key picks the partition."""
        partition = partition_for(key, len(self.topic(topic).partitions))
        return self._append(topic, partition, [(key, value, list(headers))])[0]

    def records(self, topic: str, partition: int | None = None) -> list[Stored]:
        """Return what ``topic`` holds (one partition, or all in partition then offset order)."""
        every = self.topic(topic).partitions
        return list(every[partition]) if partition is not None else [r for p in every for r in p]

    def count(self, topic: str) -> int:
        """Return how many records ``topic`` holds."""
        return sum(len(p) for p in self.topic(topic).partitions)

    def committed_total(self, group: str, topic: str) -> int:
        """Sum of ``group``'s committed offsets over ``topic``'s partitions."""
        return sum(o for (g, tp), o in self.committed.items() if g == group and tp.topic == topic)

    def fail_next(self, n: int, error: str = "injected failure", *, landed: bool = False) -> None:
        """Make the next ``n`` partition writes raise DeliveryError (after landing if ``landed``)."""
        self._failures.extend([(error, landed)] * n)

    def stall(self) -> None:
        """Block every write from now until ``release``."""
        self._switch(self.connected, stalled=True)

    def release(self) -> None:
        """Let blocked and later writes through."""
        self._switch(self.connected, stalled=False)

    def lose_connection(self) -> None:
        """Fail the source's start, fetch and commit with TransportError; block writes."""
        self._switch(False, self.stalled)

    def restore(self) -> None:
        """Undo ``lose_connection``."""
        self._switch(True, self.stalled)

    def _switch(self, connected: bool, stalled: bool) -> None:
        self.connected, self.stalled = connected, stalled
        if connected and not stalled:
            self._open.set()
        else:
            self._open.clear()
        self.notify()

    def check_connected(self, doing: str) -> None:
        """Raise TransportError if the connection is lost."""
        if not self.connected:
            raise TransportError(f"{doing}: the cluster is unreachable")

    def notify(self) -> None:
        """Wake every waiter: something changed."""
        self._changed.set()
        self._changed = asyncio.Event()
        for watcher in self.watchers:
            watcher()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait until ``predicate()`` holds, checked at every change; TimeoutError past the time."""
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"condition not met within {timeout_s:g} s") from None

    async def write(self, topic: str, partition: int, records: list[Row]) -> None:
        """Write one chunk to one partition, all or nothing, honouring the fault switches."""
        self.writes += 1
        if not self._open.is_set():
            self.blocked_writes += 1
            self.notify()
            try:
                while not self._open.is_set():  # it may close again before this write wakes
                    await self._open.wait()
            except asyncio.CancelledError:
                self.abandoned_writes += 1
                raise
            finally:
                self.blocked_writes -= 1
        if self._failures:
            error, landed = self._failures.popleft()
            self.failed_writes += 1
            if landed:
                self._append(topic, partition, records)
            self.notify()
            raise DeliveryError(f"{topic}[{partition}]: {error}")
        self._append(topic, partition, records)

    def _append(self, topic: str, partition: int, records: list[Row]) -> list[Stored]:
        log = self.topic(topic).partitions[partition]
        now_ms = int(time.time() * 1000)
        stored = [
            Stored(partition, len(log) + i, *record, now_ms) for i, record in enumerate(records)
        ]
        log.extend(stored)
        self.notify()
        return stored


class MemorySource:
    """Reads one topic of a MemoryCluster as consumer ``group`` (a RecordSource)."""

    fetch_timeout_s = 0.01

    def __init__(self, cluster: MemoryCluster, topic: str, group: str, max_batch: int) -> None:
        self.topic = topic
        self.group = group
        self.positions: dict[Partition, int] = {}  # kept after stop, for the tests
        self.fetched = 0  # records returned by fetch, counted again after a rewind
        self.starts = 0
        self.stops = 0
        self._cluster = cluster
        self._max_batch = max_batch
        self._running = False
        self._rotation = 0

    async def start(self) -> None:
        """Join: start each partition at the group's committed offset (or 0)."""
        self._cluster.check_connected(f"consumer of {self.topic}")
        count = len(self._cluster.topic(self.topic).partitions)
        every = [Partition(self.topic, p) for p in range(count)]
        self.positions = {tp: self._cluster.committed.get((self.group, tp), 0) for tp in every}
        self._running = True
        self.starts += 1

    async def fetch(self) -> Batch:
        """Return up to ``max_batch`` records, waiting up to the fetch timeout for some."""
        if not self._running:
            raise TransportError(f"consumer of {self.topic} is not started")
        self._cluster.check_connected(f"fetching {self.topic}")
        if not self._waiting():
            with contextlib.suppress(TimeoutError):
                await self._cluster.wait_until(
                    lambda: self._waiting() or not self._cluster.connected, self.fetch_timeout_s
                )
            self._cluster.check_connected(f"fetching {self.topic}")
        batch = self._take()
        self.fetched += sum(len(records) for records in batch.values())
        self._cluster.notify()
        return batch

    def _waiting(self) -> bool:
        partitions = self._cluster.topic(self.topic).partitions
        return any(len(partitions[tp.partition]) > o for tp, o in self.positions.items())

    def _take(self) -> dict[Partition, list[Stored]]:
        """Take records from each partition in turn, starting from a rotating one."""
        batch: dict[Partition, list[Stored]] = {}
        partitions = self._cluster.topic(self.topic).partitions
        room = self._max_batch
        self._rotation += 1
        for tp in sorted(
            self.positions, key=lambda tp: (tp.partition - self._rotation) % len(partitions)
        ):
            position = self.positions[tp]
            records = partitions[tp.partition][position : position + room]
            if records:
                batch[tp] = records
                self.positions[tp] = position + len(records)
                room -= len(records)
        return batch

    def partition_count(self) -> int | None:
        """Partitions of the topic; None before start."""
        return len(self.positions) if self._running else None

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        """Store the group's next offsets."""
        self._cluster.check_connected(f"committing {self.topic}")
        for tp, offset in offsets.items():
            self._cluster.committed[self.group, tp] = offset
        self._cluster.notify()
        return True

    def rewind(self, offsets: Mapping[Partition, int]) -> None:
        """Fetch again from ``offsets``."""
        self.positions.update(offsets)

    def lag_by_partition(self) -> dict[int, int]:
        """Records per partition the group has not committed yet."""
        if not self._running:
            return {}
        done = self._cluster.committed
        every = enumerate(self._cluster.topic(self.topic).partitions)
        return {i: len(p) - done.get((self.group, Partition(self.topic, i)), 0) for i, p in every}

    async def lag(self, timeout_s: float) -> int | None:
        """Records of the topic the group has not committed yet."""
        self._cluster.check_connected(f"offsets of {self.topic}")
        every = enumerate(self._cluster.topic(self.topic).partitions)
        done = self._cluster.committed
        return sum(len(p) - done.get((self.group, Partition(self.topic, i)), 0) for i, p in every)

    async def stop(self) -> None:
        """Leave the group."""
        self._running = False
        self.stops += 1


class MemorySink:
    """Writes to a MemoryCluster under the delivery contract (a RecordSink)."""

    def __init__(self, cluster: MemoryCluster, *, batch_bytes: int = 1_000_000) -> None:
        self.calls = 0
        self.resets = 0
        self._cluster = cluster
        self._batch_bytes = batch_bytes
        self._order = PartitionOrder()

    async def deliver(
        self, messages: Sequence[Message], substitute: Substitute | None = None
    ) -> list[RecordRejected | None]:
        """Write ``messages``; per message None or RecordRejected; DeliveryError to retry."""
        self.calls += 1
        results: list[RecordRejected | None] = [None] * len(messages)
        groups: dict[tuple[str, int], list[int]] = {}
        for index, message in enumerate(messages):
            count, origin = len(self._cluster.topic(message.topic).partitions), message.origin
            if origin is not None and origin[1] == count:
                partition = origin[0]  # keep the source partition, as MirrorMaker 2 does
            else:
                partition = partition_for(message.key, count)
            groups.setdefault((message.topic, partition), []).append(index)
        writes = [
            self._order.write(
                where, partial(self._write, where, messages, indexes, results, substitute)
            )
            for where, indexes in groups.items()
        ]
        for outcome in await asyncio.gather(*writes, return_exceptions=True):
            if isinstance(outcome, asyncio.CancelledError):
                raise DeliveryError("delivery was abandoned")
            if isinstance(outcome, BaseException):
                raise outcome
        return results

    async def _write(self, where: tuple[str, int], messages: Sequence[Message],
                     indexes: list[int], results: list[RecordRejected | None],
                     substitute: Substitute | None) -> None:  # fmt: skip
        """Write one partition's share chunk after chunk; reject records over the limit."""
        topic, partition = where
        limit = self._cluster.topic(topic).max_message_bytes
        chunk: list[Row] = []
        size = 0
        for index in indexes:
            _, key, value, headers, _ = messages[index]
            weight = record_size(key, value, headers)
            if weight > limit:
                rejected = RecordRejected(
                    f"{topic}: a record of {weight} bytes exceeds its max.message.bytes of {limit}"
                )
                if substitute is None:
                    results[index] = rejected
                    continue
                _, key, value, headers, _ = substitute(messages[index], rejected)
                weight = record_size(key, value, headers)
                if weight > limit:
                    results[index] = RecordRejected(f"{rejected}; so is its stand-in")
                    continue
            if chunk and size + weight > min(self._batch_bytes, limit):
                await self._cluster.write(topic, partition, chunk)
                chunk, size = [], 0
            chunk.append((key, value, list(headers)))
            size += weight
        if chunk:
            await self._cluster.write(topic, partition, chunk)

    async def reset(self) -> None:
        """Abandon every unacked write; none of them lands later."""
        self.resets += 1
        await self._order.abandon()

    async def stop(self) -> None:
        """Close (nothing is buffered)."""
