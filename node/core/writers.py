"""Writers who cannot lie: a record's writer is known from the topic it came from.

Each department of a level publishes to a topic of its own (``outbox.DEPT``) and each child's node
hands records up to one of its own (``up.CHILD``); Kafka ACLs let only that principal write it.
A record's headers must then agree with its topic's writer, or it is refused as ``forged``:

- from department ``DEPT``: a fresh record (empty hop path), ``cx-source-dept`` ``DEPT``,
  ``cx-source-region`` this node's region;
- from child ``C``: handed up by ``C`` (a hop path whose last hop is ``C^``), with a
  ``cx-source-region`` in ``C``'s subtree;
- heartbeats only from a child, in its own topic; feedback as records are: written fresh here by
  ``DEPT`` (the report's reporter, the rejection's department), or handed up by ``C`` from
  within its subtree.

A header that is missing, null (Kafka allows a null header value) or malformed is left to the
envelope checks (``bad_envelope``); only a value that disagrees with the topic is ``forged``.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from node.core.decision import Seen
from node.core.envelope import HOPS, SOURCE_DEPT, SOURCE_REGION
from node.core.feedback import FEEDBACK, Report
from node.core.feedback import decode as decode_feedback
from node.core.heartbeat import HEARTBEAT
from node.core.heartbeat import decode as decode_beat
from node.core.outcome import Reason, Refused
from node.core.quoting import quoted
from node.core.topology import contains
from node.errors import EnvelopeError

_HEADER = {name: f"header {name}" for name in (HOPS, SOURCE_DEPT, SOURCE_REGION)}
_MEMO_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Writer:
    """The one principal that may write a topic: a department of this level, or a child's node."""

    topic: str
    department: str | None = None
    child: str | None = None

    def __post_init__(self) -> None:
        if (self.department is None) == (self.child is None):
            raise ValueError(f"writer of {self.topic}: name a department or a child, not both")

    def __str__(self) -> str:
        if self.department is not None:
            return f"department {self.department}"
        return f"the node of child {self.child}"


