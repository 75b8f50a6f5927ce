"""A node's place in the cascade, as the live page shows it and as heartbeats carry it.

``CascadeView`` reads the links' running totals (rates over about ten seconds), their lag and
the loops' health, and what ``PeerWatch`` heard from the parent and the children. It builds the
``/cascade.json`` document and the heartbeats this node sends: a beat going up carries this
node's links, its completeness counts and its whole subtree as its children reported it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from node import __version__
from node.core.heartbeat import Beat
from node.core.peers import PeerWatch
from node.core.topology import Topology
from node.kafka.accounting import LinkTotals
from node.supervisor import Health
from node.transport import Clock


class WatchedLink(Protocol):
    """What the view reads of a link."""

    totals: LinkTotals

    def lag_by_partition(self) -> dict[int, int]:
        """Return the source's lag per partition, as last seen."""


class CascadeView:
    """Builds the cascade document and the heartbeats of one node."""

    def __init__(
        self,
        node_id: str,
        topology: Topology,
        health: Health,
        links: Mapping[str, WatchedLink],
        peers: PeerWatch,
        *,
        interval_s: float,
        bucket_s: int,
        clock: Clock,
    ) -> None:
        self._node_id = node_id
        self._topology = topology
        self._health = health
        self._links = links
        self._peers = peers
        self._interval_s = interval_s
        self._bucket_s = bucket_s
        self._clock = clock

    def links(self) -> dict[str, dict[str, Any]]:
        """Each link's state, rates (per second) and lag (None while unknown)."""
        now = self._clock()
        states = self._health.snapshot()
        shown: dict[str, dict[str, Any]] = {}
        for name, link in self._links.items():
            state = states.get(name)
            into, out, refused = link.totals.rates(now)
            lags = link.lag_by_partition()
            shown[name] = {
                "up": bool(state and state.up),
                "reason": (state.reason or None) if state else "not started",
                "since": state.since if state else None,
                "records_in_per_s": round(into, 2),
                "copies_out_per_s": round(out, 2),
                "refused_per_s": round(refused, 2),
                "lag": sum(lags.values()) if lags else None,
            }
        return shown

    def document(self) -> dict[str, Any]:
        """Build the ``/cascade.json`` document (see ``node/ops/page.py``)."""
        now_ms = int(self._clock() * 1000)
        topology = self._topology
        refusals: dict[str, int] = {}
        for link in self._links.values():
            for reason, count in link.totals.refused_by.items():
                refusals[reason] = refusals.get(reason, 0) + count
        loops = {
            name: {"up": s.up, "reason": s.reason or None, "since": s.since, "retries": s.retries}
            for name, s in self._health.snapshot().items()
            if name not in self._links
        }
        parent = self._peers.view(topology.parent, now_ms) if topology.parent else None
        return {
            "node": self._node_id, "region": topology.region, "level": topology.level,
            "version": __version__, "generated_ms": now_ms, "ready": self._health.ready,
            "links": self.links(), "loops": loops, "refusals": dict(sorted(refusals.items())),
            "parent": parent, "children": self._peers.children_views(now_ms),
        }  # fmt: skip

    def beat_up(self) -> Beat:
        """Build the heartbeat sent to the parent: links, completeness counts and the subtree."""
        now_ms = int(self._clock() * 1000)
        return Beat(
            self._topology.region, self._node_id, self._topology.level, now_ms, self._interval_s,
            self.links(), self._peers.sent_up.recent(now_ms), self._bucket_s,
            tuple(self._peers.children_views(now_ms)),
        )  # fmt: skip

    def beat_down(self) -> Beat:
        """Build the heartbeat sent to the children: who and when, nothing more."""
        now_ms = int(self._clock() * 1000)
        topology = self._topology
        return Beat(topology.region, self._node_id, topology.level, now_ms, self._interval_s)


def link_lags(links: Mapping[str, WatchedLink]) -> dict[str, Callable[[], Mapping[int, int]]]:
    """Return the metrics' scrape-time lag readings, one per link."""
    return {name: link.lag_by_partition for name, link in links.items()}
