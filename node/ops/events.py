"""Every log event an operator acts on, defined once as a typed record.

A module that has something to say builds one of these and calls ``emit``; the event's class
fixes its name, its level and its fields, so a log line can be searched, alerted on and tested
as data. Fields hold only what the event is about (ids of loops, links, partitions, counts and
reasons), never record contents.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event: ``name`` and ``level`` are fixed per class."""

    name: ClassVar[str]
    level: ClassVar[str]  # "info", "warning" or "error"

    def fields(self) -> dict[str, Any]:
        """Return the event's fields, as logged."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def emit(log: structlog.typing.FilteringBoundLogger, event: Event) -> None:
    """Log ``event`` at its level under its name."""
    getattr(log, event.level)(event.name, **event.fields())


@dataclass(frozen=True, slots=True)
class ConfigLoaded(Event):
    """The configuration, schemas and catalog were read and checked."""

    name = "config_loaded"
    level = "info"
    node: str
    region: str
    level_name: str
    parent: str | None
    children: tuple[str, ...]
    departments: int
    resources: int


@dataclass(frozen=True, slots=True)
class NodeStarted(Event):
    """The admin server listens and every loop is about to start."""

    name = "node_started"
    level = "info"
    admin_port: int
    loops: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeStopping(Event):
    """A stop was asked: loops finish what is under way within ``soft_stop_s``."""

    name = "node_stopping"
    level = "info"
    deadline_s: float
    soft_stop_s: float


@dataclass(frozen=True, slots=True)
class NodeStopped(Event):
    """Every loop ended and every client is closed."""

    name = "node_stopped"
    level = "info"


@dataclass(frozen=True, slots=True)
class HardStop(Event):
    """A loop did not finish within the soft stop and was cut."""

    name = "hard_stop"
    level = "warning"
    loop: str
    after_s: float


@dataclass(frozen=True, slots=True)
class LinkStarted(Event):
    """A link joined its source and is moving records."""

    name = "link_started"
    level = "info"


@dataclass(frozen=True, slots=True)
class LinkStopped(Event):
    """A link left its source."""

    name = "link_stopped"
    level = "info"


@dataclass(frozen=True, slots=True)
class LinkDown(Event):
    """A link that was up failed to deliver; it rewinds and retries after ``retry_in_s``."""

    name = "link_down"
    level = "warning"
    reason: str
    retry_in_s: float


@dataclass(frozen=True, slots=True)
class LinkRetry(Event):
    """A link that is down failed again."""

    name = "link_retry"
    level = "info"
    reason: str
    retry_in_s: float


@dataclass(frozen=True, slots=True)
class LinkHolding(Event):
    """A link waits for a fail-closed audit trail: it commits and fetches nothing meanwhile."""

    name = "link_holding"
    level = "warning"
    reason: str


@dataclass(frozen=True, slots=True)
class LinkUp(Event):
    """A link that was down delivered and committed a batch again."""

    name = "link_up"
    level = "info"
    down_for_s: float | None


@dataclass(frozen=True, slots=True)
class BatchDone(Event):
    """The one summary line per committed batch."""

    name = "batch"
    level = "info"
    records: int
    copies: int
    refused: int
    offsets: dict[str, list[int]]
    committed: bool


@dataclass(frozen=True, slots=True)
class GapDetected(Event):
    """Records were lost at a source before the node read them (retention, recreation)."""

    name = "gap_detected"
    level = "error"
    link: str
    topic: str
    partition: int
    first_lost: int
    last_lost: int | None
    lost: int | None
    resumed_at: int
    why: str


@dataclass(frozen=True, slots=True)
class LoopDown(Event):
    """A supervised loop other than a link is down (links say it with LinkDown)."""

    name = "loop_down"
    level = "warning"
    loop: str
    reason: str


@dataclass(frozen=True, slots=True)
class LoopEnded(Event):
    """A loop ended without being asked to: the node stops with an error."""

    name = "loop_ended"
    level = "error"
    loop: str
    error: str


@dataclass(frozen=True, slots=True)
class WorkerStarted(Event):
    """The node started a worker process for its links (``flow.workers``)."""

    name = "worker_started"
    level = "info"
    worker: int
    pid: int


@dataclass(frozen=True, slots=True)
class WorkerExited(Event):
    """A worker process ended: asked to (code 0), or it failed or was killed (started again)."""

    name = "worker_exited"
    level = "info"
    worker: int
    pid: int
    code: int | None


@dataclass(frozen=True, slots=True)
class GrantsStale(Event):
    """Grants are not confirmed current within the bound: conditional sharing fails closed."""

    name = "grants_stale"
    level = "warning"
    reason: str


@dataclass(frozen=True, slots=True)
class GrantsCurrent(Event):
    """Grants are confirmed current again."""

    name = "grants_current"
    level = "info"
    active: int
    known: int


@dataclass(frozen=True, slots=True)
class PeerSilent(Event):
    """A neighbour's heartbeat is older than three of its intervals."""

    name = "peer_silent"
    level = "warning"
    peer: str
    role: str
    age_s: float


