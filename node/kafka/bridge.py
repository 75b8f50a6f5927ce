"""A link: one source topic wired through the decision to the sinks, batch by batch.

For each fetched batch: validate fresh records (ingress), route, produce every copy and every
refusal, wait for all acks, then commit the next offset of each partition. Up to
``max_in_flight`` batches are delivered at once (the next is decided and queued while the acks of
the previous are awaited); they are committed strictly in fetch order. A batch that fails to
deliver is rewound, with every batch after it, and retried after a backoff, so an offset is
committed only once every copy of every record before it was acked (at-least-once, contiguous per
partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from node.codec import SchemaSet
from node.core.envelope import (
    CREATED_MS,
    GRADE,
    HOPS,
    REFUSAL_MESSAGE,
    REFUSAL_REASON,
    REFUSED_BY,
    RESOURCE,
    SOURCE_DEPT,
    SOURCE_REGION,
    TARGET,
)  # fmt: skip
from node.core.ingress import check_ingress
from node.core.outcome import Copy, Delivered, Direction, Outcome, Reason, Refused
from node.core.policy import Policy, PolicyKey
from node.core.routing import Arrival, RouteKey, Router
from node.errors import DeliveryError, PayloadError, RecordRejected, TransportError
from node.kafka.sink import Message, Sink
from node.kafka.source import Batch, Source
from node.kafka.topics import TopicNames
from node.ops.metrics import Metrics

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Destinations:
    """Where each direction's copies go: sinks and topic names of both clusters."""

    local: Sink
    local_topics: TopicNames
    parent: Sink | None
    parent_topics: TopicNames | None

    def route(self, copy: Copy) -> tuple[Sink, str]:
        """Return the sink and topic for ``copy``."""
        if copy.direction is Direction.LOCAL:
            if copy.department is not None:
                return self.local, self.local_topics.deliver(copy.department)
            return self.local, self.local_topics.inbox
        if copy.direction is Direction.DOWN:
            return self.local, self.local_topics.down(copy.region)
        if self.parent is None or self.parent_topics is None:
            raise AssertionError("the router sent a record up from the root")
        return self.parent, self.parent_topics.outbox


@dataclass(frozen=True, slots=True)
class _Summary:
    """What one delivered batch amounted to, for its log line."""

    records: int
    copies: int
    refused: int


@dataclass(slots=True)
class _Pending:
    """Messages of one batch, with what each one means for metrics."""

    messages: list[Message]
    sinks: list[Sink]
    kinds: list[Direction | Reason]  # direction of a copy, or the reason of a refusal
    created_ms: list[int]


