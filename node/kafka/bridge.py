"""A link: one source topic wired through the decision to its own sinks, batch by batch.

For each fetched batch: validate fresh records (ingress), route, produce every copy and every
refusal, wait for all acks, then commit the next offset of each partition. Up to
``max_in_flight`` batches (and at most ``max_in_flight_bytes`` of records) are under way at once;
they are committed strictly in fetch order.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import structlog

from node.codec import SchemaSet
from node.config import FlowConfig
from node.core.decision import Decider, Facts
from node.core.envelope import (
    ENVELOPE_HEADERS,
    HOPS,
    REFUSAL_MESSAGE,
    REFUSAL_REASON,
    REFUSED_BY,
)  # fmt: skip
from node.core.feedback import (
    FEEDBACK,
    Event,
    FeedbackBook,
    Forward,
    Way,
    correction,
    forward,
    key_of,
    kind_of,
    take,
)
from node.core.heartbeat import HEARTBEAT, Beat, decode
from node.core.outcome import Copy, Delivered, Direction, Outcome, Reason, Refused
from node.core.peers import CHILD, PARENT, PeerWatch
from node.core.policy import Policy
from node.core.quality_ledger import QualityKey
from node.core.routing import Arrival, Router
from node.core.tally import Tally, TallyKey
from node.core.tally import add as tally_add
from node.errors import EnvelopeError, RecordRejected, TransportError
from node.kafka.topics import TopicNames
from node.ops.events import BatchDone, LinkDown, LinkRetry, LinkStarted, LinkStopped, LinkUp, emit
from node.ops.metrics import Metrics
from node.supervisor import Backoff, Health
from node.transport import (
    Batch,
    Clock,
    Header,
    Message,
    Partition,
    Record,
    RecordSink,
    RecordSource,
)

REFUSED_COPY = "cx-refused-copy"
PROJECTION = "cx-projection"
REFUSED_SIZE = "cx-refused-size"
REFUSED_SHA256 = "cx-refused-sha256"
STUB_HEADER_BYTES = 256
"""A refusal stub keeps each envelope header to this many bytes."""


@dataclass(frozen=True, slots=True)
class Destinations:
    """Where each direction's copies go: the link's own sinks and both clusters' topic names."""

    local: RecordSink
    local_topics: TopicNames
    parent: RecordSink | None
    parent_topics: TopicNames | None

    def route(self, copy: Copy) -> tuple[RecordSink, str]:
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

    def feedback(self, way: Way, region: str, department: str | None) -> tuple[RecordSink, str]:
        """Return the sink and topic of feedback going ``way`` (to ``department`` if here)."""
        if way is Way.HERE:
            assert department is not None
            return self.local, self.local_topics.feedback_for(department)
        if way is Way.DOWN:
            return self.local, self.local_topics.down(region)
        if self.parent is None or self.parent_topics is None:
            raise AssertionError("feedback sent up from the root or from above")
        return self.parent, self.parent_topics.outbox

    def sinks(self) -> list[RecordSink]:
        """Every sink of the link."""
        return [self.local] if self.parent is None else [self.local, self.parent]


class _Out(NamedTuple):
    """One message to produce, with its sink and what it means for metrics and statistics."""

    message: Message
    sink: RecordSink
    kind: Direction | Reason  # direction of a copy, or the reason of a refusal
    facts: Facts
    destination: str  # parent or child region, department or ``inbox``; "" for a refusal


_NO_FACTS = Facts(-1, None, None, None)
_ASIDE = frozenset({HEARTBEAT, FEEDBACK})
_WAY_DIRECTION = {Way.UP: Direction.UP, Way.DOWN: Direction.DOWN, Way.HERE: Direction.LOCAL}


def _is_aside(headers: Sequence[Header]) -> bool:
    """Whether the link takes a record aside (a heartbeat or feedback: the first header says)."""
    return bool(headers) and headers[0][0] in _ASIDE


@dataclass(slots=True)
class _Aside:
    """What a batch holds besides data records: heartbeats, feedback to forward and log."""

    beats: list[Beat] = field(default_factory=list)
    outs: list[_Out] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    taken: int = 0  # feedback records accepted (not counted as records in)


