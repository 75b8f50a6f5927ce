"""The statistics topics: writing a ledger's lines, and reading them back for a report.

``StatsWriter`` is the loop ``stats`` (given the quality ledger and that name, ``quality``).
Every ``flush_s`` it writes the lines the ledger has pending to the local cluster's compacted
``PREFIX.stats`` (``PREFIX.quality``) through a ``RecordSink`` and confirms the acked ones. A
write that fails or is not acked within ``deadline_s`` confirms nothing (the lines stay
pending, to be written by the next attempt), resets the sink and raises TransportError, so the
supervisor marks the loop down and retries. ``request_stop`` makes it write once more and return.
The sink belongs to the caller, who stops it.

``read_lines`` reads a whole topic once, without a consumer group, up to the end offsets it
found when it started (``read_stats`` for the ``stats`` command; the ``quality`` command alike).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from node.core.stats import Line, StatsLine
from node.errors import StatsError, TransportError
from node.kafka.closing import close_quietly
from node.kafka.connection import Connection, state_reader
from node.ops.events import StatsLinesDropped, emit
from node.supervisor import Health
from node.transport import Message, RecordSink

LineT = TypeVar("LineT", bound=Line)


class PendingLines(Protocol[LineT]):
    """What the writer needs of a ledger (``BucketLedger`` and its kinds)."""

    @property
    def dropped_lines(self) -> int:
        """Lines dropped unwritten to keep memory bounded, since the start."""
        ...

    def changed(self) -> Sequence[LineT]:
        """Return the lines not confirmed written."""
        ...

    def confirm(self, lines: Iterable[LineT]) -> None:
        """Mark ``lines`` as written."""
        ...


class StatsWriter:
    """Writes a ledger's pending lines to its topic, periodically and once on stopping."""

    def __init__(
        self,
        ledger: PendingLines[Any],
        sink: RecordSink,
        topic: str,
        health: Health,
        *,
        flush_s: float,
        deadline_s: float,
        log: structlog.typing.FilteringBoundLogger,
        name: str = "stats",
    ) -> None:
        self.name = name
        self._ledger = ledger
        self._sink = sink
        self._topic = topic
        self._health = health
        self._flush_s = flush_s
        self._deadline_s = deadline_s
        self._log = log.bind(topic=topic)
        self._dropped_reported = 0
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        """Make ``run`` write what is pending once more and return."""
        self._stopping.set()

    async def run(self) -> None:
        """Write pending lines now, then every ``flush_s``, and once more when asked to stop.

        The loop is up once its first write succeeded. Raises TransportError when a write fails.
        """
        while True:
            stopping = self._stopping.is_set()  # seen before the flush: it is then the last one
            await self.flush()
            self._health.up(self.name)
            if stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._flush_s)

    async def flush(self) -> int:
        """Write every pending line once and confirm the acked ones; return how many were.

        Raises TransportError (after resetting the sink) when the write fails or is not acked
        within ``deadline_s``, or when the topic rejects a line.
        """
        self._report_dropped()
        lines = self._ledger.changed()
        if not lines:
            return 0
        messages = [Message(self._topic, line.key(), line.to_json(), []) for line in lines]
        try:
            results = await asyncio.wait_for(self._sink.deliver(messages), self._deadline_s)
        except TimeoutError as error:
            await self._sink.reset()
            raise TransportError(
                f"writing statistics to {self._topic}: not acked within {self._deadline_s:g} s"
            ) from error
        except TransportError:
            await self._sink.reset()
            raise
        written = [line for line, rejected in zip(lines, results, strict=True) if rejected is None]
        self._ledger.confirm(written)
        rejections = [rejected for rejected in results if rejected is not None]
        if rejections:
            raise TransportError(
                f"{self._topic} rejected {len(rejections)} statistics line(s): {rejections[0]}"
            )
        return len(written)

    def _report_dropped(self) -> None:
        dropped = self._ledger.dropped_lines
        if dropped > self._dropped_reported:
            emit(self._log, StatsLinesDropped(dropped - self._dropped_reported))
            self._dropped_reported = dropped


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A stats record that could not be used: where it is and why."""

    partition: int
    offset: int
    problem: str


@dataclass(frozen=True, slots=True)
class Reading(Generic[LineT]):
    """What ``read_lines`` found: the lines in offset order per partition, and the unusable."""

    lines: list[LineT]
    unreadable: list[Unreadable]


StatsReading = Reading[StatsLine]


async def read_stats(
    bootstrap: Connection | str, topic: str, *, deadline_s: float, poll_ms: int = 200
) -> StatsReading:
    """Read the stats ``topic`` with ``read_lines``."""
    return await read_lines(
        bootstrap, topic, StatsLine.from_json, deadline_s=deadline_s, poll_ms=poll_ms
    )


async def read_lines(
    bootstrap: Connection | str,
    topic: str,
    parse: Callable[[bytes], LineT],
    *,
    deadline_s: float,
    poll_ms: int = 200,
    client_id: str = "exchange-node-stats",
) -> Reading[LineT]:
    """Read ``topic`` from its beginning up to the end offsets found on starting.

    Every line of one key is in one partition, in offset order, so the later one wins as under
    compaction. Deletion markers are skipped; a value that ``parse`` refuses (StatsError), or
    whose key is not the line's, is returned in ``unreadable``. Everything is bounded by
    ``deadline_s``. Raises TransportError when the cluster cannot be reached, the topic does not
    exist, or it is not read to its end in time.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    consumer = state_reader(
        bootstrap,
        client_id=client_id,
        request_timeout_ms=max(1000, int(deadline_s * 1000)),
    )
    try:
        try:
            await asyncio.wait_for(consumer.start(), max(0.0, deadline - loop.time()))
        except (TimeoutError, KafkaError, OSError) as error:
            raise TransportError(
                f"cannot reach the Kafka cluster at {bootstrap} within {deadline_s:g} s: {error!r}"
            ) from error
        try:
            return await asyncio.wait_for(
                _read_to_end(consumer, bootstrap, topic, parse, poll_ms),
                max(0.0, deadline - loop.time()),
            )
        except TimeoutError as error:
            raise TransportError(
                f"{topic} on {bootstrap}: not read to its end within {deadline_s:g} s"
            ) from error
        except KafkaError as error:
            raise TransportError(f"reading {topic} on {bootstrap}: {error!r}") from error
    finally:
        await close_quietly(consumer.stop())