class Link:
    """Moves records from one source topic to their destinations until asked to stop."""

    def __init__(
        self,
        name: str,
        source: Source,
        arrival: Arrival,
        router: Router,
        policy: Policy,
        destinations: Destinations,
        metrics: Metrics,
        *,
        schemas: SchemaSet,
        validate_ingress: bool,
        retry_backoff_s: float,
        max_in_flight: int = 4,
        clock: Clock = time.time,
    ) -> None:
        self.name = name
        self.started = False
        self.up = False
        self._source = source
        self._arrival = arrival
        self._router = router
        self._policy = policy
        self._to = destinations
        self._metrics = metrics
        self._schemas = schemas
        self._validate = validate_ingress and arrival is Arrival.FROM_BELOW
        self._backoff = retry_backoff_s
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._stopping = asyncio.Event()
        self._log = structlog.get_logger("node.link").bind(link=name, topic=source.topic)
        # label children resolved once: .labels() per record costs more than the count itself
        self._records_in = metrics.records_in.labels(name)
        self._routing_seconds = metrics.routing_seconds.labels(name)
        self._counters: dict[Direction | Reason, Any] = {
            **{d: metrics.records_out.labels(name, d.value) for d in Direction},
            **{r: metrics.records_refused.labels(name, r.value) for r in Reason},
        }
        self._record_age = {d: metrics.record_age.labels(d.value) for d in Direction}

    def request_stop(self) -> None:
        """Finish the batch in hand, commit, and return from run()."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume, route, deliver and commit until stopped; raise on non-retriable failures."""
        await self._source.start()
        self.started = self.up = True
        self._metrics.link_up.labels(self.name).set(1)
        self._log.info("link_started")
        in_flight: deque[tuple[Batch, asyncio.Task[_Summary]]] = deque()
        try:
            while not self._stopping.is_set():
                batch = await self._source.fetch()
                if batch:
                    in_flight.append((batch, asyncio.ensure_future(self._deliver(batch))))
                while in_flight and (
                    in_flight[0][1].done() or len(in_flight) >= self._max_in_flight
                ):
                    await self._settle(in_flight)
            while in_flight:  # soft stop: finish and commit what is under way
                await self._settle(in_flight)
        finally:
            for _, task in in_flight:
                task.cancel()
            await self._source.stop()
            self._log.info("link_stopped")

    async def _settle(self, in_flight: deque[tuple[Batch, asyncio.Task[_Summary]]]) -> None:
        """Wait for the oldest batch; commit it, or rewind it and every later batch."""
        batch, task = in_flight.popleft()
        try:
            summary = await task
        except DeliveryError as error:
            later = list(in_flight)
            in_flight.clear()
            await asyncio.gather(*(t for _, t in later), return_exceptions=True)
            first: dict[Any, int] = {}
            for failed in (batch, *(b for b, _ in later)):  # in fetch order: the first is lowest
                for tp, records in failed.items():
                    if records:
                        first.setdefault(tp, records[0].offset)
            self._set_up(False)
            self._metrics.delivery_retries.labels(self.name).inc()
            self._log.warning("delivery_failed", error=str(error), retry_in_s=self._backoff)
            self._source.rewind(first)
            await self._sleep_unless_stopping(self._backoff)
            return  # the rewound records are fetched again by the loop
        self._set_up(True)
        offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs}
        committed = await self._source.commit(offsets)
        self._log.info(
            "batch",
            records=summary.records,
            copies=summary.copies,
            refused=summary.refused,
            offsets={f"{tp.partition}": [batch[tp][0].offset, o - 1] for tp, o in offsets.items()},
            committed=committed,
        )

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def _set_up(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            self._metrics.link_up.labels(self.name).set(1 if up else 0)

    async def _deliver(self, batch: Batch) -> _Summary:
        """Decide a batch and deliver every copy and refusal; raise DeliveryError to retry it."""
        records = [record for partition_records in batch.values() for record in partition_records]
        began = time.perf_counter()
        outcomes, created = self._decide(records)
        pending = self._messages(records, outcomes, created)
        self._routing_seconds.observe(time.perf_counter() - began)

        rejected = await self._send(pending)
        if rejected:
            await self._refuse_rejected(pending, rejected)
        self._count(pending, len(records))
        refused = sum(isinstance(kind, Reason) for kind in pending.kinds)
        return _Summary(len(records), len(pending.kinds) - refused, refused)

    def _decide(self, records: Sequence[Any]) -> tuple[list[Outcome], list[int]]:
        """Decide every record of the batch; also return each one's creation time (or -1)."""
        route_keys: list[RouteKey] = []
        policy_keys: list[PolicyKey] = []
        created: list[int] = []
        for record in records:
            get = dict(record.headers).get  # one C-level pass; the last value of a name wins
            route_keys.append((get(TARGET), get(HOPS)))
            policy_keys.append((get(RESOURCE), get(SOURCE_REGION), get(SOURCE_DEPT), get(GRADE)))
            created.append(_millis(get(CREATED_MS)))
        routed = self._router.route_batch(route_keys, self._arrival)
        outcomes = self._policy.apply_batch(policy_keys, routed)
        if self._validate:
            region = self._router.topology.region
            for index, (record, (_, hops)) in enumerate(zip(records, route_keys, strict=True)):
                if not hops:
                    refusal = check_ingress(record.headers, record.value, region, self._schemas)
                    if refusal is not None:
                        outcomes[index] = refusal
        return outcomes, created

    def _messages(
        self, records: Sequence[Any], outcomes: Sequence[Outcome], created_ms: Sequence[int]
    ) -> _Pending:
        pending = _Pending([], [], [], [])
        partitions = self._source.partition_count()
        for record, outcome, created in zip(records, outcomes, created_ms, strict=True):
            origin = None if partitions is None else (record.partition, partitions)
            if isinstance(outcome, Delivered):
                base = [h for h in record.headers if h[0] != HOPS]
                for copy in outcome.copies:
                    sink, topic = self._to.route(copy)
                    headers = [*base, (HOPS, copy.hops)]
                    value = record.value
                    if copy.items is not None:
                        try:
                            value = self._schemas.project(record.value or b"", copy.items)
                        except PayloadError as error:
                            self._add_refusal(
                                pending, record, Refused(Reason.BAD_PAYLOAD, str(error)), copy
                            )
                            continue
                        headers.append((PROJECTION, ",".join(copy.items).encode()))
                    pending.messages.append(Message(topic, record.key, value, headers, origin))
                    pending.sinks.append(sink)
                    pending.kinds.append(copy.direction)
                    pending.created_ms.append(created)
                for copy, refused in outcome.withheld:
                    self._add_refusal(pending, record, refused, copy)
            else:
                self._add_refusal(pending, record, outcome)
        return pending

    def _add_refusal(
        self, pending: _Pending, record: Any, refused: Refused, copy: Copy | None = None
    ) -> None:
        headers = list(record.headers)
        if copy is not None:
            where = f"{copy.direction.value}:{copy.region}"
            if copy.department is not None:
                where += f"/{copy.department}"
            headers.append((REFUSED_COPY, where.encode()))
        pending.messages.append(self._refusal(record.key, record.value, headers, refused))
        pending.sinks.append(self._to.local)
        pending.kinds.append(refused.reason)
        pending.created_ms.append(_millis(dict(record.headers).get(CREATED_MS)))

    def _refusal(
        self, key: bytes | None, value: bytes | None, headers: Sequence[Any], refused: Refused
    ) -> Message:
        region = self._router.topology.region
        extra = [
            (REFUSAL_REASON, refused.reason.value.encode()),
            (REFUSAL_MESSAGE, refused.message.encode()),
            (REFUSED_BY, f"{region}/{self.name}".encode()),
        ]
        return Message(self._to.local_topics.refused, key, value, [*headers, *extra])

    async def _send(self, pending: _Pending) -> dict[int, RecordRejected]:
        """Deliver every message, grouped by sink; return the indexes rejected for good."""
        by_sink: dict[int, tuple[Sink, list[int]]] = {}
        for index, sink in enumerate(pending.sinks):
            by_sink.setdefault(id(sink), (sink, []))[1].append(index)
        groups = list(by_sink.values())
        try:
            results = await asyncio.gather(
                *(sink.deliver([pending.messages[i] for i in indexes]) for sink, indexes in groups)
            )
        except TransportError as error:
            raise DeliveryError(str(error)) from error
        rejected: dict[int, RecordRejected] = {}
        for (_, indexes), outcome in zip(groups, results, strict=True):
            for index, result in zip(indexes, outcome, strict=True):
                if result is not None:
                    rejected[index] = result
        return rejected

    async def _refuse_rejected(
        self, pending: _Pending, rejected: dict[int, RecordRejected]
    ) -> None:
        """Write every copy the destination rejected for good to the refusal topic."""
        refusals = []
        for index, error in rejected.items():
            message = pending.messages[index]
            refused = Refused(Reason.UNDELIVERABLE, str(error))
            refusals.append(self._refusal(message.key, message.value, message.headers, refused))
            pending.kinds[index] = Reason.UNDELIVERABLE
        results = await self._to.local.deliver(refusals)
        if any(result is not None for result in results):
            raise DeliveryError("the refusal topic rejected a refused record; not committing")

    def _count(self, pending: _Pending, records_in: int) -> None:
        self._records_in.inc(records_in)
        now_ms = self._clock() * 1000
        counts: dict[Direction | Reason, int] = {}
        ages = self._record_age
        for kind, created in zip(pending.kinds, pending.created_ms, strict=True):
            counts[kind] = counts.get(kind, 0) + 1
            if created >= 0 and kind in ages:
                ages[kind].observe(max(0.0, now_ms - created) / 1000)  # type: ignore[index]
        for kind, count in counts.items():
            self._counters[kind].inc(count)


REFUSED_COPY = "cx-refused-copy"
PROJECTION = "cx-projection"


def _millis(value: bytes | None) -> int:
    """Parse a ``cx-created-ms`` value; -1 if absent or malformed."""
    if value is None:
        return -1
    try:
        return int(value)
    except ValueError:
        return -1
