"""Correction feedback (数据纠错反馈): reports, their status changes, and where they travel.

A consumer department reports a problem with a record (its id and the fields concerned). The
``Report`` travels through the cascade to the resource's one authoritative source (region and
department, from the catalog). The source either publishes a correction, an ordinary record with
the same ``cx-id``, a higher ``cx-version`` and ``cx-corrects: REPORT_ID``, or rejects the report
with a reason. Either way a ``StatusChange`` travels back to the reporter's region.

Feedback records ride the links like heartbeats: the first header ``cx-feedback`` (value
``report`` or ``status``) marks them, the value is JSON and ``cx-hops`` carries their hop path.
Links take them aside before the sharing rules (``take``) and forward them one hop towards their
destination region; a ``corrected`` status is made only by the source region's node when it sees
the correction pass (``correction``), never written by a department.

Records carry their version in ``cx-version`` (absent means 1); consumers keep the highest
version of each record id.

Pure: no I/O, no clock reads (times are passed in).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from node.core import foreign_json
from node.core.catalog import Catalog
from node.core.envelope import MAX_DIGITS, RECORD_ID, RESOURCE, Mark, parse_hops
from node.core.foreign_json import ForeignJsonError
from node.core.outcome import Reason, Refused
from node.core.quoting import quoted
from node.core.routing import Arrival
from node.core.topology import Topology, contains, is_region_code
from node.errors import EnvelopeError

FEEDBACK = "cx-feedback"
"""The first header of a feedback record; its value says which kind (``REPORT`` or ``STATUS``)."""
REPORT, STATUS = b"report", b"status"
VERSION = "cx-version"
"""A record's version, decimal, 1 when absent; a correction carries a higher one."""
CORRECTS = "cx-corrects"
"""On a correction: the id of the report it answers."""
_TOKEN = re.compile(r"[\x21-\x7e]{1,64}")
MAX_TEXT = 2000
"""Longest problem or reason, in characters."""


class Status(StrEnum):
    """Where a report stands."""

    OPEN = "open"
    CORRECTED = "corrected"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Report:
    """A consumer's report of a problem with one record; source fields come from the catalog."""

    report_id: str
    record_id: str
    resource: str
    source_region: str
    source_dept: str
    fields: tuple[str, ...]
    problem: str
    reporter_region: str
    reporter_dept: str
    reported_ms: int

    def encode(self) -> bytes:
        """Return the record value."""
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A report corrected or rejected at the source region, on its way back to the reporter.

    It carries the report's record, resource and reporter, so every node on the way can check
    it against the catalog and route it without having seen the report.
    """

    report_id: str
    status: Status
    reason: str
    version: int
    """The correction's ``cx-version`` (0 for a rejection)."""
    at_region: str
    by_dept: str
    at_ms: int
    record_id: str
    resource: str
    reporter_region: str
    reporter_dept: str

    def encode(self) -> bytes:
        """Return the record value."""
        body = asdict(self)
        body["status"] = self.status.value
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


Event = Report | StatusChange


def is_feedback(headers: Any) -> bool:
    """Whether a record's headers mark it as feedback (O(1): the first header decides)."""
    return bool(headers) and headers[0][0] == FEEDBACK


def kind_of(event: Event) -> bytes:
    """Return the ``cx-feedback`` header value of ``event``."""
    return REPORT if isinstance(event, Report) else STATUS


def key_of(event: Event) -> bytes:
    """Return the Kafka key: one per event, so compaction keeps the report and each change."""
    if isinstance(event, Report):
        return event.report_id.encode()
    return f"{event.report_id}/{event.status.value}/{event.at_ms}".encode()