class Writers:
    """Checks that each record agrees with the writer of the topic it was read from."""

    def __init__(self, region: str, writers: Iterable[Writer]) -> None:
        self.region = region
        self._by_topic: Mapping[str, Writer] = {writer.topic: writer for writer in writers}
        self._within: dict[tuple[str, bytes], bool] = {}  # (child, source region) -> inside

    def _inside(self, child: str, region: bytes) -> bool:
        """Whether source region ``region`` lies in ``child``'s subtree (memoised, bounded)."""
        key = (child, region)
        found = self._within.get(key)
        if found is None:
            if len(self._within) >= _MEMO_SIZE:
                self._within.clear()
            found = self._within[key] = contains(child, region.decode("ascii", "replace"))
        return found

    @property
    def topics(self) -> list[str]:
        """Every topic with a known writer, sorted."""
        return sorted(self._by_topic)

    def check_batch(self, parts: Iterable[tuple[str, Sequence[Seen]]]) -> dict[int, Refused]:
        """Return the refusal of each forged record, by its index in the batch taken in order."""
        forged: dict[int, Refused] = {}
        index = 0
        for topic, records in parts:
            writer = self._by_topic.get(topic)
            for record in records:
                refused = self.check(writer, topic, record.headers, record.value)
                if refused is not None:
                    forged[index] = refused
                index += 1
        return forged

    def check(
        self, writer: Writer | None, topic: str, headers: Sequence[tuple[str, bytes | None]],
        value: bytes | None,
    ) -> Refused | None:  # fmt: skip
        """Return why a record read from ``topic`` (written by ``writer``) is forged, or None."""
        if writer is None:
            return _forged(f"no writer of topic {topic} is known to this node")
        if headers and headers[0][0] == HEARTBEAT:
            return self._heartbeat(writer, value)
        if headers and headers[0][0] == FEEDBACK:
            return self._feedback(writer, headers, value)
        if writer.department is not None:
            return self._from_department(writer, writer.department, headers)
        assert writer.child is not None
        return self._from_child(writer, writer.child, headers)

    def _from_department(
        self, writer: Writer, department: str, headers: Sequence[tuple[str, bytes | None]]
    ) -> Refused | None:
        dept, region = department.encode(), self.region.encode()
        for name, data in headers:
            if data is None:  # null: as if missing
                continue
            if name == HOPS and data:
                return _disagree(writer, _HEADER[HOPS], data, "a fresh record (empty hop path)")
            if name == SOURCE_DEPT and data != dept:
                return _disagree(writer, _HEADER[SOURCE_DEPT], data, department)
            if name == SOURCE_REGION and data != region:
                return _disagree(writer, _HEADER[SOURCE_REGION], data, self.region)
        return None

    def _from_child(
        self, writer: Writer, child: str, headers: Sequence[tuple[str, bytes | None]]
    ) -> Refused | None:
        handed_up = False
        for name, data in headers:
            if data is None:  # null: as if missing
                continue
            if name == HOPS:
                problem = _hop_problem(child, data)
                if problem is not None:
                    return _disagree(writer, _HEADER[HOPS], data, problem)
                handed_up = True
            elif name == SOURCE_REGION and not self._inside(child, data):
                return _disagree(writer, _HEADER[SOURCE_REGION], data, f"a region within {child}")
        if not handed_up:
            said = f"topic {writer.topic} is {writer}'s, but header {HOPS} is missing"
            return _forged(f"{said} (records there are handed up by {child})")
        return None

    def _heartbeat(self, writer: Writer, value: bytes | None) -> Refused | None:
        if writer.child is None:
            return _forged(f"topic {writer.topic} is {writer}'s, but it holds a "
                           "heartbeat (only a child's node sends them)")  # fmt: skip
        try:
            sender = decode_beat(value).region
        except EnvelopeError:
            return None  # malformed: the link refuses it as bad_envelope
        if sender != writer.child:
            return _disagree(writer, "heartbeat field region", sender.encode(), writer.child)
        return None

    def _feedback(
        self, writer: Writer, headers: Sequence[tuple[str, bytes | None]], value: bytes | None
    ) -> Refused | None:
        hops = b"".join(data for name, data in headers if name == HOPS and data is not None)
        kind = headers[0][1]
        if kind is None:
            return None  # malformed: the link refuses it as bad_envelope
        try:
            event = decode_feedback(kind, value)
        except EnvelopeError:
            return None  # malformed: the link refuses it as bad_envelope
        if isinstance(event, Report):
            origin, author, field = event.reporter_region, event.reporter_dept, "reporter_dept"
        else:
            origin, author, field = event.at_region, event.by_dept, "by_dept"
        if writer.child is not None:
            problem = _hop_problem(writer.child, hops)
            if problem is not None:
                return _disagree(writer, _HEADER[HOPS], hops, problem)
            if not contains(writer.child, origin):
                return _disagree(writer, "the feedback's origin", origin.encode(),
                                 f"a region within {writer.child}")  # fmt: skip
            return None
        if hops:
            return _disagree(writer, _HEADER[HOPS], hops, "fresh feedback (empty hop path)")
        if author != writer.department:
            return _disagree(
                writer, f"feedback field {field}", author.encode(), str(writer.department)
            )
        if origin != self.region:
            return _disagree(writer, "the feedback's origin", origin.encode(), self.region)
        return None


def _hop_problem(child: str, hops: bytes) -> str | None:
    """Why hop path ``hops`` was not handed up by ``child``, or None."""
    if not hops:
        return f"a hop path ending {child}^ (records there are handed up)"
    if hops.rpartition(b",")[2] != child.encode() + b"^":
        return f"a hop path ending {child}^"
    return None


def _disagree(writer: Writer, what: str, found: bytes, expected: str) -> Refused:
    said = quoted(found.decode("ascii", "replace"))
    return _forged(
        f"topic {writer.topic} is {writer}'s, but {what} is {said} (expected {expected})"
    )


def _forged(message: str) -> Refused:
    return Refused(Reason.FORGED, message)
