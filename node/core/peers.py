"""What a node knows of its neighbours: their heartbeats, and completeness of what children send.

``PeerWatch`` keeps, for the parent and each child of the topology, the last heartbeat and when
it came, and per child the records received from it per time bucket. From these it answers the
metrics (heartbeat age, hop latency, completeness) and the cascade view (the subtree as the
children report it). Pure: times are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from node.core.heartbeat import STALE_INTERVALS, Beat, BucketCounts, settled_range, settled_sum
from node.core.topology import Topology

PARENT, CHILD = "parent", "child"


@dataclass(frozen=True, slots=True)
class PeerHeartbeat:
    """What this node last heard from one peer (parent or child) through heartbeats."""

    peer: str
    role: str  # PARENT or CHILD
    age_s: float  # now - the last heartbeat's send time (since start if none yet)
    hop_s: float | None  # receipt - send time of the last heartbeat
    interval_s: float  # the interval the peer announces (ours until it said)
    received: int


@dataclass(frozen=True, slots=True)
class Completeness:
    """Records a child says it sent up against those received from it, over settled buckets."""

    child: str
    sent: int
    received: int


@dataclass(slots=True)
class _Peer:
    role: str
    beat: Beat | None = None
    received_ms: int = 0
    count: int = 0
    silent: bool = False  # as last told by silence_changes


def _as_of_now(view: Mapping[str, Any], carried_s: float, carrier_stale: bool) -> dict[str, Any]:
    """Age a reported descendant's view by its carrier's heartbeat; stale with its carrier.

    What a silent child reported of its own subtree is no news: it is marked stale too.
    """
    shown = dict(view)
    age = view.get("heartbeat_age_s")
    if isinstance(age, int | float) and not isinstance(age, bool):
        shown["heartbeat_age_s"] = round(age + carried_s, 3)
    if carrier_stale:
        shown["stale"] = True
    below = view.get("children")
    if isinstance(below, list):
        stale = bool(shown.get("stale"))
        shown["children"] = [
            _as_of_now(v, carried_s, stale) for v in below if isinstance(v, Mapping)
        ]
    return shown


class PeerWatch:
    """The heartbeats and completeness of one node's parent and children."""

    def __init__(
        self,
        topology: Topology,
        started_ms: int,
        interval_s: float,
        *,
        bucket_s: int,
        keep: int,
        settle_s: float,
    ) -> None:
        self._started_ms = started_ms
        self._interval_s = interval_s
        self._keep = keep
        self._settle_s = settle_s
        self.parent = topology.parent
        self._peers: dict[str, _Peer] = {child: _Peer(CHILD) for child in topology.children}
        if topology.parent is not None:
            self._peers[topology.parent] = _Peer(PARENT)
        self._received = {child: BucketCounts(bucket_s, keep) for child in topology.children}
        self.sent_up = BucketCounts(bucket_s, keep)
        """Records this node sent up, per bucket (reported in its own heartbeats)."""

    def sender_problem(self, beat: Beat, role: str) -> str | None:
        """Why a heartbeat may not come from ``beat.region`` on a link from ``role``, or None."""
        peer = self._peers.get(beat.region)
        if peer is None or peer.role != role:
            expected = "the parent" if role == PARENT else "a child"
            return f"heartbeat from {beat.region}, which is not {expected} of this node"
        return None

    def heard(self, beat: Beat, received_ms: int) -> None:
        """Take a heartbeat (its sender was checked with ``sender_problem``)."""
        peer = self._peers[beat.region]
        if peer.beat is None or beat.sent_ms >= peer.beat.sent_ms:  # a late duplicate is older
            peer.beat, peer.received_ms = beat, received_ms
        peer.count += 1

    def received_from(self, child: str, created_ms: Iterable[int], now_ms: int) -> None:
        """Count records received from ``child`` by their creation bucket."""
        counts = self._received.get(child)
        if counts is not None:
            counts.add(created_ms, now_ms)

    def readings(self, now_ms: int) -> list[PeerHeartbeat]:
        """One reading per peer, for the metrics."""
        found: list[PeerHeartbeat] = []
        for region, peer in sorted(self._peers.items()):
            beat = peer.beat
            if beat is None:
                age = (now_ms - self._started_ms) / 1000
                found.append(PeerHeartbeat(region, peer.role, age, None, self._interval_s, 0))
                continue
            found.append(PeerHeartbeat(
                region, peer.role, (now_ms - beat.sent_ms) / 1000,
                (peer.received_ms - beat.sent_ms) / 1000, beat.interval_s, peer.count,
            ))  # fmt: skip
        return found

    def silence_changes(self, now_ms: int, role: str) -> list[tuple[PeerHeartbeat, bool]]:
        """Peers of ``role`` that fell silent or spoke again since the last call.

        Silent: the last heartbeat (or the start, if none came) is older than
        ``STALE_INTERVALS`` of the peer's interval. Returns (reading, silent now) per change.
        """
        changed: list[tuple[PeerHeartbeat, bool]] = []
        for reading in self.readings(now_ms):
            peer = self._peers[reading.peer]
            if peer.role != role:
                continue
            silent = reading.age_s > STALE_INTERVALS * reading.interval_s
            if silent != peer.silent:
                peer.silent = silent
                changed.append((reading, silent))
        return changed

    def completeness(self, now_ms: int) -> list[Completeness]:
        """Per child that has sent a heartbeat: sent and received over its settled buckets."""
        found: list[Completeness] = []
        for child, counts in sorted(self._received.items()):
            beat = self._peers[child].beat
            if beat is None:
                continue
            first, last = settled_range(beat, self._keep, self._settle_s)
            received = settled_sum(counts.recent(now_ms), first, last)
            found.append(Completeness(child, settled_sum(beat.sent_up, first, last), received))
        return found

    def view(self, region: str, now_ms: int) -> dict[str, Any]:
        """One peer as the cascade page shows it; children carry their reported subtree."""
        peer = self._peers[region]
        beat = peer.beat
        sent_ms = beat.sent_ms if beat else self._started_ms
        interval = beat.interval_s if beat else self._interval_s
        age = (now_ms - sent_ms) / 1000
        shown: dict[str, Any] = {
            "region": region, "node": beat.node if beat else None,
            "level": beat.level if beat else None, "heartbeat_age_s": round(age, 3),
            "hop_s": round((peer.received_ms - beat.sent_ms) / 1000, 4) if beat else None,
            "stale": beat is None or age > STALE_INTERVALS * interval,
        }  # fmt: skip
        if peer.role == CHILD:
            gap = next((c for c in self.completeness(now_ms) if c.child == region), None)
            shown["links"] = dict(beat.links) if beat else {}
            shown["completeness_gap"] = None if gap is None else gap.sent - gap.received
            carried = (now_ms - sent_ms) / 1000
            below = beat.subtree if beat else ()
            shown["children"] = [_as_of_now(view, carried, shown["stale"]) for view in below]
        return shown

    def children_views(self, now_ms: int) -> list[dict[str, Any]]:
        """Every child as the cascade page shows it."""
        return [self.view(r, now_ms) for r, p in sorted(self._peers.items()) if p.role == CHILD]