def decode(kind: bytes, value: bytes | None) -> Event:
    """Parse a feedback value of ``kind``; raise EnvelopeError naming the field that is wrong."""
    try:
        body = foreign_json.load(value)
    except ForeignJsonError as error:
        raise EnvelopeError(FEEDBACK, f"feedback value: {error}") from None
    if not isinstance(body, dict):
        raise EnvelopeError(FEEDBACK, "feedback value must be a JSON object")

    def need(name: str, kind: type) -> Any:
        found = body.get(name)
        if not isinstance(found, kind) or isinstance(found, bool):
            raise EnvelopeError(FEEDBACK, f"field {name!r} is missing or not a {kind.__name__}")
        return found

    def token(name: str) -> str:
        found: str = need(name, str)
        if not _TOKEN.fullmatch(found):
            raise EnvelopeError(FEEDBACK, f"field {name!r} must be 1-64 printable ASCII characters")
        return found

    def region(name: str) -> str:
        found: str = need(name, str)
        if not is_region_code(found):
            raise EnvelopeError(FEEDBACK, f"field {name!r}: {quoted(found)} is not a region code")
        return found

    def text(name: str, *, empty: bool) -> str:
        found: str = need(name, str)
        if len(found) > MAX_TEXT or (not empty and not found.strip()):
            raise EnvelopeError(FEEDBACK, f"field {name!r} must be 1-{MAX_TEXT} characters")
        return found

    if kind == REPORT:
        fields = need("fields", list)
        if not fields or not all(isinstance(f, str) and _TOKEN.fullmatch(f) for f in fields):
            raise EnvelopeError(FEEDBACK, "field 'fields' must be a non-empty list of item names")
        return Report(
            token("report_id"), token("record_id"), token("resource"), region("source_region"),
            token("source_dept"), tuple(fields), text("problem", empty=False),
            region("reporter_region"), token("reporter_dept"), need("reported_ms", int),
        )  # fmt: skip
    if kind == STATUS:
        try:
            status = Status(need("status", str))
        except ValueError:
            raise EnvelopeError(
                FEEDBACK, "field 'status' must be open, corrected or rejected"
            ) from None
        return StatusChange(
            token("report_id"), status, text("reason", empty=True), need("version", int),
            region("at_region"), token("by_dept"), need("at_ms", int), token("record_id"),
            token("resource"), region("reporter_region"), token("reporter_dept"),
        )  # fmt: skip
    raise EnvelopeError(FEEDBACK, f"kind {quoted(kind)} is neither report nor status")


class Way(StrEnum):
    """Where feedback goes from this node."""

    UP = "up"  # to the parent's up.REGION
    DOWN = "down"  # to a child's hand-over topic
    HERE = "here"  # to a department's feedback topic at this node


@dataclass(frozen=True, slots=True)
class NextHop:
    """One hop towards a destination region: the way, and the region it goes to."""

    way: Way
    region: str


def next_hop(topology: Topology, destination: str) -> NextHop | Refused:
    """Return the next hop from this node towards ``destination``, or why there is none."""
    me = topology.region
    if destination == me:
        return NextHop(Way.HERE, me)
    if topology.contains(destination):
        child = topology.child_towards(destination)
        if child is None:
            return Refused(Reason.UNKNOWN_REGION, f"no child of {me} serves region {destination}")
        return NextHop(Way.DOWN, child)
    if topology.parent is None:
        return Refused(Reason.UNROUTABLE, f"{destination} lies outside {me}, the root")
    return NextHop(Way.UP, topology.parent)


def destination_of(event: Event) -> tuple[str, str]:
    """Return the region and department ``event`` is for: the source, or the reporter."""
    if isinstance(event, Report):
        return event.source_region, event.source_dept
    return event.reporter_region, event.reporter_dept


def origin_of(event: Event) -> str:
    """Return the region where ``event`` was written."""
    return event.reporter_region if isinstance(event, Report) else event.at_region


@dataclass(frozen=True, slots=True)
class Forward:
    """What to do with accepted feedback: send it one hop with ``hops``, and log it here.

    ``department`` is the one whose feedback topic takes it when ``way`` is HERE.
    """

    event: Event
    way: Way
    region: str
    hops: bytes
    department: str | None


_MARK = {Way.UP: Mark.UP, Way.DOWN: Mark.DOWN, Way.HERE: Mark.DELIVERED}


def forward(event: Event, hops: bytes, topology: Topology) -> Forward | Refused:
    """Route ``event`` one hop from this node, extending its hop path ``hops``."""
    region, department = destination_of(event)
    hop = next_hop(topology, region)
    if isinstance(hop, Refused):
        return hop
    entry = f"{topology.region}{_MARK[hop.way].value}".encode()
    path = hops + b"," + entry if hops else entry
    return Forward(event, hop.way, hop.region, path, department if hop.way is Way.HERE else None)


