"""The messages a link produces for a decided batch: copies, refusals and refusal stubs.

Owns where each copy and each piece of feedback goes (``Destinations``), the headers a copy or a
refusal carries (``PROJECTION``, ``REFUSED_COPY``, the refusal envelope) and the bounded stub that
stands in for a refusal too large for the refusal topic (``stub``). Each message is paired with
what it means for the link's accounting (``Out``).

It only builds messages: it produces nothing, awaits nothing and counts nothing (the link in
``node.kafka.bridge`` delivers them, ``node.kafka.accounting`` counts them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from node.core.decision import Facts
from node.core.envelope import (
    ENVELOPE_HEADERS,
    HOPS,
    REFUSAL_MESSAGE,
    REFUSAL_REASON,
    REFUSED_BY,
)  # fmt: skip
from node.core.feedback import Way
from node.core.outcome import Copy, Delivered, Direction, Outcome, Reason, Refused
from node.core.provenance import PROVENANCE
from node.core.quoting import bounded
from node.errors import RecordRejected
from node.kafka.topics import TopicNames
from node.transport import Header, Message, Record, RecordSink

REFUSED_COPY = "cx-refused-copy"
PROJECTION = "cx-projection"
REFUSED_SIZE = "cx-refused-size"
REFUSED_SHA256 = "cx-refused-sha256"
STUB_HEADER_BYTES = 256
"""A refusal stub keeps each envelope header to this many bytes."""


@dataclass(frozen=True, slots=True)
class Destinations:
    """Where each direction's copies go: the link's own sinks and both clusters' topic names.

    What goes up is handed to the parent's ``up.REGION``, ``region`` being this node's.
    """

    local: RecordSink
    local_topics: TopicNames
    parent: RecordSink | None
    parent_topics: TopicNames | None
    region: str

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
        return self.parent, self.parent_topics.up(self.region)

    def feedback(self, way: Way, region: str, department: str | None) -> tuple[RecordSink, str]:
        """Return the sink and topic of feedback going ``way`` (to ``department`` if here)."""
        if way is Way.HERE:
            assert department is not None
            return self.local, self.local_topics.feedback_for(department)
        if way is Way.DOWN:
            return self.local, self.local_topics.down(region)
        if self.parent is None or self.parent_topics is None:
            raise AssertionError("feedback sent up from the root or from above")
        return self.parent, self.parent_topics.up(self.region)

    def sinks(self) -> list[RecordSink]:
        """Every sink of the link."""
        return [self.local] if self.parent is None else [self.local, self.parent]


class Out(NamedTuple):
    """One message to produce, with its sink and what it means for metrics and statistics."""

    message: Message
    sink: RecordSink
    kind: Direction | Reason  # direction of a copy, or the reason of a refusal
    facts: Facts
    destination: str  # parent or child region, department or ``inbox``; "" for a refusal


NO_FACTS = Facts(-1, None, None, None)
"""The facts of a record the link took aside (a heartbeat or feedback): nothing was decided."""


@dataclass(frozen=True, slots=True)
class Messages:
    """Makes one link's messages: copies of delivered records and refusals, to ``to``."""

    to: Destinations
    refused_by: bytes
    """The ``cx-refused-by`` value of this link's refusals: ``region/link``."""
    _where: dict[tuple[Direction, str, str | None, str], tuple[RecordSink, str, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """Sink, topic and destination name per copy target (bounded by the topology and config)."""

    def of_batch(
        self,
        records: Sequence[Record],
        outcomes: Sequence[Outcome | None],
        facts: Sequence[Facts],
        *,
        partitions: int | None,
        parent: str,
    ) -> list[Out]:
        """Return every copy and refusal of a decided batch, in source order.

        ``partitions`` is the source topic's partition count (None: unknown), so copies keep
        their source partition; ``parent`` names the destination of copies sent up.
        """
        pending: list[Out] = []
        append = pending.append
        new = tuple.__new__  # Message and Out from their fields in order: one is made per copy
        where = self._where
        for record, outcome, fact in zip(records, outcomes, facts, strict=True):
            origin = None if partitions is None else (record.partition, partitions)
            if isinstance(outcome, Delivered):
                headers = record.headers
                if headers and headers[-1][0] == HOPS:  # where writers put it; a delivered
                    base = headers[:-1]  # record has it once (doubles are refused)
                else:
                    base = [h for h in headers if h[0] != HOPS]
                if outcome.annotations:  # they replace what the record says under their names
                    replaced = {name for name, _ in outcome.annotations}
                    base = [h for h in base if h[0] not in replaced] + list(outcome.annotations)
                for copy in outcome.copies:
                    target = (copy.direction, copy.region, copy.department, parent)
                    found = where.get(target)
                    if found is None:
                        found = where[target] = self._destination(copy, parent)
                    sink, topic, destination = found
                    headers = [*base, (HOPS, copy.hops)]
                    value = record.value
                    if copy.items is not None:  # the signature covers the whole value: drop it
                        value = copy.value
                        headers = [h for h in headers if h[0] != PROVENANCE]
                        headers.append((PROJECTION, ",".join(copy.items).encode()))
                    message = new(Message, (topic, record.key, value, headers, origin))
                    append(new(Out, (message, sink, copy.direction, fact, destination)))
                for copy, refused in outcome.withheld:
                    pending.append(self.refusal_of(record, refused, fact, copy))
            elif outcome is not None:  # None: a heartbeat or feedback, taken by the link itself
                pending.append(self.refusal_of(record, outcome, fact))
        return pending

    def _destination(self, copy: Copy, parent: str) -> tuple[RecordSink, str, str]:
        """Return the sink, topic and destination name (region, department, inbox) of ``copy``."""
        sink, topic = self.to.route(copy)
        if copy.direction is Direction.LOCAL:
            return sink, topic, copy.department or "inbox"
        return sink, topic, parent if copy.direction is Direction.UP else copy.region

    def refusal_of(
        self, record: Record, refused: Refused, facts: Facts, copy: Copy | None = None
    ) -> Out:
        """Return the refusal of ``record`` (of its ``copy`` only, if given)."""
        headers = list(record.headers)
        if copy is not None:
            where = f"{copy.direction.value}:{copy.region}"
            if copy.department is not None:
                where += f"/{copy.department}"
            headers.append((REFUSED_COPY, where.encode()))
        message = self.refusal(record.key, record.value, headers, refused)
        return Out(message, self.to.local, refused.reason, facts, "")

    def undeliverable(self, out: Out, rejected: RecordRejected) -> Out:
        """Return the refusal of a copy its destination rejected for good."""
        refused = Refused(Reason.UNDELIVERABLE, str(rejected))
        message = out.message
        refusal = self.refusal(message.key, message.value, message.headers, refused)
        return Out(refusal, self.to.local, refused.reason, out.facts, "")

    def refusal(
        self, key: bytes | None, value: bytes | None, headers: Sequence[Header], refused: Refused
    ) -> Message:
        """Return a message to the refusal topic: the record with the refusal's headers added."""
        extra = [
            (REFUSAL_REASON, refused.reason.value.encode()),
            (REFUSAL_MESSAGE, bounded(refused.message).encode()),
            (REFUSED_BY, self.refused_by),
        ]
        return Message(self.to.local_topics.refused, key, value, [*headers, *extra])


def stub(message: Message, rejected: RecordRejected) -> Message:
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
