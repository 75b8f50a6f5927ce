"""Which grant events a node takes from a child's hand-up topic and from its parent.

The city 410100 has counties 410102 and 410103; 410102 has the town 410102001. Resource
``410100-PSB-00001`` is provided by the city, ``410102-PSB-00001`` by county 410102.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest
import structlog

from node.core.envelope import REFUSAL_MESSAGE, REFUSAL_REASON
from node.core.grants import (
    MAX_VERSION_AHEAD_MS,
    Grant,
    GrantStatus,
    decider,
    handed_down_refusal,
    handed_up_refusal,
)
from node.errors import RecordRejected
from node.kafka.grants import GrantRelay
from node.supervisor import Health
from node.transport import Batch, Message, Partition, Substitute

NOW_MS = 1_800_000_000_000
CITY, COUNTY, OTHER_COUNTY, TOWN = "410100", "410102", "410103", "410102001"
SOURCES = {"410100-PSB-00001": CITY, "410102-PSB-00001": COUNTY}

REQUEST = Grant(
    grant_id="g1", resource="410100-PSB-00001", consumer_dept="HRSS", consumer_region=TOWN,
    items=(), expires_ms=0, status=GrantStatus.REQUESTED, version=NOW_MS, origin=TOWN,
)  # fmt: skip


def decided(status: GrantStatus, origin: str, resource: str = "410102-PSB-00001") -> Grant:
    """The request, decided at ``origin``."""
    return replace(
        REQUEST, resource=resource, status=status, origin=origin, version=NOW_MS + 1,
        expires_ms=NOW_MS + 86_400_000,
    )  # fmt: skip


def from_child(grant: Grant, child: str = COUNTY, now_ms: int = NOW_MS) -> str | None:
    """What the city says of ``grant`` read from ``child``'s hand-up topic."""
    return handed_up_refusal(grant, child, SOURCES.get(grant.resource), now_ms)


def test_a_child_may_hand_up_requests_and_decisions_recorded_in_its_subtree() -> None:
    """A town's request, and the county's own decisions on its resource, pass."""
    assert from_child(REQUEST) is None
    for status in (GrantStatus.APPROVED, GrantStatus.REJECTED, GrantStatus.REVOKED):
        assert from_child(decided(status, COUNTY)) is None


def test_a_child_may_not_speak_for_a_region_outside_its_subtree() -> None:
    """An approval claiming the city, the other county or no origin is refused, naming both."""
    for origin in (CITY, OTHER_COUNTY, ""):
        forged = decided(GrantStatus.APPROVED, origin, resource="410100-PSB-00001")
        why = from_child(forged)
        assert why is not None
        assert "outside the subtree of 410102" in why
        assert (origin or "(none)") in why
    assert from_child(REQUEST, child=OTHER_COUNTY) is not None


def test_only_the_entitled_node_of_the_subtree_records_a_step() -> None:
    """A county may not approve the city's resource as itself, nor request for another region."""
    why = from_child(decided(GrantStatus.APPROVED, COUNTY, resource="410100-PSB-00001"))
    assert why == "approved recorded at 410102, but only 410100's node records that step"
    assert (
        from_child(decided(GrantStatus.REVOKED, TOWN)) is not None
    )  # the county decides, not the town
    request_for_city = replace(REQUEST, consumer_region=CITY, origin=COUNTY)
    assert from_child(request_for_city) is not None
    unknown = decided(GrantStatus.APPROVED, COUNTY, resource="410102-XXX-00009")
    assert "not in this node's catalog" in (from_child(unknown) or "")
    assert decider(unknown, None) is None
    assert decider(REQUEST, None) == TOWN


def test_a_version_far_ahead_of_the_readers_clock_is_refused() -> None:
    """An unrevocable version (2**62) is refused from a child and from the parent; skew is not."""
    huge = replace(decided(GrantStatus.APPROVED, COUNTY), version=2**62)
    assert "ahead of this node's clock" in (from_child(huge) or "")
    assert "ahead of this node's clock" in (handed_down_refusal(huge, NOW_MS) or "")
    skewed = replace(huge, version=NOW_MS + MAX_VERSION_AHEAD_MS)
    assert from_child(skewed) is None
    assert handed_down_refusal(skewed, NOW_MS) is None


class _Sink:
    """Collects what a relay delivers; accepts everything."""

    def __init__(self) -> None:
        self.got: list[Message] = []

    async def deliver(
        self, messages: Sequence[Message], substitute: Substitute | None = None
    ) -> list[RecordRejected | None]:
        self.got += messages
        return [None] * len(messages)

    async def reset(self) -> None:
        """Nothing to reset."""

    async def stop(self) -> None:
        """Nothing to stop."""


@dataclass(frozen=True)
class _Record:
    """A consumed grant event."""

    offset: int
    grant: Grant
    partition: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0

    @property
    def key(self) -> bytes:
        """The grant id."""
        return self.grant.grant_id.encode()

    @property
    def value(self) -> bytes:
        """The event as JSON."""
        return self.grant.to_json()


@pytest.mark.timeout(10)
def test_the_relay_copies_what_passes_and_refuses_the_rest_as_forged() -> None:
    """Of one batch from two hand-up topics, the forged approval goes to refusals, with why."""
    copies, refusals = _Sink(), _Sink()
    child_of = {"cx.grants.from.410102": COUNTY, "cx.grants.from.410103": OTHER_COUNTY}

    def check(grant: Grant, topic: str, now_ms: int) -> str | None:
        return handed_up_refusal(grant, child_of[topic], SOURCES.get(grant.resource), now_ms)

    relay = GrantRelay(
        "grants-from", source=None, sink=copies, topic="cx.grants",  # type: ignore[arg-type]
        keep=lambda grant: True, refusals=refusals, refused_topic="cx.refused", health=Health(),
        deadline_s=5, log=structlog.get_logger(), check=check, clock=lambda: NOW_MS / 1000,
    )  # fmt: skip
    forged = replace(
        decided(GrantStatus.APPROVED, COUNTY, resource="410100-PSB-00001"), grant_id="f"
    )
    batch: Batch = {
        Partition("cx.grants.from.410102", 0): [_Record(0, REQUEST), _Record(1, forged)],
        Partition("cx.grants.from.410103", 0): [_Record(0, replace(REQUEST, grant_id="g2"))],
    }
    asyncio.run(relay._relay(batch))
    assert [m.key for m in copies.got] == [b"g1"]
    assert {m.topic for m in copies.got} == {"cx.grants"}
    assert [m.key for m in refusals.got] == [b"f", b"g2"]
    headers = [dict(m.headers) for m in refusals.got]
    assert {h[REFUSAL_REASON] for h in headers} == {b"forged"}
    assert (
        b"from cx.grants.from.410102 refused: approved recorded at 410102"
        in headers[0][REFUSAL_MESSAGE]
    )
    assert b"outside the subtree of 410103" in headers[1][REFUSAL_MESSAGE]
