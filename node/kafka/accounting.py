"""What a link's committed batch amounted to, told to the metrics, the totals and the watchers.

The link summarizes each delivered batch over the messages it produced (``Accountant.summarize``)
and applies the summary only once the batch is committed (``Accountant.apply``), so a batch that
is abandoned and retried is never counted twice. Applying it moves the record, copy and refusal
counters, record ages and hop time, per-resource and per-peer traffic, the running ``LinkTotals``
(with the samples their rates come from), and tells the watchers (``Watch``): heartbeats heard,
committed feedback, the statistics ledger and the quality ledger.

It does no I/O and never awaits; it decides nothing and builds no message.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from node.core.audit import Fact as AuditFact
from node.core.decision import Facts
from node.core.feedback import Event, FeedbackBook
from node.core.heartbeat import Beat
from node.core.outcome import Direction, Reason
from node.core.peers import PeerWatch
from node.core.quality_ledger import QualityKey
from node.core.routing import Arrival
from node.core.tally import Tally, TallyKey
from node.core.tally import add as tally_add
from node.core.topology import Topology
from node.kafka.aside import Aside
from node.kafka.audit import audit_facts
from node.kafka.messages import NO_FACTS, Out
from node.ops.metrics import Metrics
from node.transport import Clock, Record


class Gate(Protocol):
    """What holds the links while records must not move (a fail-closed audit trail)."""

    def is_open(self) -> bool:
        """Tell whether the link may fetch a new batch now."""
        ...

    async def wait_open(self, stopping: asyncio.Event) -> None:
        """Return once the link may fetch again, or ``stopping`` is set."""
        ...

    def why_closed(self) -> str:
        """Say why the link may not fetch (``""`` when it may)."""
        ...

    def hand_over(self, facts: Sequence[AuditFact]) -> asyncio.Future[None]:
        """Take a delivered batch's audit facts; the future is done once they are written."""
        ...


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
    on_audit: Callable[[Sequence[AuditFact]], None] | None = None
    """Called after each committed batch with an audit fact per copy and per refusal (the audit
    trail); None: no facts are made."""
    gate: Gate | None = None
    """A fail-closed audit trail: asked before each fetch, handed each delivered batch's audit
    facts (the batch is committed once they are written); None: always fetch."""
    hand_on: Callable[[str, Summary], None] | None = None
    """A worker process's: takes each committed batch's summary (with the link's name) to the
    lead, which applies it (``node/workers.py``); None: applied here."""


RATE_WINDOW_S = 10.0
SENDERS_KEPT = 10_000
"""Last hops of arriving records remembered with their peer label; past it they are cleared."""
RESOURCE_CHILDREN_KEPT = 20_000
"""Metric children per (resource label, direction) kept resolved; past it they are resolved anew."""


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
class Summary:
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
    audit: list[AuditFact] = field(default_factory=list)  # one per copy and refusal, if watched
    audited: asyncio.Future[None] | None = None
    """Done once ``audit`` is written (handed to a fail-closed gate); None: told at commit."""
    routing_s: float = 0.0
    """Time the link took to decide the batch."""
    node_s: float = 0.0
    """Time from the batch's fetch to the last ack of its copies."""

    def __reduce__(self) -> tuple[Callable[..., Summary], tuple[Any, ...]]:
        """Pickle (a worker's hand-over to the lead) with the audit facts as plain tuples.

        A named tuple pickles through a Python call of its own: 0.91 µs a fact against 0.34.
        """
        values = [getattr(self, name) for name in _SUMMARY_FIELDS]
        values[_AUDIT_AT] = list(map(tuple, self.audit))
        return _unpickled_summary, tuple(values)


def _unpickled_summary(*values: Any) -> Summary:
    """Rebuild a pickled ``Summary``, its audit facts named tuples again."""
    summary = Summary(*values)
    summary.audit = list(map(_as_fact, summary.audit))
    return summary


_SUMMARY_FIELDS = tuple(f.name for f in fields(Summary))
_AUDIT_AT = _SUMMARY_FIELDS.index("audit")
_as_fact = functools.partial(tuple.__new__, AuditFact)