def take(
    kind: bytes,
    value: bytes | None,
    hops_raw: bytes | None,
    arrival: Arrival,
    topology: Topology,
    catalog: Catalog,
    book: FeedbackBook,
    departments: frozenset[str],
) -> Forward | Refused:
    """Check feedback that arrived on a link and route it one hop; or say why it is refused.

    Fresh feedback (empty hop path, written at this level) must originate here: a report from
    one of ``departments`` (those with a feedback topic here); a status only as a rejection by
    the resource's source department of a report this node knows. Feedback handed on by a
    neighbour must come from a child (from below) whose subtree holds its origin, or from the
    parent (from above) with its origin outside this subtree.
    """
    try:
        event = decode(kind, value)
        hops = parse_hops((hops_raw or b"").decode("ascii"))
    except EnvelopeError as error:
        return Refused(Reason.BAD_ENVELOPE, str(error))
    except UnicodeDecodeError:
        return Refused(Reason.BAD_ENVELOPE, "header cx-hops is not ASCII text")
    me = topology.region
    if any(hop.region == me for hop in hops):
        return Refused(Reason.CYCLE, f"feedback comes back to {me}: hops {quoted(hops_raw)}")
    refused = _against_catalog(event, catalog)
    if refused is not None:
        return refused
    origin = origin_of(event)
    if not hops:
        problem = _fresh_problem(event, arrival, me, book, departments)
    else:
        problem = _sender_problem(hops[-1].region, hops[-1].mark, arrival, topology, origin)
    if problem is not None:
        return Refused(Reason.BAD_ENVELOPE, problem)
    destination, department = destination_of(event)
    if arrival is Arrival.FROM_ABOVE and not topology.contains(destination):
        return Refused(Reason.MISROUTED, f"feedback for {destination} came down to {me}")
    if destination == me and department not in departments:
        return Refused(Reason.BAD_ENVELOPE, f"department {department} has no feedback topic here")
    return forward(event, hops_raw or b"", topology)


def _against_catalog(event: Event, catalog: Catalog) -> Refused | None:
    """Refuse feedback naming an unknown resource, or a source other than its one source."""
    resource = catalog.get(event.resource)
    if resource is None:
        return Refused(
            Reason.UNKNOWN_RESOURCE, f"resource {quoted(event.resource)} is not in the catalog"
        )
    source = f"{resource.source_dept}@{resource.source_region}"
    if isinstance(event, Report):
        if (event.source_dept, event.source_region) != (
            resource.source_dept,
            resource.source_region,
        ):
            return Refused(
                Reason.BAD_ENVELOPE,
                f"report names {event.source_dept}@{event.source_region} as the source of "
                f"{resource.code}, whose one source is {source}",
            )
        items = {item.name for item in resource.items}
        unknown = [name for name in event.fields if name not in items]
        if unknown:
            return Refused(
                Reason.BAD_ENVELOPE, f"fields {unknown} are not items of {resource.code}"
            )
        return None
    if event.status is Status.OPEN:
        return Refused(Reason.BAD_ENVELOPE, "only corrected or rejected status changes travel")
    if (event.by_dept, event.at_region) != (resource.source_dept, resource.source_region):
        return Refused(
            Reason.NOT_AUTHORITATIVE,
            f"report {event.report_id} may be {event.status.value} only by {source}, "
            f"not {event.by_dept}@{event.at_region}",
        )
    return None


def _fresh_problem(
    event: Event, arrival: Arrival, me: str, book: FeedbackBook, departments: frozenset[str]
) -> str | None:
    """Why feedback with an empty hop path may not enter here, or None."""
    if arrival is Arrival.FROM_ABOVE:
        return "feedback from above must carry its hop path"
    if origin_of(event) != me:
        return f"feedback written at {me} names {origin_of(event)} as its origin"
    if isinstance(event, Report):
        if event.reporter_dept not in departments:
            return f"reporter {event.reporter_dept} has no feedback topic at {me}"
        return None
    if event.status is not Status.REJECTED:
        return "a corrected status is made by the node when the correction passes, not written"
    report = book.report(event.report_id)
    if report is None:
        return f"report {event.report_id} is unknown at {me}"
    if (event.record_id, event.resource, event.reporter_region, event.reporter_dept) != (
        report.record_id, report.resource, report.reporter_region, report.reporter_dept,
    ):  # fmt: skip
        return f"status does not match report {event.report_id} (record, resource or reporter)"
    return None


