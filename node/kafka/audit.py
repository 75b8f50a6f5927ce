"""The audit trail's shell: the pending queue, the loop that chains and writes, reading back.

The links hand each batch's facts (``audit_facts``, one per copy and per refusal) to the
``AuditQueue``, a bounded queue (when, and what a crash costs: below). The ``AuditWriter``
(the loop ``audit``) takes them in order, chains them after the last entry of its chain and
writes them to the node's audit topic ``PREFIX.audit.NODE_ID`` (one partition) on the local
cluster, up to ``entries_per_record`` entries per Kafka record (newline-separated stored lines).
Packed, because a Kafka record costs the producer far more than an entry costs to chain:
``benchmarks/bench_audit.py`` measured 14-32 µs of CPU an entry at one entry per record
against about 6.5 µs at 200 (chaining included).

When entries cannot be written they wait in the queue. Fail-open (the default): a link hands
over a batch's facts once it has committed the batch (``add``), so a crash between the commit
and the write loses those entries unwritten and unannounced (at most the queue's content, up to
``flush_s`` of traffic when the writer is healthy); past ``max_pending`` the oldest are dropped,
and the next write starts with a gap entry saying how many outcomes of which period are missing,
so the trail stays truthful; ``on_dropped`` counts them. Fail-closed: a link hands over a
batch's facts when the batch is delivered, in batch order (``hand_over``), and commits the
batch only once the future it got back says every one of them is written (acked); nothing is
dropped, the queue's gate closes while the writer is down or the queue is full, and the links
fetch nothing new until it opens again (``wait_open``). A crash before the commit then at worst
writes some entries twice (the batch is delivered and audited again), never loses one.

On each (re)start the writer reads its chain's last entry (``read_tip``) and continues from it;
entries of a failed write that did land are recognised there by their hash and not written
twice. A topic found behind what this process already wrote (truncated, recreated) does not
rewind the numbering: the verifier then names what is missing.

``read_chain`` reads a whole chain back for ``verify`` (the ``audit verify`` command, the HTTP
routes). Nothing here decides what an outcome was: the facts come from the link's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from node.core.audit import (
    Entry,
    EntryError,
    Fact,
    Gap,
    Located,
    Outcome,
    Tip,
    chain,
    parse_entry,
    payload_digest,
)
from node.core.envelope import RECORD_ID, REFUSAL_MESSAGE, RESOURCE, SOURCE_DEPT, SOURCE_REGION
from node.core.outcome import Direction, Reason
from node.errors import TransportError
from node.kafka.closing import close_quietly
from node.kafka.connection import Connection, state_reader, topic_partitions
from node.kafka.messages import NO_FACTS, REFUSED_COPY, Out
from node.ops.events import AuditDropped, AuditHolding, AuditResumed, emit
from node.supervisor import Health
from node.transport import Message, RecordSink

RECORD_BYTES = 512 * 1024
"""Most bytes of stored lines packed into one Kafka record."""
DETAIL_CHARS = 500
"""A refusal's message is kept to this many characters in its entry."""
ROUND_RECORDS = 100
"""Kafka records' worth of entries chained and written per round of the writer: with fewer, a
writer that waits for each round's acks behind busy links fell behind 20,000 records/s."""


def audit_facts(pending: Sequence[Out], time_ms: int) -> list[Fact]:
    """Return one fact per copy and per refusal of a delivered batch, in order.

    Feedback passing on (a copy without facts) is not a record exchanged and has none. The
    payload digest is of the bytes that went to the destination (a projection's own). What
    copies share is worked out once: a value's digest (a record's copies follow each other),
    and the decoded names, destination and outcome of each kind of copy.
    """
    facts: list[Fact] = []
    append = facts.append
    new = tuple.__new__  # a Fact from its fields in order, without the keyword handling
    shared: dict[tuple[object, ...], tuple[object, ...]] = {}  # a kind of copy -> its fields
    names: dict[tuple[bytes | None, ...], tuple[str, ...]] = {}  # resource, region, dept decoded
    value: object = _NOTHING
    digest = ""
    for out in pending:
        kind = out.kind
        copy = kind.__class__ is Direction
        facts_of = out.facts
        if copy and facts_of is NO_FACTS:
            continue
        message = out.message
        if message.value is not value:
            value = message.value
            digest = payload_digest(message.value)
        if not copy:
            append(_refusal_fact(out, time_ms, digest, names))
            continue
        where = (kind, out.destination, facts_of.resource, facts_of.source_region,
                 facts_of.source_dept)  # fmt: skip
        fields = shared.get(where)
        if fields is None:
            said = _decoded(where[2:], names)
            outcome = Outcome.DELIVERED if kind is Direction.LOCAL else Outcome.FORWARDED
            destination = f"{kind.value}:{out.destination}"
            fields = shared[where] = (*said, destination, time_ms, outcome, "", "")
        raw_id = facts_of.record_id
        append(new(Fact, ((raw_id or b"").decode(errors="replace"), *fields, digest)))
    return facts