@dataclass(frozen=True, slots=True)
class Watch:
    """What a link reports besides its counters: neighbours' heartbeats, statistics, labels."""

    peers: PeerWatch
    resource_label: Callable[[str], str] = lambda code: "unknown"
    """Maps a resource code to its (bounded) metric label."""
    on_tally: Callable[[int, Tally], None] = lambda now_ms, tally: None
    """Called after each committed batch with what it exchanged (the statistics ledger)."""
    feedback: FeedbackBook | None = None
    """The node's correction feedback, read while deciding and added to at commit; None: the
    link refuses feedback records."""
    feedback_departments: frozenset[str] = frozenset()
    """Departments of this level that have a feedback topic."""
    on_quality: Callable[[int, Mapping[QualityKey, tuple[int, int]], set[str]], None] = (
        lambda now_ms, counts, published: None
    )
    """Called after each committed batch with the quality counts of the records that entered
    here, and the resources published here (the quality ledger, metrics, accessibility)."""


RATE_WINDOW_S = 10.0


@dataclass(slots=True)
class LinkTotals:
    """Running totals of a link (heartbeats aside), for the cascade page and heartbeats.

    The link samples them as batches commit, so rates are right whenever they are asked for.
    """

    records_in: int = 0
    copies_out: int = 0
    refused: int = 0
    refused_by: dict[str, int] = field(default_factory=dict)
    _samples: deque[tuple[float, int, int, int]] = field(default_factory=deque)

    def sample(self, now: float) -> None:
        """Remember the totals at ``now`` (at most one sample a second, ten seconds' worth)."""
        samples = self._samples
        if samples and now - samples[-1][0] < 1.0:
            samples.pop()
        samples.append((now, self.records_in, self.copies_out, self.refused))
        while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW_S:
            samples.popleft()

    def rates(self, now: float) -> tuple[float, float, float]:
        """Return records in, copies out and refusals per second over about ten seconds."""
        if not self._samples:
            return 0.0, 0.0, 0.0
        then, into, out, refused = next(
            (s for s in reversed(self._samples) if s[0] <= now - RATE_WINDOW_S), self._samples[0]
        )
        span = now - then
        if span <= 0:
            return 0.0, 0.0, 0.0
        return (
            (self.records_in - into) / span, (self.copies_out - out) / span,
            (self.refused - refused) / span,
        )  # fmt: skip


@dataclass(slots=True)
class _Summary:
    """What one delivered batch amounted to, applied to metrics and watchers once committed."""

    records: int
    copies: int
    refused: int
    counts: dict[Direction | Reason, int]
    oldest_created: dict[Direction, int]
    oldest_written_ms: int | None
    tally: Tally
    peers_in: dict[str, list[int]]  # peer -> [records, bytes]
    peers_out: dict[str, list[int]]
    from_children: dict[str, list[int]]  # child -> creation times of records it sent up
    sent_up: list[int]  # creation times of the copies sent up
    beats: list[Beat]
    feedback: list[Event]
    quality: dict[QualityKey, tuple[int, int]]  # records checked and failed here, at entry
    published: set[str]  # resources of which a fresh record entered here


