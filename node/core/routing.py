"""The routing decision: where each record of a batch goes, or why it is refused.

A record climbs from its source (phase *up*) until it reaches the first node whose subtree holds its
target, then fans out downwards (phase *down*) to every recipient. ``level:`` targets stop at the
first ancestor of that level. Loops are impossible by construction: in the up phase a node may
appear on the hop path only once; in the down phase it may appear once more, and a record that
arrives from above is never sent up again.

Pure and synchronous: the decision depends only on the target and hop-path headers, the direction
the record arrived from and the node's topology, so it is memoised on those header bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from node.core.envelope import Hop, Mark, Target, TargetKind, parse_hops
from node.core.outcome import Copy, Delivered, Direction, Outcome, Reason, Refused
from node.core.topology import Topology, contains
from node.errors import EnvelopeError


class Arrival(StrEnum):
    """Which side a record came from."""

    FROM_BELOW = "below"  # published at this level, or handed up by a child's node
    FROM_ABOVE = "above"  # handed down by the parent's node


RouteKey = tuple[bytes | None, bytes | None]
"""The raw ``cx-target`` and ``cx-hops`` header values of one record."""


class Router:
    """Routes batches for one node; holds only its topology and a bounded memo of decisions."""

    def __init__(self, topology: Topology, memo_size: int = 4096) -> None:
        self.topology = topology
        self._memo: dict[tuple[bytes | None, bytes | None, Arrival], Outcome] = {}
        self._memo_size = memo_size

    def route_batch(self, keys: Sequence[RouteKey], arrival: Arrival) -> list[Outcome]:
        """Return one outcome per key, in order."""
        memo = self._memo
        outcomes = []
        for target, hops in keys:
            key = (target, hops, arrival)
            outcome = memo.get(key)
            if outcome is None:
                if len(memo) >= self._memo_size:
                    memo.clear()
                outcome = memo[key] = self.route(target, hops, arrival)
            outcomes.append(outcome)
        return outcomes

    def route(self, target_raw: bytes | None, hops_raw: bytes | None, arrival: Arrival) -> Outcome:
        """Decide for one record (not memoised)."""
        if target_raw is None:
            return Refused(Reason.BAD_ENVELOPE, "header cx-target: missing")
        try:
            target = Target.parse(target_raw.decode("ascii"))
            hops = parse_hops((hops_raw or b"").decode("ascii"))
        except EnvelopeError as error:
            return Refused(Reason.BAD_ENVELOPE, str(error))
        except UnicodeDecodeError:
            return Refused(Reason.BAD_ENVELOPE, "header cx-target or cx-hops is not ASCII text")
        path = _Path(hops_raw or b"", hops)
        me = self.topology.region
        if arrival is Arrival.FROM_BELOW:
            if path.visited(me, down_only=False):
                return Refused(Reason.CYCLE, f"record comes back up to {me}: hops {path}")
            if target.kind is TargetKind.LEVEL:
                if target.value == self.topology.level:
                    return Delivered((path.copy(Direction.LOCAL, me, me),))
                return self._up(target, path)
            if self.topology.contains(target.value):
                return self._fan_out(target, path)
            return self._up(target, path)
        if path.visited(me, down_only=True):
            return Refused(Reason.CYCLE, f"record comes down to {me} a second time: hops {path}")
        if target.kind is TargetKind.LEVEL:
            return Refused(Reason.MISROUTED, f"{target} travels only up, but came down to {me}")
        return self._fan_out(target, path)

    def _up(self, target: Target, path: _Path) -> Outcome:
        me, parent = self.topology.region, self.topology.parent
        if parent is None:
            where = (
                f"no ancestor of {me} has level {target.value!r}"
                if target.kind is TargetKind.LEVEL
                else f"{target} lies outside {me}, the root of this cascade"
            )
            return Refused(Reason.UNROUTABLE, where)
        if path.visited(parent, down_only=False):
            return Refused(Reason.CYCLE, f"sending up to {parent} would revisit it: hops {path}")
        return Delivered((path.copy(Direction.UP, parent, me),))

    def _fan_out(self, target: Target, path: _Path) -> Outcome:
        topology, region = self.topology, target.value
        me = topology.region
        local = region == me or (target.kind is TargetKind.SUBTREE and contains(region, me))
        children: tuple[str, ...]
        if local:
            children = topology.children if target.kind is TargetKind.SUBTREE else ()
        elif topology.contains(region):
            child = topology.child_towards(region)
            if child is None:
                return Refused(Reason.UNKNOWN_REGION, f"no child of {me} serves region {region}")
            children = (child,)
        else:
            return Refused(Reason.MISROUTED, f"{target} is outside the subtree of {me}")
        copies = [path.copy(Direction.LOCAL, me, me)] if local else []
        for child in children:
            if path.visited(child, down_only=True):
                return Refused(Reason.CYCLE, f"sending down to {child} would revisit it: {path}")
            copies.append(path.copy(Direction.DOWN, child, me))
        return Delivered(tuple(copies))


_MARK_OF = {Direction.UP: Mark.UP, Direction.DOWN: Mark.DOWN, Direction.LOCAL: Mark.DELIVERED}


class _Path:
    """A parsed hop path with the raw bytes kept, to extend without re-formatting."""

    __slots__ = ("hops", "raw")

    def __init__(self, raw: bytes, hops: tuple[Hop, ...]) -> None:
        self.raw = raw
        self.hops = hops

    def visited(self, region: str, *, down_only: bool) -> bool:
        """Tell whether ``region`` is on the path (as a down or delivered hop if ``down_only``)."""
        return any(
            hop.region == region and not (down_only and hop.mark is Mark.UP) for hop in self.hops
        )

    def copy(self, direction: Direction, region: str, me: str) -> Copy:
        """Make a copy for ``region`` whose hop path records ``me`` sending it ``direction``."""
        entry = f"{me}{_MARK_OF[direction].value}".encode()
        return Copy(direction, region, self.raw + b"," + entry if self.raw else entry)

    def __str__(self) -> str:
        return self.raw.decode("ascii") or "(none)"