def _sender_problem(
    last: str, mark: Mark, arrival: Arrival, topology: Topology, origin: str
) -> str | None:
    """Why feedback last handed on by ``last`` may not arrive on this link, or None."""
    if arrival is Arrival.FROM_BELOW:
        if mark is not Mark.UP or last not in topology.children:
            return f"feedback handed on by {last}{mark.value}, which is not a child sending up"
        if not contains(last, origin):
            return f"feedback from child {last} was written at {origin}, outside its subtree"
        return None
    if mark is not Mark.DOWN or last != topology.parent:
        return f"feedback handed on by {last}{mark.value}, which is not the parent sending down"
    if topology.contains(origin):
        return f"feedback from above was written at {origin}, inside this subtree"
    return None


def correction(
    headers: Sequence[tuple[str, bytes]], topology: Topology, book: FeedbackBook, now_ms: int
) -> StatusChange | Refused | None:
    """For a record published here with ``cx-corrects``: the ``corrected`` status it makes.

    None when the record corrects nothing. Refused when it names an unknown report, another
    record or resource, a report whose source is not here, or no version above 1. Whether the
    correction comes from the authoritative source is the sharing rules' part.
    """
    found = dict(headers)
    answers = found.get(CORRECTS)
    if CORRECTS not in found:
        return None
    report_id = answers.decode("ascii", "replace") if answers else ""
    version_raw = found.get(VERSION) or b""
    if not (version_raw.isdigit() and len(version_raw) <= MAX_DIGITS) or int(version_raw) < 2:
        return Refused(Reason.BAD_ENVELOPE, f"header {VERSION}: a correction needs a version > 1")
    report = book.report(report_id)
    me = topology.region
    if report is None:
        return Refused(
            Reason.BAD_ENVELOPE, f"header {CORRECTS}: report {report_id} unknown at {me}"
        )
    record_id = (found.get(RECORD_ID) or b"").decode("ascii", "replace")
    resource = (found.get(RESOURCE) or b"").decode("ascii", "replace")
    if (record_id, resource) != (report.record_id, report.resource):
        return Refused(
            Reason.BAD_ENVELOPE,
            f"header {CORRECTS}: report {report_id} is about record {report.record_id} of "
            f"{report.resource}, not {record_id} of {resource}",
        )
    if report.source_region != me:
        return Refused(
            Reason.NOT_AUTHORITATIVE, f"report {report_id} is answered at {report.source_region}"
        )
    return StatusChange(
        report_id, Status.CORRECTED, "", int(version_raw), me, report.source_dept, now_ms,
        report.record_id, report.resource, report.reporter_region, report.reporter_dept,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class FeedbackState:
    """A report as one node knows it: the report (if it passed here) and its status history."""

    report_id: str
    report: Report | None
    status: Status
    history: tuple[StatusChange, ...]

    @property
    def closed(self) -> bool:
        """Whether the report was corrected or rejected."""
        return self.status is not Status.OPEN

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready description."""
        return {
            "report_id": self.report_id,
            "status": self.status.value,
            "report": None if self.report is None else asdict(self.report),
            "history": [
                {**asdict(change), "status": change.status.value} for change in self.history
            ],
        }


class FeedbackBook:
    """Every report and status change one node has seen, folded by report id.

    A report with no status change is open; otherwise its status is that of the latest change
    (by ``at_ms``, then ``version``). Adding what is already known changes nothing, so events
    may be read twice (at least once) and from several places (its topic and its links).
    """

    def __init__(self) -> None:
        self._reports: dict[str, Report] = {}
        self._changes: dict[str, dict[tuple[str, int, str, int], StatusChange]] = {}

    def add(self, event: Event) -> bool:
        """Take one event; return whether anything changed."""
        if isinstance(event, Report):
            if event.report_id in self._reports:
                return False
            self._reports[event.report_id] = event
            return True
        changes = self._changes.setdefault(event.report_id, {})
        key = (event.status.value, event.at_ms, event.at_region, event.version)
        if key in changes:
            return False
        changes[key] = event
        return True

    def report(self, report_id: str) -> Report | None:
        """Return the report with ``report_id``, if it passed here."""
        return self._reports.get(report_id)

    def state(self, report_id: str) -> FeedbackState | None:
        """Return what is known of ``report_id``, or None if nothing is."""
        report = self._reports.get(report_id)
        changes = self._changes.get(report_id, {})
        if report is None and not changes:
            return None
        history = tuple(sorted(changes.values(), key=lambda c: (c.at_ms, c.version)))
        status = history[-1].status if history else Status.OPEN
        return FeedbackState(report_id, report, status, history)

    def __len__(self) -> int:
        return len(set(self._reports) | set(self._changes))