@dataclass(slots=True)
class _InFlight:
    batch: Batch
    task: asyncio.Task[_Summary]
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
    ) -> None:
        self.name = name
        self.totals = LinkTotals()
        self.totals.sample(clock())
        self._source = source
        self._router = router
        self._policy = policy
        self._to = destinations
        self._metrics = metrics
        self._health = health
        self._settings = settings
        self._decider = Decider(
            router, policy, arrival, schemas, validate_ingress=settings.validate_ingress
        )
        self._backoff = Backoff(settings.retry_backoff_s, settings.max_backoff_s)
        self._clock = clock
        self._stopping = asyncio.Event()
        self._last_turn: asyncio.Future[None] | None = None  # the latest batch's refusal turn
        self._log = log.bind(link=name, topic=source.topic, peer=peer)
        # label children resolved once: .labels() per record costs more than the count itself
        self._records_in = metrics.records_in.labels(name)
        self._routing_seconds = metrics.routing_seconds.labels(name)
        self._counters: dict[Direction | Reason, Any] = {
            **{d: metrics.records_out.labels(name, d.value) for d in Direction},
            **{r: metrics.records_refused.labels(name, r.value) for r in Reason},
        }
        self._record_age = {d: metrics.record_age.labels(d.value) for d in Direction}
        self._hop_seconds = metrics.hop_seconds.labels(name)
        self._node_seconds = metrics.node_seconds.labels(name)
        topology = router.topology
        self._region = topology.region
        self._arrival = arrival
        self._watch = watch or Watch(PeerWatch(
            topology, int(clock() * 1000), 5.0, bucket_s=60, keep=30, settle_s=120
        ))  # fmt: skip
        self._role = CHILD if arrival is Arrival.FROM_BELOW else PARENT
        self._corrects = arrival is Arrival.FROM_BELOW and self._watch.feedback is not None
        self._peer_labels = {*topology.children, topology.region}
        if topology.parent is not None:
            self._peer_labels.add(topology.parent)
        self._names: dict[bytes | None, str] = {}  # decoded header values of delivered records

    def lag_by_partition(self) -> dict[int, int]:
        """Return the source's lag in records per partition, as last seen (no I/O)."""
        return self._source.lag_by_partition()

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
                if sum(f.size for f in in_flight) < self._settings.max_in_flight_bytes:
                    batch = await self._source.fetch()
                    if batch:
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
        finally:
            if in_flight:
                await self._abandon(in_flight)
            await self._source.stop()
            emit(self._log, LinkStopped())

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
            in_flight.popleft()
            await self._commit(oldest.batch, summary)
            self._node_seconds.observe(time.monotonic() - oldest.fetched)
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

    async def _commit(self, batch: Batch, summary: _Summary) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        committed = await self._source.commit(offsets)
        self._apply(summary)
        if not self._health.is_up(self.name):
            state = self._health.snapshot().get(self.name)
            emit(self._log, LinkUp(round(self._clock() - state.since, 3) if state else None))
            self._health.up(self.name)
        self._backoff.reset()
        emit(self._log, BatchDone(
            summary.records, summary.copies, summary.refused,
            {f"{tp.partition}": [batch[tp][0].offset, o - 1] for tp, o in offsets.items()},
            committed,
        ))  # fmt: skip

    async def _deliver(
        self, batch: Batch, after: asyncio.Future[None] | None, turn: asyncio.Future[None]
    ) -> _Summary:
        """Decide a batch and deliver every copy, then every refusal; raise TransportError.

        Refusals are written in one call, in source order, once the copies' rejections are
        known, and only after the previous batch's refusals (``after``), so the refusal topic
        keeps the order of the source; ``turn`` tells the next batch it may write its own.
        """
        try:
            records = [record for part in batch.values() for record in part]
            began = time.perf_counter()
            outcomes, facts, aside = self._decide(records)
            pending = self._messages(records, outcomes, facts)
            pending += aside.outs
            self._routing_seconds.observe(time.perf_counter() - began)

            rejected = await self._send_copies(pending)
            for index, error in rejected.items():
                out = pending[index]
                refused = Refused(Reason.UNDELIVERABLE, str(error))
                message = out.message
                refusal = self._refusal(message.key, message.value, message.headers, refused)
                pending[index] = _Out(refusal, self._to.local, refused.reason, out.facts, "")
            if after is not None:
                await asyncio.shield(after)
            refusals = [out.message for out in pending if out.kind.__class__ is Reason]
            if refusals:
                results = await self._to.local.deliver(refusals, substitute=_stub)
                if any(result is not None for result in results):
                    raise TransportError(
                        f"{self._to.local_topics.refused} cannot take even a refusal stub; "
                        "raise its max.message.bytes"
                    )
            return self._summarize(records, facts, pending, aside)
        finally:
            if not turn.done():
                turn.set_result(None)

    def _decide(
        self, records: Sequence[Record]
    ) -> tuple[list[Outcome | None], list[Facts], _Aside]:
        """Decide the data records; take heartbeats and feedback aside (outcome None) or refuse.

        On the link from below, a record published here that corrects a report (``cx-corrects``)
        and passes the rules also makes the report's ``corrected`` status.
        """
        aside = _Aside()
        if not any(_is_aside(record.headers) for record in records):
            decided, all_facts = self._decider.decide(records, now_ms=self._now_ms())
            outcomes = list[Outcome | None](decided)
            if self._corrects:
                self._correct(records, outcomes, all_facts, aside)
            return outcomes, all_facts, aside
        data = [record for record in records if not _is_aside(record.headers)]
        decided, data_facts = self._decider.decide(data, now_ms=self._now_ms())
        decisions, facts_of = iter(decided), iter(data_facts)
        outcomes = []
        facts: list[Facts] = []
        for record in records:
            if not _is_aside(record.headers):
                outcomes.append(next(decisions))
                facts.append(next(facts_of))
                continue
            facts.append(_NO_FACTS)
            if record.headers[0][0] == FEEDBACK:
                outcomes.append(self._take(record, aside))
                continue
            try:
                beat = decode(record.value)
            except EnvelopeError as error:
                outcomes.append(Refused(Reason.BAD_ENVELOPE, str(error)))
                continue
            problem = self._watch.peers.sender_problem(beat, self._role)
            if problem is not None:
                outcomes.append(Refused(Reason.BAD_ENVELOPE, problem))
                continue
            aside.beats.append(beat)
            outcomes.append(None)
        if self._corrects:
            self._correct(records, outcomes, facts, aside)
        return outcomes, facts, aside

    def _take(self, record: Record, aside: _Aside) -> Refused | None:
        """Check a feedback record and route it one hop (into ``aside``); or refuse it."""
        book = self._watch.feedback
        if book is None:
            return Refused(Reason.BAD_ENVELOPE, "this link takes no correction feedback")
        hops = next((value for name, value in record.headers if name == HOPS), None)
        taken = take(
            record.headers[0][1], record.value, hops, self._arrival, self._router.topology,
            self._policy.snapshot.catalog, book, self._watch.feedback_departments,
        )  # fmt: skip
        if isinstance(taken, Refused):
            return taken
        self._send_feedback(taken, record.value or b"", aside)
        aside.taken += 1
        return None

    def _correct(
        self,
        records: Sequence[Record],
        outcomes: list[Outcome | None],
        facts: Sequence[Facts],
        aside: _Aside,
    ) -> None:
        """Make the ``corrected`` status of each correction published here that passed."""
        book = self._watch.feedback
        assert book is not None
        topology = self._router.topology
        now_ms = int(self._clock() * 1000)
        for index, (record, fact) in enumerate(zip(records, facts, strict=True)):
            if fact.hops != b"" or not isinstance(outcomes[index], Delivered):
                continue  # only records published here, and only those the rules let pass
            made = correction(record.headers, topology, book, now_ms)
            if made is None:
                continue
            routed = made if isinstance(made, Refused) else forward(made, b"", topology)
            if isinstance(routed, Refused):
                outcomes[index] = routed
                continue
            self._send_feedback(routed, routed.event.encode(), aside)

    def _send_feedback(self, routed: Forward, value: bytes, aside: _Aside) -> None:
        """Queue feedback one hop on, and into this node's feedback topic."""
        event = routed.event
        key, headers = key_of(event), [(FEEDBACK, kind_of(event)), (HOPS, routed.hops)]
        sink, topic = self._to.feedback(routed.way, routed.region, routed.department)
        direction = _WAY_DIRECTION[routed.way]
        aside.outs.append(_Out(Message(topic, key, value, headers), sink, direction, _NO_FACTS,
                               routed.region))  # fmt: skip
        logged = Message(self._to.local_topics.feedback, key, value, headers)
        aside.outs.append(_Out(logged, self._to.local, Direction.LOCAL, _NO_FACTS, "feedback"))
        aside.events.append(event)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _summarize(
        self,
        records: Sequence[Record],
        facts: Sequence[Facts],
        pending: Sequence[_Out],
        aside: _Aside,
    ) -> _Summary:
        """Count what a delivered batch amounted to (applied only once it is committed)."""
        counts: dict[Direction | Reason, int] = {}
        oldest: dict[Direction, int] = {}
        tally: Tally = {}
        peers_out: dict[str, list[int]] = {}
        sent_up: list[int] = []
        names = self._names
        for out in pending:
            kind = out.kind
            if out.facts is _NO_FACTS and kind.__class__ is Direction:
                continue  # feedback going on: not a record exchanged
            counts[kind] = counts.get(kind, 0) + 1
            if kind.__class__ is not Direction:
                continue
            created = out.facts.created_ms
            if created >= 0 and created < oldest.get(kind, created + 1):
                oldest[kind] = created
            if kind is Direction.UP:
                sent_up.append(created)
            size = len(out.message.value or b"")
            resource, dept = out.facts.resource, out.facts.source_dept
            if resource not in names:
                names[resource] = (resource or b"").decode(errors="replace")
            if dept not in names:
                names[dept] = (dept or b"").decode(errors="replace")
            key = TallyKey(kind.value, names[dept], names[resource], out.destination)
            tally_add(tally, key, size)
            towards = self._region if kind is Direction.LOCAL else out.destination
            line = peers_out.setdefault(towards, [0, 0])
            line[0] += 1
            line[1] += size
        peers_in, from_children = self._arrivals(records, facts)
        refused = sum(n for kind, n in counts.items() if kind.__class__ is Reason)
        copies = sum(n for kind, n in counts.items() if kind.__class__ is Direction)
        written = [record.timestamp for record in records if record.timestamp >= 0]
        quality, published = _quality_counts(facts)
        return _Summary(
            len(records) - len(aside.beats) - aside.taken, copies, refused, counts, oldest,
            min(written) if written else None, tally, peers_in, peers_out, from_children, sent_up,
            aside.beats, aside.events, quality, published,
        )  # fmt: skip

    def _arrivals(
        self, records: Sequence[Record], facts: Sequence[Facts]
    ) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """Count records and bytes per peer they came from; note children's creation times."""
        peers_in: dict[str, list[int]] = {}
        from_children: dict[str, list[int]] = {}
        from_above = self._arrival is Arrival.FROM_ABOVE
        parent = self._watch.peers.parent or self._region
        for record, fact in zip(records, facts, strict=True):
            if fact is _NO_FACTS:
                continue  # a heartbeat, counted on its own
            hops = fact.hops
            if from_above:
                peer = parent
            elif hops:
                last = hops.rpartition(b",")[2]
                peer = last[:-1].decode(errors="replace")
                if peer not in self._peer_labels:
                    peer = "other"
                elif last.endswith(b"^"):
                    from_children.setdefault(peer, []).append(fact.created_ms)
            else:
                peer = self._region
            line = peers_in.setdefault(peer, [0, 0])
            line[0] += 1
            line[1] += len(record.value or b"")
        return peers_in, from_children

    def _apply(self, summary: _Summary) -> None:
        """Apply a committed batch's summary to the metrics, the totals and the watchers."""
        now_ms = int(self._clock() * 1000)
        metrics, totals = self._metrics, self.totals
        self._records_in.inc(summary.records)
        totals.records_in += summary.records
        totals.copies_out += summary.copies
        totals.refused += summary.refused
        for kind, count in summary.counts.items():
            self._counters[kind].inc(count)
            if kind.__class__ is Reason:
                totals.refused_by[kind.value] = totals.refused_by.get(kind.value, 0) + count
        for direction, created in summary.oldest_created.items():
            self._record_age[direction].observe(max(0.0, now_ms - created) / 1000)
        if summary.oldest_written_ms is not None:
            self._hop_seconds.observe(max(0.0, now_ms - summary.oldest_written_ms) / 1000)
        label = self._watch.resource_label
        for key, (records, size) in summary.tally.items():
            resource = label(key.resource)
            metrics.resource_records.labels(resource, key.direction).inc(records)
            metrics.resource_bytes.labels(resource, key.direction).inc(size)
        for way, lines in (("in", summary.peers_in), ("out", summary.peers_out)):
            for peer, (records, size) in lines.items():
                metrics.peer_records.labels(peer, way).inc(records)
                metrics.peer_bytes.labels(peer, way).inc(size)
        peers = self._watch.peers
        for child, times in summary.from_children.items():
            peers.received_from(child, times, now_ms)
        if summary.sent_up:
            peers.sent_up.add(summary.sent_up, now_ms)
        for beat in summary.beats:
            peers.heard(beat, now_ms)
        self._remember(summary.feedback)
        totals.sample(now_ms / 1000)
        if summary.tally:
            self._watch.on_tally(now_ms, summary.tally)
        if summary.quality or summary.published:
            self._watch.on_quality(now_ms, summary.quality, summary.published)

    def _remember(self, events: Sequence[Event]) -> None:
        """Add committed feedback to the node's book (the store will read it again: no harm)."""
        book = self._watch.feedback
        if book is not None:
            for event in events:
                book.add(event)

    def _messages(
        self, records: Sequence[Record], outcomes: Sequence[Outcome | None], facts: Sequence[Facts]
    ) -> list[_Out]:
        pending: list[_Out] = []
        partitions = self._source.partition_count()
        parent = self._watch.peers.parent or ""
        for record, outcome, fact in zip(records, outcomes, facts, strict=True):
            origin = None if partitions is None else (record.partition, partitions)
            if isinstance(outcome, Delivered):
                base = [h for h in record.headers if h[0] != HOPS]
                if outcome.annotations:  # they replace what the record says under their names
                    replaced = {name for name, _ in outcome.annotations}
                    base = [h for h in base if h[0] not in replaced] + list(outcome.annotations)
                for copy in outcome.copies:
                    sink, topic = self._to.route(copy)
                    headers = [*base, (HOPS, copy.hops)]
                    value = record.value
                    if copy.items is not None:
                        value = copy.value
                        headers.append((PROJECTION, ",".join(copy.items).encode()))
                    message = Message(topic, record.key, value, headers, origin)
                    direction = copy.direction
                    if direction is Direction.LOCAL:
                        destination = copy.department or "inbox"
                    else:
                        destination = parent if direction is Direction.UP else copy.region
                    pending.append(_Out(message, sink, direction, fact, destination))
                for copy, refused in outcome.withheld:
                    pending.append(self._refusal_of(record, refused, fact, copy))
            elif outcome is not None:  # None: a heartbeat or feedback, taken by the link itself
                pending.append(self._refusal_of(record, outcome, fact))
        return pending

    def _refusal_of(
        self, record: Record, refused: Refused, facts: Facts, copy: Copy | None = None
    ) -> _Out:
        headers = list(record.headers)
        if copy is not None:
            where = f"{copy.direction.value}:{copy.region}"
            if copy.department is not None:
                where += f"/{copy.department}"
            headers.append((REFUSED_COPY, where.encode()))
        message = self._refusal(record.key, record.value, headers, refused)
        return _Out(message, self._to.local, refused.reason, facts, "")

    def _refusal(
        self, key: bytes | None, value: bytes | None, headers: Sequence[Header], refused: Refused
    ) -> Message:
        region = self._router.topology.region
        extra = [
            (REFUSAL_REASON, refused.reason.value.encode()),
            (REFUSAL_MESSAGE, refused.message.encode()),
            (REFUSED_BY, f"{region}/{self.name}".encode()),
        ]
        return Message(self._to.local_topics.refused, key, value, [*headers, *extra])

    async def _send_copies(self, pending: Sequence[_Out]) -> dict[int, RecordRejected]:
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


