"""A link: its source topics wired through the decision to its own sinks, batch by batch.

For each fetched batch: refuse records whose headers disagree with the writer of their topic
(``node.core.writers``, on the link from below), validate fresh records (ingress), route, produce
every copy and every refusal, wait for all acks, then commit the next offset of each partition.
Up to ``max_in_flight`` batches (and at most ``max_in_flight_bytes`` of records) are under way at
once; they are committed strictly in fetch order.

Failure handling, all inside the link so it keeps going:

- A delivery that fails, or is not acked within ``delivery_timeout_s``, marks the link down with
  the reason. Every batch after it is abandoned, the link's producers are reset (nothing abandoned
  is written later), the source is rewound to the first unacked record and the link retries after
  a backoff. Sinks order writes per destination partition, so a key's records are never
  overtaken by a later record of the same key.
- A record its destination rejects for good (too large) is refused as ``undeliverable``; a
  refusal the refusal topic cannot take is written as a bounded stub (envelope, reason, size,
  SHA-256 of the value). The rest of the batch goes on; no partition is blocked.
- Errors of the source (fetch, commit) propagate to the supervisor, which restarts the link.
- With a fail-closed audit trail (``Watch.gate``) each delivered batch hands its audit facts
  over in batch order, and the batch is committed only once they are written: a crash between
  delivery and commit redelivers the batch, it never loses its entries. While the trail cannot
  write, the link is down ("holding: ..."), waits for the entries under way, and fetches nothing
  more (a batch fetched meanwhile is rewound) until the gate opens.

What the link produces is built in ``node.kafka.messages`` (copies, refusals, stubs; where each
goes), heartbeats and correction feedback are taken aside in ``node.kafka.aside``, and what a
committed batch amounted to is counted in ``node.kafka.accounting``. ``Destinations``, ``Watch``,
``LinkTotals`` and the header names are re-exported here, the link's public face.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from node.codec import SchemaSet
from node.config import FlowConfig
from node.core.decision import Decider, Facts
from node.core.outcome import Direction, Outcome, Reason, Refused
from node.core.peers import CHILD, PARENT, PeerWatch
from node.core.policy import Policy
from node.core.provenance import Provenance
from node.core.routing import Arrival, Router
from node.core.writers import Writers
from node.errors import RecordRejected, TransportError
from node.kafka.accounting import RATE_WINDOW_S, Accountant, Gate, LinkTotals, Summary, Watch
from node.kafka.aside import Aside, AsideTaker, is_aside
from node.kafka.messages import (
    NO_FACTS,
    PROJECTION,
    REFUSED_COPY,
    REFUSED_SHA256,
    REFUSED_SIZE,
    STUB_HEADER_BYTES,
    Destinations,
    Messages,
    Out,
    stub,
)
from node.kafka.source import unreadable_refusals
from node.ops.events import (
    BatchDone,
    LinkDown,
    LinkHolding,
    LinkRetry,
    LinkStarted,
    LinkStopped,
    LinkUp,
    emit,
)
from node.ops.metrics import Metrics
from node.supervisor import Backoff, Health
from node.transport import Batch, Clock, Partition, Record, RecordSink, RecordSource

__all__ = [
    "PROJECTION",
    "RATE_WINDOW_S",
    "REFUSED_COPY",
    "REFUSED_SHA256",
    "REFUSED_SIZE",
    "STUB_HEADER_BYTES",
    "Destinations",
    "Link",
    "LinkTotals",
    "Watch",
]


HOLDING = "holding: "
"""How the reason of a link held by a fail-closed audit trail begins."""
AUDIT_POLL_S = 0.2
"""How often a link waiting for its audit entries checks the gate and a stop."""


@dataclass(slots=True)
class _InFlight:
    batch: Batch
    task: asyncio.Task[Summary]
    size: int
    deadline: float
    fetched: float  # time.monotonic() at fetch


class Link:
    """Moves records from one source topic to their destinations until asked to stop."""

    def __init__(
        self,
        name: str,
        source: RecordSource,
        arrival: Arrival,
        router: Router,
        policy: Policy,
        destinations: Destinations,
        metrics: Metrics,
        health: Health,
        *,
        schemas: SchemaSet,
        settings: FlowConfig,
        peer: str,
        log: structlog.typing.FilteringBoundLogger,
        clock: Clock = time.time,
        watch: Watch | None = None,
        writers: Writers | None = None,
        provenance: Provenance | None = None,
        await_keys: Callable[[Sequence[Record]], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self._writers = writers  # who may write each source topic; None: not checked
        self._await_keys = await_keys  # waits (bounded) for signing keys not read yet
        self.totals = LinkTotals()
        self.totals.sample(clock())
        self._source = source
        self._to = destinations
        self._metrics = metrics
        self._health = health
        self._settings = settings
        self._decider = Decider(
            router,
            policy,
            arrival,
            schemas,
            validate_ingress=settings.validate_ingress,
            provenance=provenance,
        )
        self._backoff = Backoff(settings.retry_backoff_s, settings.max_backoff_s)
        self._clock = clock
        self._stopping = asyncio.Event()
        self._held = False  # down because a fail-closed audit trail cannot write
        self._last_turn: asyncio.Future[bool] | None = None  # the latest batch's turn: handed over?
        self._committing: asyncio.Task[None] | None = None  # the commit under way, if any
        self._lag_elsewhere: dict[int, dict[int, int]] = {}  # worker -> lag per partition
        self._to_commit: list[tuple[dict[Partition, tuple[int, int]], Summary]] = []
        """Delivered batches waiting for the next commit: first and last offsets, summary."""
        self._log = log.bind(link=name, topic=source.topic, peer=peer)
        topology = router.topology
        self._watch = watch or Watch(PeerWatch(
            topology, int(clock() * 1000), 5.0, bucket_s=60, keep=30, settle_s=120
        ))  # fmt: skip
        self._messages = Messages(destinations, f"{topology.region}/{name}".encode())
        self._aside_taker = AsideTaker(
            destinations, arrival=arrival, topology=topology, policy=policy,
            peers=self._watch.peers, role=CHILD if arrival is Arrival.FROM_BELOW else PARENT,
            book=self._watch.feedback, departments=self._watch.feedback_departments, clock=clock,
        )  # fmt: skip
        self._accounts = Accountant(
            name, metrics, self.totals, self._watch, arrival=arrival, topology=topology, clock=clock
        )

    def lag_by_partition(self) -> dict[int, int]:
        """Return the source's lag in records per partition, as last seen (no I/O).

        Partitions the node's worker processes read are in it too, as they last said.
        """
        lags = dict(self._source.lag_by_partition())
        for elsewhere in self._lag_elsewhere.values():
            for partition, records in elsewhere.items():
                lags[partition] = lags.get(partition, 0) + records
        return lags

    def lag_elsewhere(self, worker: int, lags: Mapping[int, int] | None) -> None:
        """Note the lag of the partitions ``worker`` reads for this link (None: it is gone)."""
        if lags is None:
            self._lag_elsewhere.pop(worker, None)
        else:
            self._lag_elsewhere[worker] = dict(lags)

    def apply(self, summary: Summary) -> None:
        """Apply a batch another process's link of the same name committed (a worker's)."""
        self._accounts.apply(summary)

    def request_stop(self) -> None:
        """Finish the batches under way, commit, and return from run()."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume, route, deliver and commit until stopped.

        Delivery failures are retried here; source failures raise TransportError (the supervisor
        restarts the link). Whatever is under way when this returns or raises is abandoned and
        the sinks reset, so nothing abandoned is written later.
        """
        in_flight: deque[_InFlight] = deque()
        await self._source.start()
        self._health.up(self.name)
        emit(self._log, LinkStarted())
        try:
            while not self._stopping.is_set():
                gate = self._watch.gate
                if gate is not None and not gate.is_open():
                    await self._hold(in_flight, gate)
                    continue
                if sum(f.size for f in in_flight) < self._settings.max_in_flight_bytes:
                    batch = await self._source.fetch()
                    if batch and gate is not None and not gate.is_open():
                        self._source.rewind({tp: r[0].offset for tp, r in batch.items() if r})
                    elif batch:
                        in_flight.append(self._start_delivery(batch))
                elif in_flight:
                    await self._settle(in_flight)  # over the byte budget: fetch nothing more
                while in_flight and (
                    in_flight[0].task.done()
                    or len(in_flight) >= self._settings.max_in_flight
                    or time.monotonic() >= in_flight[0].deadline
                ):
                    await self._settle(in_flight)
            while in_flight:  # soft stop: finish and commit what is under way
                await self._settle(in_flight)
            await self._committed()
        finally:
            if in_flight:
                await self._abandon(in_flight)
            if self._committing is not None:  # raising or cut: its batches come again later
                self._committing.cancel()
                await asyncio.gather(self._committing, return_exceptions=True)
                self._committing = None
            self._to_commit.clear()
            await self._source.stop()
            emit(self._log, LinkStopped())

    async def _hold(self, in_flight: deque[_InFlight], gate: Gate) -> None:
        """Commit what is under way, then fetch nothing until ``gate`` opens (fail-closed audit)."""
        while in_flight:
            await self._settle(in_flight)
        if not gate.is_open():
            self._holding(gate)
        await gate.wait_open(self._stopping)
        if self._held and gate.is_open():
            self._resumed()

    def _holding(self, gate: Gate) -> None:
        """Say the link holds for the audit trail: its state's reason, an event, ``link_up`` 0."""
        reason = f"{HOLDING}audit entries cannot be written: {gate.why_closed() or 'not acked yet'}"
        if not self._held:
            self._held = True
            emit(self._log, LinkHolding(reason))
            self._health.down(self.name, reason)

    def _resumed(self) -> None:
        """Mark the link up again after it was down (or held), and say so."""
        self._held = False
        state = self._health.snapshot().get(self.name)
        if state is not None and not state.up:
            emit(self._log, LinkUp(round(self._clock() - state.since, 3)))
        self._health.up(self.name)

    async def _audit_written(self, summary: Summary) -> bool:
        """Wait until a batch's audit entries are written (fail-closed); False: stopped first.

        No deadline while running (the entries are delivered: giving up would write them
        twice); on a stop, at most ``delivery_timeout_s`` (the batch is then redelivered later).
        """
        written = summary.audited
        if written is None or written.done():
            return True
        gate = self._watch.gate
        loop = asyncio.get_running_loop()
        give_up = None
        while not written.done():
            if self._stopping.is_set():
                give_up = give_up or loop.time() + self._settings.delivery_timeout_s
                if loop.time() >= give_up:
                    return False
            elif gate is not None and not gate.is_open():
                self._holding(gate)
            await asyncio.wait([written], timeout=AUDIT_POLL_S)
        return True

    def _start_delivery(self, batch: Batch) -> _InFlight:
        size = 0
        for records in batch.values():
            for record in records:
                size += len(record.value or b"") + len(record.key or b"")
        fetched = time.monotonic()
        deadline = fetched + self._settings.delivery_timeout_s
        turn = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(self._deliver(batch, self._last_turn, turn))
        self._last_turn = turn
        return _InFlight(batch, task, size, deadline, fetched)

    async def _abandon(self, in_flight: deque[_InFlight]) -> None:
        """Cancel every delivery under way and reset the sinks, so none of it is written later."""
        tasks = [f.task for f in in_flight]
        in_flight.clear()
        self._last_turn = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sink in self._to.sinks():
            await sink.reset()

    async def _settle(self, in_flight: deque[_InFlight]) -> None:
        """Wait for the oldest batch; commit it, or rewind it and every later batch."""
        oldest = in_flight[0]
        remaining = max(0.0, oldest.deadline - time.monotonic())
        try:
            summary = await asyncio.wait_for(asyncio.shield(oldest.task), remaining)
        except TimeoutError:
            reason = f"delivery not acked within {self._settings.delivery_timeout_s:g} s"
        except TransportError as error:
            reason = str(error)
        else:
            if not await self._audit_written(summary):
                await self._abandon(in_flight)  # stopping: redelivered and audited after restart
                return
            in_flight.popleft()
            summary.node_s = time.monotonic() - oldest.fetched
            self._start_commit(oldest.batch, summary)
            if len(self._to_commit) >= self._settings.max_in_flight:
                await self._committed()  # the coordinator lags: settle no more until it catches up
            return
        await self._retry(in_flight, reason)

    async def _retry(self, in_flight: deque[_InFlight], reason: str) -> None:
        first: dict[Partition, int] = {}
        for failed in in_flight:  # in fetch order: the first offset seen is the lowest
            for tp, records in failed.batch.items():
                if records:
                    first.setdefault(tp, records[0].offset)
        await self._abandon(in_flight)
        delay = self._backoff.next_delay()
        event = LinkDown if self._health.is_up(self.name) else LinkRetry
        emit(self._log, event(reason, round(delay, 2)))
        self._health.down(self.name, reason)
        self._metrics.delivery_retries.labels(self.name).inc()
        self._source.rewind(first)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    def _start_commit(self, batch: Batch, summary: Summary) -> None:
        """Queue ``batch``'s commit without holding up the next fetch.

        One commit is under way at a time; it covers every batch queued before it began, so a
        slow coordinator makes fewer, larger commits instead of a growing queue. A commit that
        failed raises here (at the next batch) or at the stop, and nothing queued after it is
        committed: offsets are never committed past a batch whose commit failed.
        """
        committing = self._committing
        if committing is not None and committing.done():
            self._committing = None
            committing.result()  # raise what ended it, if anything
        ranges = {
            tp: (records[0].offset, records[-1].offset) for tp, records in batch.items() if records
        }
        self._to_commit.append((ranges, summary))
        if self._committing is None:
            self._committing = asyncio.ensure_future(self._commit_queued())

    async def _committed(self) -> None:
        """Wait for the commits under way and queued (raising what failed)."""
        if self._committing is not None:
            await self._committing

    async def _commit_queued(self) -> None:
        """Commit what is queued, in one call per round, until nothing is; then apply each batch."""
        while self._to_commit:
            settled, self._to_commit = self._to_commit, []
            offsets = {tp: last + 1 for ranges, _ in settled for tp, (_, last) in ranges.items()}
            committed = await self._source.commit(offsets)
            for ranges, summary in settled:
                self._accounts.apply(summary)
                emit(self._log, BatchDone(
                    summary.records, summary.copies, summary.refused,
                    {f"{tp.partition}": [first, last] for tp, (first, last) in ranges.items()},
                    committed,
                ))  # fmt: skip
            if not self._health.is_up(self.name):
                self._resumed()
            self._backoff.reset()

    async def _deliver(
        self, batch: Batch, after: asyncio.Future[bool] | None, turn: asyncio.Future[bool]
    ) -> Summary:
        """Decide a batch and deliver every copy, then every refusal; raise TransportError.

        Refusals are written in one call, in source order, once the copies' rejections are
        known, and only after the previous batch's refusals (``after``), so the refusal topic
        keeps the order of the source; ``turn`` tells the next batch it may write its own, and
        whether this one handed its audit facts to a fail-closed gate (in batch order: a batch
        after one that failed does not, it will be abandoned).
        """
        try:
            records = [record for part in batch.values() for record in part]
            if self._await_keys is not None:
                await self._await_keys(records)
            began = time.perf_counter()
            writers = self._writers
            forged = writers.check_batch((p.topic, r) for p, r in batch.items()) if writers else {}
            forged.update(unreadable_refusals(records))  # records the source could not read
            outcomes, facts, aside = self._decide(records, forged)
            pending = self._messages.of_batch(
                records, outcomes, facts, partitions=self._source.partition_count(),
                parent=self._watch.peers.parent or "",
            )  # fmt: skip
            pending += aside.outs
            routing_s = time.perf_counter() - began

            rejected = await self._send_copies(pending)
            for index, error in rejected.items():
                pending[index] = self._messages.undeliverable(pending[index], error)
            if after is not None:
                await asyncio.shield(after)
            refusals = [out.message for out in pending if out.kind.__class__ is Reason]
            if refusals:
                results = await self._to.local.deliver(refusals, substitute=stub)
                if any(result is not None for result in results):
                    raise TransportError(
                        f"{self._to.local_topics.refused} cannot take even a refusal stub; "
                        "raise its max.message.bytes"
                    )
            summary = self._accounts.summarize(records, facts, pending, aside)
            summary.routing_s = routing_s
            gate = self._watch.gate
            if gate is not None:
                if after is not None and not after.result():
                    raise TransportError("an earlier batch failed: this one is abandoned")
                summary.audited = gate.hand_over(summary.audit)
            turn.set_result(True)
            return summary
        finally:
            if not turn.done():
                turn.set_result(False)

    def _decide(
        self, records: Sequence[Record], forged: dict[int, Refused]
    ) -> tuple[list[Outcome | None], list[Facts], Aside]:
        """Decide the data records; take heartbeats and feedback aside (outcome None) or refuse.

        A record whose headers disagree with its topic's writer (``forged``, by index) is
        refused whatever the rules say, and the decision knows it (it never signs such a
        record). On the link from below, a record published here that corrects a report
        (``cx-corrects``) and passes the rules also makes the report's ``corrected`` status.
        """
        aside = Aside()
        taker = self._aside_taker
        if not any(is_aside(record.headers) for record in records):
            decided, all_facts = self._decider.decide(
                records, now_ms=self._now_ms(), refused=forged
            )
            outcomes = list[Outcome | None](decided)
            for index, refused in forged.items():
                outcomes[index] = refused
                all_facts[index] = all_facts[index]._replace(quality=None)
            if taker.corrects:
                taker.correct(records, outcomes, all_facts, aside)
            return outcomes, all_facts, aside
        at = [index for index, record in enumerate(records) if not is_aside(record.headers)]
        data = [records[index] for index in at]
        known = {n: forged[i] for n, i in enumerate(at) if i in forged} if forged else None
        decided, data_facts = self._decider.decide(data, now_ms=self._now_ms(), refused=known)
        decisions, facts_of = iter(decided), iter(data_facts)
        outcomes = []
        facts: list[Facts] = []
        for index, record in enumerate(records):
            if not is_aside(record.headers):
                decision, fact = next(decisions), next(facts_of)  # advance both, forged or not
                outcomes.append(forged.get(index) or decision)
                facts.append(fact._replace(quality=None) if index in forged else fact)
                continue
            facts.append(NO_FACTS)
            outcomes.append(forged.get(index) or taker.take(record, aside))
        if taker.corrects:
            taker.correct(records, outcomes, facts, aside)
        return outcomes, facts, aside

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def _send_copies(self, pending: Sequence[Out]) -> dict[int, RecordRejected]:
        """Deliver every copy (refusals wait), grouped by sink; return those rejected for good."""
        by_sink: dict[int, tuple[RecordSink, list[int]]] = {}
        for index, out in enumerate(pending):
            if out.kind.__class__ is Direction:
                by_sink.setdefault(id(out.sink), (out.sink, []))[1].append(index)
        groups = list(by_sink.values())
        results = await asyncio.gather(
            *(sink.deliver([pending[i].message for i in indexes]) for sink, indexes in groups)
        )
        rejected: dict[int, RecordRejected] = {}
        for (_, indexes), outcome in zip(groups, results, strict=True):
            for index, result in zip(indexes, outcome, strict=True):
                if result is not None:
                    rejected[index] = result
        return rejected
