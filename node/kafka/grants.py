"""Grants in Kafka: the store that reads them and the relays that spread them through the cascade.

Every node keeps grant events on its own cluster's compacted ``PREFIX.grants`` topic, keyed by
grant id. ``GrantStore`` reads that topic from the beginning (so grants survive restarts) and hands
each new ``GrantBook`` to the policy. It fails closed: while it cannot confirm it has read the topic
up to its end within ``max_staleness_s``, the book it hands over is empty, so a revocation takes
effect within that bound even when the topic cannot be read.


``GrantRelay`` spreads events. Only the node writes its ``PREFIX.grants``; a child's node may
write only its own hand-up topic ``PREFIX.grants.from.CHILD`` on the parent's cluster (ACLs), so
the reader knows the writer from the topic. Three relays per node, as its place in the tree needs:

- ``grants-up``: this node's ``PREFIX.grants`` to its hand-up topic on the parent's cluster, the
  events originating in this subtree;
- ``grants-from``: the children's hand-up topics into this node's ``PREFIX.grants``, accepting
  from child C only what C may say (``node.core.grants.handed_up_refusal``: origin in C's subtree,
  recorded by the entitled node, version in bound); the rest is refused (reason ``forged``);
- ``grants-down``: the parent's ``PREFIX.grants`` into this node's, the events originating
  outside this subtree (those inside are the echo of what went up), versions in bound.

An event therefore climbs only through its origin's ancestors and descends only into subtrees
without its origin: no loops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from node.core.envelope import REFUSAL_MESSAGE, REFUSAL_REASON, REFUSED_BY
from node.core.grants import Grant, GrantBook, newer
from node.core.outcome import Reason
from node.errors import RecordRejected, TransportError
from node.kafka.closing import close_quietly
from node.kafka.connection import Connection, state_reader, topic_partitions
from node.ops.events import (
    GrantEventsForged,
    GrantEventsRefused,
    GrantsCurrent,
    GrantsStale,
    GrantsUpdated,
    GrantUnreadable,
    emit,
)
from node.supervisor import Health
from node.transport import Batch, Clock, Message, RecordSink, RecordSource

Check = Callable[[Grant, str, int], str | None]
"""Why a relay refuses an event it would copy, given its source topic and now in ms; None: copy."""
STUB_BYTES = 64 * 1024
"""A refused grant event keeps at most this much of its value (events are small JSON)."""


class Current(Protocol):
    """A relay as the grant store sees it: its name, when it was last confirmed current."""

    name: str
    current_at: float | None


class GrantStore:
    """The latest version of every grant this node has seen, kept current from Kafka."""

    def __init__(
        self,
        bootstrap: Connection | str,
        topic: str,
        on_change: Callable[[GrantBook], None],
        health: Health,
        *,
        max_staleness_s: float,
        relays: Sequence[Current] = (),
        log: structlog.typing.FilteringBoundLogger,
        clock: Clock = time.time,
        poll_ms: int = 100,
    ) -> None:
        self.name = "grants"
        self.topic = topic
        self._health = health
        self._relays = relays
        self.grants: dict[str, Grant] = {}
        self.started = False
        self.fresh = False
        self._bootstrap = bootstrap
        self._on_change = on_change
        self._max_staleness_s = max_staleness_s
        self._clock = clock
        self._poll_ms = poll_ms
        self._next_expiry_ms: int | None = None
        self._caught_up_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()
        self._log = log.bind(topic=topic)

    def request_stop(self) -> None:
        """Return from run() after the current poll."""
        self._stopping.set()

    async def run(self) -> None:
        """Read the grants topic until stopped, publishing a new book on every change."""
        consumer = state_reader(self._bootstrap)
        try:
            await consumer.start()
            partitions = await topic_partitions(
                consumer, self.topic, f"grants topic {self.topic} does not exist"
            )
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            self.started = True
            self._caught_up_at = None
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=self._poll_ms)
                applied = [self._apply(r.value) for records in batch.values() for r in records]
                changed = any(applied)  # every record applied first: any() would stop early
                asked_at = self._clock()  # current as of the question, not of the answer
                if await self._at_end(consumer, partitions, self._max_staleness_s / 2):
                    self._caught_up_at = asked_at
                self._refresh(changed=changed)
        except KafkaError as error:
            raise TransportError(f"reading grants from {self.topic}: {error!r}") from error
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if self.fresh:  # whoever restarts this loop must confirm it current again
                self.fresh = False
                self._publish(self._clock())
            await close_quietly(consumer.stop())

    def _refresh(self, *, changed: bool = False) -> None:
        """Publish a new book if grants, freshness or an expiry changed; arm the staleness timer.

        The timer fails closed at the exact bound even while the loop waits on a slow broker.
        """
        now = self._clock()
        times = [self._caught_up_at, *(relay.current_at for relay in self._relays)]
        oldest = None if None in times else min(t for t in times if t is not None)
        fresh = oldest is not None and now - oldest <= self._max_staleness_s
        expired = self._next_expiry_ms is not None and now * 1000 >= self._next_expiry_ms
        if changed or fresh != self.fresh or expired:
            turned = fresh != self.fresh
            self.fresh = fresh
            book = self._publish(now)
            if fresh:
                self._health.up(self.name)
                if turned:
                    emit(self._log, GrantsCurrent(len(book), len(self.grants)))
            else:
                why = self._why_stale(self._caught_up_at, now)
                self._health.down(self.name, why)
                if turned:
                    emit(self._log, GrantsStale(why))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if fresh and oldest is not None:
            delay = oldest + self._max_staleness_s - now
            self._timer = asyncio.get_running_loop().call_later(delay + 0.001, self._refresh)

    def _why_stale(self, caught_up_at: float | None, now: float) -> str:
        bound = self._max_staleness_s
        if caught_up_at is None or now - caught_up_at > bound:
            return f"{self.topic} not confirmed read to its end within {bound:g} s: failing closed"
        late = [r.name for r in self._relays if r.current_at is None or now - r.current_at > bound]
        return f"relay {', '.join(late)} not confirmed current within {bound:g} s: failing closed"

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
            emit(self._log, GrantUnreadable(str(error)))
            return False
        if not newer(self.grants.get(grant.grant_id), grant):
            return False
        self.grants[grant.grant_id] = grant
        return True

    def _publish(self, now: float) -> GrantBook:
        book = GrantBook(self.grants.values(), int(now * 1000)) if self.fresh else GrantBook()
        self._next_expiry_ms = book.next_expiry_ms
        self._on_change(book)
        emit(self._log, GrantsUpdated(len(book), len(self.grants), self.fresh))
        return book


class GrantRelay:
    """Copies grant events from one cluster's grants topic to another's, filtered by origin.

    ``keep`` says which events this relay copies (the others belong to another relay);
    ``check`` says why one of those may not come from the writer of its source topic. Nothing is
    skipped: an event that cannot be read, fails the check, or that the destination rejects, is
    written to the local refusal topic with the reason before its offset is committed.
    ``current_at`` is when the relay last saw its group's committed offsets at the end of its
    source topics (for the store's bound): measured by the group, so a member that owns no
    partition, or a stalled one, does not count as current.
    """

    def __init__(
        self,
        name: str,
        source: RecordSource,
        sink: RecordSink,
        topic: str,
        keep: Callable[[Grant], bool],
        refusals: RecordSink,
        refused_topic: str,
        health: Health,
        *,
        deadline_s: float,
        log: structlog.typing.FilteringBoundLogger,
        on_lag: Callable[[int], None] = lambda behind: None,
        check: Check = lambda grant, topic, now_ms: None,
        check_every_s: float = 1.0,
        clock: Clock = time.time,
    ) -> None:
        self.name = name
        self._check = check
        self._health = health
        self._on_lag = on_lag
        self._check_every_s = check_every_s
        self._checked_at = 0.0
        self.current_at: float | None = None
        self._source = source
        self._sink = sink
        self._topic = topic
        self._keep = keep
        self._refusals = refusals
        self._refused_topic = refused_topic
        self._deadline_s = deadline_s
        self._clock = clock
        self._stopping = asyncio.Event()
        self._log = log.bind(relay=name, topic=topic)

    def request_stop(self) -> None:
        """Return from run() after the current batch."""
        self._stopping.set()

    async def run(self) -> None:
        """Relay until stopped; commit only what was relayed, filtered out or refused.

        Raises TransportError (the supervisor retries) when either cluster fails.
        """
        await self._source.start()
        try:
            while not self._stopping.is_set():
                batch = await self._source.fetch()
                if not batch:
                    if time.monotonic() - self._checked_at < self._check_every_s:
                        continue
                    self._checked_at = time.monotonic()
                    asked_at = self._clock()  # current as of the question, not of the answer
                    behind = await self._source.lag(self._deadline_s)
                    self._health.up(self.name)
                    if behind is not None:
                        self._on_lag(behind)
                    if behind == 0:
                        self.current_at = asked_at
                    continue
                await self._relay(batch)
                offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs}
                await self._source.commit(offsets)
        finally:
            await self._sink.reset()
            await self._source.stop()

    async def _relay(self, batch: Batch) -> None:
        copies: list[Message] = []
        refusals: list[Message] = []
        forged: list[tuple[str, Grant, str]] = []
        now_ms = int(self._clock() * 1000)
        for partition, records in batch.items():
            for record in records:
                try:
                    grant = Grant.from_json(record.value or b"")
                except (ValueError, TypeError) as error:
                    refusals.append(self._refusal(record.key, record.value, f"unreadable: {error}"))
                    continue
                if not self._keep(grant):
                    continue
                why = self._check(grant, partition.topic, now_ms)
                if why is None:
                    copies.append(Message(self._topic, record.key, record.value, []))
                    continue
                forged.append((partition.topic, grant, why))
                refusals.append(self._refusal(
                    record.key, record.value, f"from {partition.topic} refused: {why}",
                    Reason.FORGED,
                ))  # fmt: skip
        if forged:
            topic, first, why = forged[0]
            named = GrantEventsForged(len(forged), topic, first.grant_id, first.origin, why)
            emit(self._log, named)
        if copies:
            results = await self._timed(self._sink.deliver(copies))
            for copy, rejected in zip(copies, results, strict=True):
                if rejected is not None:
                    refusals.append(self._refusal(copy.key, copy.value, f"rejected: {rejected}"))
        if refusals:
            emit(self._log, GrantEventsRefused(len(refusals)))
            results = await self._timed(self._refusals.deliver(refusals))
            if any(r is not None for r in results):
                raise TransportError(f"{self._refused_topic} rejected a refused grant event")

    async def _timed(
        self, delivery: Coroutine[Any, Any, list[RecordRejected | None]]
    ) -> list[RecordRejected | None]:
        try:
            return await asyncio.wait_for(delivery, self._deadline_s)
        except TimeoutError as error:
            raise TransportError(
                f"relaying grants to {self._topic}: not acked within {self._deadline_s:g} s"
            ) from error

    def _refusal(
        self, key: bytes | None, value: bytes | None, why: str, reason: Reason = Reason.BAD_PAYLOAD
    ) -> Message:
        headers = [
            (REFUSAL_REASON, reason.value.encode()),
            (REFUSAL_MESSAGE, f"grant event {why}"[:1000].encode()),
            (REFUSED_BY, f"{self.name}".encode()),
        ]
        return Message(self._refused_topic, key, (value or b"")[:STUB_BYTES], headers)
