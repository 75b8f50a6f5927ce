"""What a link takes aside instead of routing: neighbours' heartbeats and correction feedback.

A record whose first header is ``cx-heartbeat`` or ``cx-feedback`` is not decided by the rules
(``is_aside``). A heartbeat is checked against the role of the link it came by and kept for the
peer watch; feedback is checked, routed one hop on and logged to this node's feedback topic. On the
link from below, a record published here that corrects a report and passes the rules also makes
the report's ``corrected`` status (``AsideTaker.correct``).

What is taken is gathered in an ``Aside`` per batch: the beats heard, the feedback messages to
produce, the feedback events. Nothing here produces, awaits or changes a book: the link delivers
the messages, and the beats and events are noted only once the batch is committed
(``node.kafka.accounting``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from node.core.decision import Facts
from node.core.envelope import HOPS
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
from node.core.outcome import Delivered, Direction, Outcome, Reason, Refused
from node.core.peers import PeerWatch
from node.core.policy import Policy
from node.core.routing import Arrival
from node.core.topology import Topology
from node.errors import EnvelopeError
from node.kafka.messages import NO_FACTS, Destinations, Out
from node.transport import Clock, Header, Message, Record

_ASIDE = frozenset({HEARTBEAT, FEEDBACK})
_WAY_DIRECTION = {Way.UP: Direction.UP, Way.DOWN: Direction.DOWN, Way.HERE: Direction.LOCAL}


def is_aside(headers: Sequence[Header]) -> bool:
    """Whether the link takes a record aside (a heartbeat or feedback: the first header says)."""
    return bool(headers) and headers[0][0] in _ASIDE


@dataclass(slots=True)
class Aside:
    """What a batch holds besides data records: heartbeats, feedback to forward and log."""

    beats: list[Beat] = field(default_factory=list)
    outs: list[Out] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    taken: int = 0  # feedback records accepted (not counted as records in)


class AsideTaker:
    """Takes one link's heartbeats and feedback aside, and makes corrections' statuses."""

    def __init__(
        self,
        destinations: Destinations,
        *,
        arrival: Arrival,
        topology: Topology,
        policy: Policy,
        peers: PeerWatch,
        role: str,
        book: FeedbackBook | None,
        departments: frozenset[str],
        clock: Clock,
    ) -> None:
        self._to = destinations
        self._arrival = arrival
        self._topology = topology
        self._policy = policy
        self._peers = peers
        self._role = role
        self._book = book
        self._departments = departments
        self._clock = clock
        self.corrects = arrival is Arrival.FROM_BELOW and book is not None
        """Whether records published here may correct a report (the link from below)."""

    def take(self, record: Record, aside: Aside) -> Refused | None:
        """Take a heartbeat or feedback record into ``aside`` (outcome None), or refuse it."""
        if record.headers[0][0] == FEEDBACK:
            return self._feedback(record, aside)
        try:
            beat = decode(record.value)
        except EnvelopeError as error:
            return Refused(Reason.BAD_ENVELOPE, str(error))
        problem = self._peers.sender_problem(beat, self._role)
        if problem is not None:
            return Refused(Reason.BAD_ENVELOPE, problem)
        aside.beats.append(beat)
        return None

    def _feedback(self, record: Record, aside: Aside) -> Refused | None:
        """Check a feedback record and route it one hop (into ``aside``); or refuse it."""
        book = self._book
        if book is None:
            return Refused(Reason.BAD_ENVELOPE, "this link takes no correction feedback")
        hops = next((value for name, value in record.headers if name == HOPS), None)
        taken = take(
            record.headers[0][1], record.value, hops, self._arrival, self._topology,
            self._policy.snapshot.catalog, book, self._departments,
        )  # fmt: skip
        if isinstance(taken, Refused):
            return taken
        self._send(taken, record.value or b"", aside)
        aside.taken += 1
        return None

    def correct(
        self,
        records: Sequence[Record],
        outcomes: list[Outcome | None],
        facts: Sequence[Facts],
        aside: Aside,
    ) -> None:
        """Make the ``corrected`` status of each correction published here that passed.

        A correction that cannot be made or routed replaces the record's outcome with its
        refusal. Call only when ``corrects``.
        """
        book = self._book
        assert book is not None
        topology = self._topology
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
            self._send(routed, routed.event.encode(), aside)

    def _send(self, routed: Forward, value: bytes, aside: Aside) -> None:
        """Queue feedback one hop on, and into this node's feedback topic."""
        event = routed.event
        key, headers = key_of(event), [(FEEDBACK, kind_of(event)), (HOPS, routed.hops)]
        sink, topic = self._to.feedback(routed.way, routed.region, routed.department)
        direction = _WAY_DIRECTION[routed.way]
        aside.outs.append(Out(Message(topic, key, value, headers), sink, direction, NO_FACTS,
                              routed.region))  # fmt: skip
        logged = Message(self._to.local_topics.feedback, key, value, headers)
        aside.outs.append(Out(logged, self._to.local, Direction.LOCAL, NO_FACTS, "feedback"))
        aside.events.append(event)