class Accountant:
    """Summarizes one link's delivered batches and applies them once committed."""

    def __init__(
        self,
        name: str,
        metrics: Metrics,
        totals: LinkTotals,
        watch: Watch,
        *,
        arrival: Arrival,
        topology: Topology,
        clock: Clock,
    ) -> None:
        self._name = name
        self._metrics = metrics
        self._totals = totals
        self._watch = watch
        self._arrival = arrival
        self._region = topology.region
        self._clock = clock
        # label children resolved once: .labels() per record costs more than the count itself
        self._records_in = metrics.records_in.labels(name)
        self._counters: dict[Direction | Reason, Any] = {
            **{d: metrics.records_out.labels(name, d.value) for d in Direction},
            **{r: metrics.records_refused.labels(name, r.value) for r in Reason},
        }
        self._record_age = {d: metrics.record_age.labels(d.value) for d in Direction}
        self._hop_seconds = metrics.hop_seconds.labels(name)
        self._routing_seconds = metrics.routing_seconds.labels(name)
        self._node_seconds = metrics.node_seconds.labels(name)
        self._resource_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._peer_labels = {*topology.children, topology.region}
        if topology.parent is not None:
            self._peer_labels.add(topology.parent)
        self._names: dict[bytes | None, str] = {}  # decoded header values of delivered records
        self._senders: dict[bytes, tuple[str, bool]] = {}  # last hop -> (peer label, handed up)

    def summarize(
        self,
        records: Sequence[Record],
        facts: Sequence[Facts],
        pending: Sequence[Out],
        aside: Aside,
    ) -> Summary:
        """Count what a delivered batch amounted to (applied only once it is committed)."""
        counts: dict[Direction | Reason, int] = {}
        oldest: dict[Direction, int] = {}
        sent_up: list[int] = []
        lines: dict[tuple[Direction, bytes | None, bytes | None, str], list[int]] = {}
        for out in pending:
            kind = out.kind
            if not isinstance(kind, Direction):
                counts[kind] = counts.get(kind, 0) + 1
                continue
            fact = out.facts
            if fact is NO_FACTS:
                continue  # feedback going on: not a record exchanged
            counts[kind] = counts.get(kind, 0) + 1
            created = fact.created_ms
            if created >= 0 and created < oldest.get(kind, created + 1):
                oldest[kind] = created
            if kind is Direction.UP:
                sent_up.append(created)
            size = len(out.message.value or b"")
            raw = (kind, fact.source_dept, fact.resource, out.destination)
            line = lines.get(raw)
            if line is None:
                lines[raw] = [1, size]
            else:
                line[0] += 1
                line[1] += size
        tally, peers_out = self._tallied(lines)
        peers_in, from_children = self._arrivals(records, facts)
        refused = sum(n for kind, n in counts.items() if kind.__class__ is Reason)
        copies = sum(n for kind, n in counts.items() if kind.__class__ is Direction)
        written = [record.timestamp for record in records if record.timestamp >= 0]
        quality, published = _quality_counts(facts)
        summary = Summary(
            len(records) - len(aside.beats) - aside.taken, copies, refused, counts, oldest,
            min(written) if written else None, tally, peers_in, peers_out, from_children, sent_up,
            aside.beats, aside.events, quality, published,
        )  # fmt: skip
        if self._watch.on_audit is not None:
            summary.audit = audit_facts(pending, int(self._clock() * 1000))
        return summary

    def _tallied(
        self, lines: dict[tuple[Direction, bytes | None, bytes | None, str], list[int]]
    ) -> tuple[Tally, dict[str, list[int]]]:
        """Turn copies and bytes per raw tally line into the tally and the lines per peer."""
        tally: Tally = {}
        peers_out: dict[str, list[int]] = {}
        for (direction, dept, resource, destination), (copies, size) in lines.items():
            key = TallyKey(
                direction.value, self._decoded(dept), self._decoded(resource), destination
            )
            tally_add(tally, key, copies, size)
            towards = self._region if direction is Direction.LOCAL else destination
            tally_add(peers_out, towards, copies, size)
        return tally, peers_out

    def _decoded(self, raw: bytes | None) -> str:
        """Decode a header value (remembered: resources and departments of delivered copies)."""
        name = self._names.get(raw)
        if name is None:
            name = self._names[raw] = (raw or b"").decode(errors="replace")
        return name

    def _arrivals(
        self, records: Sequence[Record], facts: Sequence[Facts]
    ) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """Count records and bytes per peer they came from; note children's creation times."""
        peers_in: dict[str, list[int]] = {}
        from_children: dict[str, list[int]] = {}
        from_above = self._arrival is Arrival.FROM_ABOVE
        parent = self._watch.peers.parent or self._region
        senders: dict[bytes | None, tuple[str, bool]] = {}  # hop path -> sender (paths repeat)
        for record, fact in zip(records, facts, strict=True):
            if fact is NO_FACTS:
                continue  # a heartbeat, counted on its own
            hops = fact.hops
            if from_above:
                peer = parent
            elif hops:
                said = senders.get(hops)
                if said is None:
                    said = senders[hops] = self._sender(hops.rpartition(b",")[2])
                peer, handed_up = said
                if handed_up:
                    from_children.setdefault(peer, []).append(fact.created_ms)
            else:
                peer = self._region
            line = peers_in.get(peer)
            if line is None:
                line = peers_in[peer] = [0, 0]
            line[0] += 1
            line[1] += len(record.value or b"")
        return peers_in, from_children

    def _sender(self, last: bytes) -> tuple[str, bool]:
        """Return the peer label of a hop path's last step, and whether a child handed it up."""
        found = self._senders.get(last)
        if found is None:
            if len(self._senders) >= SENDERS_KEPT:  # writers choose hop paths: stay bounded
                self._senders.clear()
            peer = last[:-1].decode(errors="replace")
            known = peer in self._peer_labels
            found = self._senders[last] = (peer if known else "other", known and last[-1:] == b"^")
        return found

    def apply(self, summary: Summary) -> None:
        """Apply a committed batch's summary to the metrics, the totals and the watchers.

        In a worker process, hand it to the lead instead (``Watch.hand_on``).
        """
        if self._watch.hand_on is not None:
            self._watch.hand_on(self._name, summary)
            return
        now_ms = int(self._clock() * 1000)
        metrics, totals = self._metrics, self._totals
        self._routing_seconds.observe(summary.routing_s)
        self._node_seconds.observe(summary.node_s)
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
        self._count_resources(summary.tally)
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
        self._tell(now_ms, summary)

    def _count_resources(self, tally: Tally) -> None:
        """Add a batch's records and bytes per resource label and direction to the metrics."""
        metrics = self._metrics
        label = self._watch.resource_label
        per_label: dict[tuple[str, str], list[int]] = {}
        for key, (records, size) in tally.items():
            line = per_label.setdefault((label(key.resource), key.direction), [0, 0])
            line[0] += records
            line[1] += size
        children = self._resource_children
        if len(children) > RESOURCE_CHILDREN_KEPT:
            children.clear()
        for labels, (records, size) in per_label.items():
            child = children.get(labels)
            if child is None:  # .labels() costs about a microsecond: resolve each pair once
                child = children[labels] = (
                    metrics.resource_records.labels(*labels),
                    metrics.resource_bytes.labels(*labels),
                )
            child[0].inc(records)
            child[1].inc(size)

    def _tell(self, now_ms: int, summary: Summary) -> None:
        """Hand the watchers what the batch exchanged: statistics, quality, audit facts."""
        if summary.tally:
            self._watch.on_tally(now_ms, summary.tally)
        if summary.quality or summary.published:
            self._watch.on_quality(now_ms, summary.quality, summary.published)
        if summary.audit and summary.audited is None and self._watch.on_audit is not None:
            self._watch.on_audit(summary.audit)

    def _remember(self, events: Sequence[Event]) -> None:
        """Add committed feedback to the node's book (the store will read it again: no harm)."""
        book = self._watch.feedback
        if book is not None:
            for event in events:
                book.add(event)