async def _read_to_end(
    consumer: AIOKafkaConsumer,
    bootstrap: Connection | str,
    topic: str,
    parse: Callable[[bytes], LineT],
    poll_ms: int,
) -> Reading[LineT]:
    partitions = await _partitions(consumer, bootstrap, topic)
    consumer.assign(partitions)
    ends = await consumer.end_offsets(partitions)
    await consumer.seek_to_beginning(*partitions)
    reading: Reading[LineT] = Reading([], [])
    behind = await _behind(consumer, partitions, ends)
    while behind:
        batch = await consumer.getmany(*behind, timeout_ms=poll_ms)
        for partition, records in batch.items():
            for record in records:
                if record.offset < ends[partition]:
                    _take(reading, parse, partition.partition, record.offset, record.key,
                          record.value)  # fmt: skip
        behind = await _behind(consumer, behind, ends)
    return reading


async def _partitions(
    consumer: AIOKafkaConsumer, bootstrap: Connection | str, topic: str
) -> list[TopicPartition]:
    cluster = await consumer._client.fetch_all_metadata()  # aiokafka has no public describe
    found = cluster.partitions_for_topic(topic)
    if not found:
        raise TransportError(f"topic {topic} does not exist on {bootstrap} (has the node run?)")
    return [TopicPartition(topic, partition) for partition in sorted(found)]


async def _behind(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    ends: dict[TopicPartition, int],
) -> list[TopicPartition]:
    return [tp for tp in partitions if await consumer.position(tp) < ends[tp]]


def _take(
    reading: Reading[LineT],
    parse: Callable[[bytes], LineT],
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
) -> None:
    if value is None:
        return  # a deletion marker
    try:
        line = parse(value)
    except StatsError as error:
        reading.unreadable.append(Unreadable(partition, offset, str(error)))
        return
    if key != line.key():
        reading.unreadable.append(Unreadable(partition, offset, f"key {key!r} is not the line's"))
        return
    reading.lines.append(line)