def _quality_counts(facts: Sequence[Facts]) -> tuple[dict[QualityKey, tuple[int, int]], set[str]]:
    """Count records checked and failed per resource, department and dimension, at entry.

    Also return the resources of which a fresh record was admitted (for accessibility).
    """
    counts: dict[QualityKey, tuple[int, int]] = {}
    published: set[str] = set()
    for fact in facts:
        verdict = fact.quality
        if verdict is None:
            continue
        resource = (fact.resource or b"").decode(errors="replace")
        dept = (fact.source_dept or b"").decode(errors="replace")
        if not verdict.refused:
            published.add(resource)
        failed = verdict.failed_dimensions
        for dimension in verdict.checked:
            key = QualityKey(resource, dept, dimension.value)
            checked, failures = counts.get(key, (0, 0))
            counts[key] = (checked + 1, failures + (dimension in failed))
    return counts, published


def _stub(message: Message, rejected: RecordRejected) -> Message:
    """Make a bounded stand-in for a refusal too large to write: envelope, reason, digest."""
    value = message.value or b""
    keep = {*ENVELOPE_HEADERS, REFUSAL_REASON, REFUSED_BY, REFUSED_COPY}
    headers = [(name, data[:STUB_HEADER_BYTES]) for name, data in message.headers if name in keep]
    said = b"; ".join(data for name, data in message.headers if name == REFUSAL_MESSAGE)
    headers += [
        (REFUSED_SIZE, str(len(value)).encode()),
        (REFUSED_SHA256, hashlib.sha256(value).hexdigest().encode()),
        (REFUSAL_MESSAGE, f"stub, the full refusal was too large ({rejected}); ".encode()[:512]
         + said[:STUB_HEADER_BYTES]),
    ]  # fmt: skip
    key = message.key[:STUB_HEADER_BYTES] if message.key else message.key
    return Message(message.topic, key, None, headers)