def _quality_counts(facts: Sequence[Facts]) -> tuple[dict[QualityKey, tuple[int, int]], set[str]]:
    """Count records checked and failed per resource, department and dimension, at entry.

    Also return the resources of which a fresh record was admitted (for accessibility). Records
    that pass share their rule set's verdict (``quality.check``): they are counted per verdict
    first, so a batch's passing records cost a count each, not a key per dimension.
    """
    verdicts: dict[tuple[bytes | None, bytes | None, int], list[Any]] = {}
    for fact in facts:
        verdict = fact.quality
        if verdict is None:
            continue
        kind = (fact.resource, fact.source_dept, id(verdict))  # kept alive by the group
        group = verdicts.get(kind)
        if group is None:
            verdicts[kind] = [verdict, 1]
        else:
            group[1] += 1
    counts: dict[QualityKey, tuple[int, int]] = {}
    published: set[str] = set()
    for (raw_resource, raw_dept, _), (verdict, records) in verdicts.items():
        resource = (raw_resource or b"").decode(errors="replace")
        dept = (raw_dept or b"").decode(errors="replace")
        if not verdict.refused:
            published.add(resource)
        failed = verdict.failed_dimensions
        for dimension in verdict.checked:
            key = QualityKey(resource, dept, dimension.value)
            checked, failures = counts.get(key, (0, 0))
            counts[key] = (checked + records, failures + records * (dimension in failed))
    return counts, published