@dataclass(frozen=True, slots=True)
class PeerHeard(Event):
    """A silent neighbour's heartbeat came again."""

    name = "peer_heard"
    level = "info"
    peer: str
    role: str


@dataclass(frozen=True, slots=True)
class NodeFailed(Event):
    """The node stopped because of an error that retrying cannot cure (config, bug)."""

    name = "node_failed"
    level = "error"
    error: str
    kind: str


@dataclass(frozen=True, slots=True)
class LoopFailed(Event):
    """A supervised loop failed; it is retried after ``retry_in_s``."""

    name = "loop_failed"
    level = "warning"
    loop: str
    reason: str
    retry_in_s: float


@dataclass(frozen=True, slots=True)
class GrantsUpdated(Event):
    """The grant book in force changed (a grant, its freshness or an expiry)."""

    name = "grants_updated"
    level = "info"
    active: int
    known: int
    fresh: bool


@dataclass(frozen=True, slots=True)
class GrantUnreadable(Event):
    """A grant event on the grants topic could not be read; it is ignored here."""

    name = "grant_unreadable"
    level = "warning"
    error: str


@dataclass(frozen=True, slots=True)
class GrantEventsRefused(Event):
    """A relay wrote grant events it could not copy to the refusal topic."""

    name = "grant_events_refused"
    level = "warning"
    count: int


@dataclass(frozen=True, slots=True)
class GrantEventsForged(Event):
    """A relay refused grant events their topic's writer may not send (the first is named)."""

    name = "grant_events_forged"
    level = "warning"
    count: int
    topic: str
    grant_id: str
    origin: str
    reason: str


@dataclass(frozen=True, slots=True)
class HeartbeatRejected(Event):
    """A heartbeat was too large for a topic; the other topics still get theirs."""

    name = "heartbeat_rejected"
    level = "error"
    topic: str
    error: str


@dataclass(frozen=True, slots=True)
class StatsLinesDropped(Event):
    """Statistics lines were dropped unwritten to keep memory bounded (the topic was down)."""

    name = "stats_lines_dropped"
    level = "error"
    lines: int


@dataclass(frozen=True, slots=True)
class AdminApiOpen(Event):
    """The admin API has no credentials: whoever reaches its loopback port may call it."""

    name = "admin_api_open"
    level = "warning"
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class AdminAction(Event):
    """A change was asked of the admin API (a grant request or decision): who, what, the answer."""

    name = "admin_action"
    level = "info"
    user: str
    """The token's user or the certificate's CN; empty when no credential was recognised."""
    role: str
    method: str
    route: str
    """The route template (``/grants/{grant_id}/approve``), never the query or the body."""
    target: str
    """The grant id (or other path parameter) acted on, empty when none."""
    status: int


@dataclass(frozen=True, slots=True)
class AuditDropped(Event):
    """Audit entries began to be dropped unwritten (fail-open, queue full).

    Logged once per gap; the gap entry says how many, ``exchange_audit_entries_dropped`` counts.
    """

    name = "audit_dropped"
    level = "error"
    entries: int
    why: str
    """Why the audit loop could not write, as last known."""


@dataclass(frozen=True, slots=True)
class AuditHolding(Event):
    """Fail-closed audit: the links stop fetching until audit entries can be written again."""

    name = "audit_holding"
    level = "error"
    pending: int
    why: str


@dataclass(frozen=True, slots=True)
class AuditResumed(Event):
    """Fail-closed audit: entries can be written again, the links fetch again."""

    name = "audit_resumed"
    level = "info"
    pending: int


@dataclass(frozen=True, slots=True)
class TrustUpdated(Event):
    """The trusted keys the links check provenance against changed."""

    name = "trust_updated"
    level = "info"
    keys: int


@dataclass(frozen=True, slots=True)
class TrustKeyRefused(Event):
    """A key record was read where its writer may not vouch for its region (or is unreadable)."""

    name = "trust_key_refused"
    level = "warning"
    topic: str
    region: str
    key_id: str


EVENTS: tuple[type[Event], ...] = (
    ConfigLoaded, NodeStarted, NodeStopping, NodeStopped, HardStop, LinkStarted, LinkStopped,
    LinkDown, LinkRetry, LinkUp, BatchDone, GapDetected, LoopDown, LoopEnded, GrantsStale,
    GrantsCurrent, PeerSilent, PeerHeard, NodeFailed, LoopFailed, GrantsUpdated, GrantUnreadable,
    GrantEventsRefused, HeartbeatRejected, StatsLinesDropped, AdminApiOpen, AdminAction,
    AuditDropped, AuditHolding, AuditResumed, TrustUpdated, TrustKeyRefused, LinkHolding,
    GrantEventsForged, WorkerStarted, WorkerExited,
)  # fmt: skip
"""Every event the node logs itself (the catalogue the docs and tests read)."""