_NOTHING = object()


def _decoded(
    raw: tuple[bytes | None, ...], names: dict[tuple[bytes | None, ...], tuple[str, ...]]
) -> tuple[str, ...]:
    """Return resource, region and department as text (kept in ``names``)."""
    said = names.get(raw)
    if said is None:
        said = names[raw] = tuple((b or b"").decode(errors="replace") for b in raw)
    return said


def _refusal_fact(
    out: Out, time_ms: int, digest: str, names: dict[tuple[bytes | None, ...], tuple[str, ...]]
) -> Fact:
    """Return a refusal's fact: its own headers say what was refused, where to and why."""
    get = dict(out.message.headers).get
    resource, region, dept = _decoded((get(RESOURCE), get(SOURCE_REGION), get(SOURCE_DEPT)), names)
    record_id = (get(RECORD_ID) or b"").decode(errors="replace")
    destination = (get(REFUSED_COPY) or b"").decode(errors="replace")
    detail = (get(REFUSAL_MESSAGE) or b"").decode(errors="replace")[:DETAIL_CHARS]
    assert isinstance(out.kind, Reason)
    return Fact(record_id, resource, region, dept, destination, time_ms, Outcome.REFUSED,
                out.kind.value, detail, digest)  # fmt: skip


class AuditQueue:
    """Facts waiting to be written, bounded; in fail-closed mode also the links' gate."""

    def __init__(
        self,
        max_pending: int,
        *,
        fail_closed: bool,
        log: structlog.typing.FilteringBoundLogger,
        on_dropped: Callable[[int], None] = lambda count: None,
        on_holding: Callable[[bool], None] = lambda holding: None,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self.fail_closed = fail_closed
        self._log = log
        self._on_dropped = on_dropped
        self._on_holding = on_holding
        self._facts: deque[Fact] = deque()
        self._dropped = 0
        self._dropped_span = (0, 0)
        self._writer_up = False
        self._why_down = "the audit loop has not started"
        self._starting = True  # no word from the writer yet: holding is start-up, not a fault
        self._open = asyncio.Event()
        self._holding = False
        self._said_holding = False  # an audit_holding event stands unanswered by audit_resumed
        self._added = 0  # facts ever added
        self._settled = 0  # facts ever written or dropped: the first ``_settled`` are done
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()  # (facts up to, future)
        self.filled = asyncio.Event()
        """Set when facts were added (the writer waits on it)."""
        self._update()

    def __len__(self) -> int:
        return len(self._facts)

    def add(self, facts: Iterable[Fact]) -> None:
        """Queue facts (a committed batch's); fail-open drops the oldest past the bound."""
        queue = self._facts
        before = len(queue)
        queue.extend(facts)
        self._added += len(queue) - before
        excess = len(queue) - self.max_pending
        if excess > 0 and not self.fail_closed:
            dropped = [queue.popleft() for _ in range(excess)]
            self._settle(excess)
            first, _ = self._dropped_span
            if not self._dropped:
                first = dropped[0].time_ms
            self._dropped += excess
            self._dropped_span = (first, dropped[-1].time_ms)
            self._on_dropped(excess)
            if self._dropped == excess:  # the first drop since the last gap entry: say it once
                emit(self._log, AuditDropped(excess, self._why_down))
        self.filled.set()
        self._update()

    def hand_over(self, facts: Sequence[Fact]) -> asyncio.Future[None]:
        """Queue a delivered batch's facts; the future is done once every one is written.

        Fail-closed links call this in batch order and commit the batch only when it is done.
        """
        self.add(facts)
        written = asyncio.get_running_loop().create_future()
        if not facts or self._settled >= self._added:
            written.set_result(None)
        else:
            self._waiting.append((self._added, written))
        return written

    def written(self, facts: int) -> None:
        """Note that the next ``facts`` facts taken were written (acked): wake who waits."""
        self._settle(facts)

    def awaited(self) -> bool:
        """Tell whether a link waits for facts still queued (then the writer does not linger)."""
        return bool(self._waiting) and bool(self._facts)

    def why_closed(self) -> str:
        """Why the gate is closed (``""`` when open)."""
        if self._open.is_set():
            return ""
        return "audit queue full" if self._writer_up else self._why_down

    def _settle(self, facts: int) -> None:
        self._settled += facts
        waiting = self._waiting
        while waiting and waiting[0][0] <= self._settled:
            future = waiting.popleft()[1]
            if not future.done():  # its link may have given up on it (cancelled)
                future.set_result(None)

    def take(self, most: int) -> list[Fact | Gap]:
        """Take up to ``most`` facts in order, after a gap entry for those dropped before them."""
        taken: list[Fact | Gap] = []
        if self._dropped:
            taken.append(Gap(self._dropped, *self._dropped_span))
            self._dropped = 0
        queue = self._facts
        taken += [queue.popleft() for _ in range(min(most, len(queue)))]
        if not queue:
            self.filled.clear()
        self._update()
        return taken

    def writer_up(self) -> None:
        """Note that the writer can write (it read its chain's tip)."""
        self._writer_up = True
        self._starting = False
        self._update()

    def writer_down(self, reason: str) -> None:
        """Note that the writer cannot write, for ``reason``."""
        self._writer_up = False
        self._why_down = reason
        self._starting = False
        self._update()

    def is_open(self) -> bool:
        """May the links fetch new batches? Always, unless fail-closed and entries are stuck."""
        return self._open.is_set()

    async def wait_open(self, stopping: asyncio.Event) -> None:
        """Return once the gate is open or ``stopping`` is set."""
        if self._open.is_set() or stopping.is_set():
            return
        opened = asyncio.ensure_future(self._open.wait())
        stopped = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait([opened, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
            stopped.cancel()

    def _update(self) -> None:
        full = len(self._facts) >= self.max_pending
        holding = self.fail_closed and (not self._writer_up or full)
        if holding:
            self._open.clear()
        else:
            self._open.set()
        if holding != self._holding:
            self._holding = holding
            self._on_holding(holding)
        if holding and not self._said_holding and not self._starting:  # a fault, not start-up
            self._said_holding = True
            emit(self._log, AuditHolding(len(self._facts), self.why_closed()))
        elif not holding and self._said_holding:
            self._said_holding = False
            emit(self._log, AuditResumed(len(self._facts)))


TipReader = Callable[[], Awaitable[Tip | None]]
ReadT = TypeVar("ReadT")


class AuditWriter:
    """The loop ``audit``: chains queued facts and writes them to the node's audit topic."""

    name = "audit"

    def __init__(
        self,
        queue: AuditQueue,
        sink: RecordSink,
        topic: str,
        read_tip: TipReader,
        health: Health,
        *,
        node_id: str,
        entries_per_record: int,
        flush_s: float,
        deadline_s: float,
        on_written: Callable[[int], None] = lambda count: None,
        on_rejected: Callable[[str], None] = lambda topic: None,
    ) -> None:
        self._queue = queue
        self._sink = sink
        self._topic = topic
        self._read_tip = read_tip
        self._health = health
        self._key = node_id.encode()
        self._per_record = entries_per_record
        self._flush_s = flush_s
        self._deadline_s = deadline_s
        self._on_written = on_written
        self._on_rejected = on_rejected
        self._stopping = asyncio.Event()
        self._tip: Tip | None = None  # the last entry known written, None before any
        self._known = False  # whether _tip was read from the topic or written by this process
        self._in_flight: list[Entry] = []  # chained, being written (kept until acked)

    @property
    def tip(self) -> Tip | None:
        """The last entry this process knows is written (None: none yet)."""
        return self._tip

    def request_stop(self) -> None:
        """Write what is queued once more and return from ``run``."""
        self._stopping.set()

    async def run(self) -> None:
        """Continue the chain from its last entry; write queued facts until asked to stop.

        The loop is up (and a fail-closed gate opens) once the tip is read and what waited is
        written. Raises TransportError when the tip cannot be read or a write fails or is not
        acked within ``deadline_s`` (the facts stay queued).
        """
        try:
            self._continue_from(await self._read_tip())
            while True:
                stopping = self._stopping.is_set()
                await self.flush()
                self._queue.writer_up()  # only once what waited is written: no early reopening
                self._health.up(self.name)
                if stopping:
                    return
                await self._wait_for_facts()
        except BaseException as error:
            self._queue.writer_down(str(error) or type(error).__name__)
            raise

    async def _wait_for_facts(self) -> None:
        """Wait ``flush_s``, less when a record's worth is queued or a stop is asked."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self._flush_s
        queue = self._queue
        while not self._stopping.is_set() and len(queue) < self._per_record and not queue.awaited():
            left = until - loop.time()
            if left <= 0:
                return
            filled = asyncio.ensure_future(self._queue.filled.wait())
            stopped = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait([filled, stopped], timeout=left, return_when="FIRST_COMPLETED")
            finally:
                filled.cancel()
                stopped.cancel()
            self._queue.filled.clear()

    async def flush(self) -> int:
        """Write every queued fact (and what a failed write left); return how many entries.

        Raises TransportError (after resetting the sink) when a write fails, is not acked in
        time or is rejected; the entries are kept to be written by the next attempt.
        """
        written = 0
        while True:
            if not self._in_flight:
                bodies = self._queue.take(self._per_record * ROUND_RECORDS)
                if not bodies:
                    return written
                self._in_flight = chain(bodies, self._tip)
            await self._write(self._in_flight)
            written += len(self._in_flight)
            self._landed(len(self._in_flight))

    def _landed(self, count: int) -> None:
        """Note the first ``count`` entries in flight written: move the tip, tell the queue."""
        landed, self._in_flight = self._in_flight[:count], self._in_flight[count:]
        last = landed[-1]
        self._tip, self._known = Tip(last.seq, last.hash), True
        self._on_written(count)
        self._queue.written(sum(1 for entry in landed if entry.body.__class__ is Fact))

    async def _write(self, entries: Sequence[Entry]) -> None:
        messages = list(self._records(entries))
        try:
            results = await asyncio.wait_for(self._sink.deliver(messages), self._deadline_s)
        except TimeoutError as error:
            await self._sink.reset()
            raise TransportError(
                f"writing audit entries to {self._topic}: not acked within {self._deadline_s:g} s"
            ) from error
        except TransportError:
            await self._sink.reset()
            raise
        rejected = [result for result in results if result is not None]
        if rejected:
            self._on_rejected(self._topic)  # its limit may have been raised meanwhile
            await self._sink.reset()
            raise TransportError(f"{self._topic} rejected audit entries: {rejected[0]}")

    def _records(self, entries: Sequence[Entry]) -> Iterable[Message]:
        """Pack stored lines into records of up to ``entries_per_record`` and RECORD_BYTES."""
        lines: list[bytes] = []
        size = 0
        for entry in entries:
            line = entry.encode()
            if lines and (len(lines) >= self._per_record or size + len(line) > RECORD_BYTES):
                yield Message(self._topic, self._key, b"\n".join(lines), [])
                lines, size = [], 0
            lines.append(line)
            size += len(line) + 1
        if lines:
            yield Message(self._topic, self._key, b"\n".join(lines), [])

    def _continue_from(self, found: Tip | None) -> None:
        """Take the topic's last entry as the tip, keeping what this process knows it wrote.

        Entries of a failed write found there landed: they are not written again. The rest
        of that write is chained again after the tip if it no longer follows it.
        """
        flight = self._in_flight
        if found is not None and flight and flight[0].seq <= found.seq <= flight[-1].seq:
            landed = flight[found.seq - flight[0].seq]
            if landed.hash == found.hash:
                self._landed(found.seq - flight[0].seq + 1)
                flight = self._in_flight
        ahead = found is not None and (self._tip is None or found.seq > self._tip.seq)
        if not self._known or ahead:
            self._tip = found
        self._known = True
        if flight and (self._tip is None or flight[0].prev != self._tip.hash):
            flight = chain([entry.body for entry in flight], self._tip)
        self._in_flight = flight


async def read_tip(bootstrap: Connection | str, topic: str, *, deadline_s: float) -> Tip | None:
    """Return the last entry of the chain in ``topic`` (None when it has none).

    Raises TransportError when the cluster or the topic cannot be read in time, or when the
    last entry is unreadable (the chain cannot be continued truthfully).
    """

    async def last(consumer: AIOKafkaConsumer, partition: TopicPartition) -> Tip | None:
        start = (await consumer.beginning_offsets([partition]))[partition]
        end = (await consumer.end_offsets([partition]))[partition]
        if end <= start:
            return None
        consumer.seek(partition, end - 1)
        while True:
            batch = await consumer.getmany(partition, timeout_ms=200)
            for record in batch.get(partition, []):
                if record.offset == end - 1:
                    line = (record.value or b"").rsplit(b"\n", 1)[-1]
                    try:
                        entry = parse_entry(line)
                    except EntryError as error:
                        raise TransportError(
                            f"the last audit entry in {topic} (offset {record.offset}) is "
                            f"unreadable, the chain cannot continue: {error}"
                        ) from error
                    return Tip(entry.seq, entry.hash)

    return await _reading(bootstrap, topic, deadline_s, last)


async def read_chain(
    bootstrap: Connection | str, topic: str, *, deadline_s: float
) -> list[Located]:
    """Read every stored line of the chain in ``topic``, in order, up to its end on starting.

    Raises TransportError when the cluster or the topic cannot be read to its end in time.
    """

    async def lines(consumer: AIOKafkaConsumer, partition: TopicPartition) -> list[Located]:
        end = (await consumer.end_offsets([partition]))[partition]
        await consumer.seek_to_beginning(partition)
        found: list[Located] = []
        while await consumer.position(partition) < end:
            batch = await consumer.getmany(partition, timeout_ms=200)
            for record in batch.get(partition, []):
                if record.offset < end:
                    found += split_record(record.offset, record.value)
        return found

    return await _reading(bootstrap, topic, deadline_s, lines)


def split_record(offset: int, value: bytes | None) -> list[Located]:
    """Return the stored lines of one audit record with where each is."""
    return [Located(offset, index, line) for index, line in enumerate((value or b"").split(b"\n"))]


async def _reading(
    bootstrap: Connection | str,
    topic: str,
    deadline_s: float,
    read: Callable[[AIOKafkaConsumer, TopicPartition], Awaitable[ReadT]],
) -> ReadT:
    """Run ``read`` on the audit topic's one partition, without a group, within ``deadline_s``."""
    consumer = state_reader(
        bootstrap,
        client_id="exchange-node-audit",
        request_timeout_ms=max(1000, int(deadline_s * 1000)),
    )
    try:
        async with asyncio.timeout(deadline_s):
            try:
                await consumer.start()
                missing = f"audit topic {topic} does not exist on {bootstrap}"
                partitions = await topic_partitions(consumer, topic, missing)  # one just made too
                if len(partitions) != 1:
                    raise TransportError(
                        f"audit topic {topic} has {len(partitions)} partitions, not 1"
                    )
                partition = partitions[0]
                consumer.assign([partition])
                return await read(consumer, partition)
            except (KafkaError, OSError) as error:
                raise TransportError(f"reading {topic} on {bootstrap}: {error!r}") from error
    except TimeoutError as error:
        raise TransportError(f"{topic} on {bootstrap}: not read within {deadline_s:g} s") from error
    finally:
        with contextlib.suppress(Exception):
            await close_quietly(consumer.stop())
