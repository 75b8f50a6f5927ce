"""The commit gate: no commit in flight while the group changes generation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from node.kafka.rebalance import CommitGate


def recording(
    sent: list[str], name: str, answered: asyncio.Event | None = None
) -> Callable[[], Awaitable[bool]]:
    """A commit that notes ``name`` in ``sent`` when it is answered (once ``answered`` is set)."""

    async def commit() -> bool:
        if answered is not None:
            await answered.wait()
        sent.append(name)
        return True

    return commit


async def test_revocation_waits_for_the_commit_under_way() -> None:
    """The next join waits for revocation: the commit under way is answered before it."""
    gate = CommitGate()
    answered = asyncio.Event()
    order: list[str] = []
    slow_commit = recording(order, "commit answered", answered)
    committing = asyncio.create_task(gate.through(slow_commit, 5.0))
    await asyncio.sleep(0)  # the commit is under way
    revoking = asyncio.create_task(gate.on_partitions_revoked(set()))
    await asyncio.sleep(0.05)
    assert not revoking.done()  # aiokafka would be joining now: it must not
    assert not gate.is_open
    answered.set()
    await asyncio.wait_for(revoking, 1.0)
    order.append("revoked")
    assert await committing is True
    assert order == ["commit answered", "revoked"]


async def test_a_commit_waits_for_the_new_assignment() -> None:
    """A commit asked for between revocation and assignment goes after the assignment."""
    gate = CommitGate()
    await gate.on_partitions_revoked(set())
    sent: list[str] = []
    commit = recording(sent, "sent")

    waiting = asyncio.create_task(gate.through(commit, 5.0))
    await asyncio.sleep(0.05)
    assert sent == []  # not while the generation changes
    await gate.on_partitions_assigned(set())
    assert await asyncio.wait_for(waiting, 1.0) is True
    assert sent == ["sent"]


async def test_a_gate_closed_past_the_wait_sends_nothing_and_says_so() -> None:
    """None after the wait, nothing sent, and the gate still works afterwards."""
    gate = CommitGate()
    await gate.on_partitions_revoked(set())
    sent: list[str] = []
    commit = recording(sent, "sent")

    assert await gate.through(commit, 0.05) is None
    assert sent == []
    await gate.on_partitions_assigned(set())
    assert await gate.through(commit, 0.05) is True  # the timed-out wait left nothing held


async def test_a_commit_that_queued_before_revocation_does_not_slip_in_after_it() -> None:
    """One waiting for its turn when the gate closes waits for the next assignment."""
    gate = CommitGate()
    release = asyncio.Event()
    sent: list[str] = []
    first, second = recording(sent, "first", release), recording(sent, "second")

    one = asyncio.create_task(gate.through(first, 5.0))
    await asyncio.sleep(0)
    two = asyncio.create_task(gate.through(second, 5.0))  # queued behind the first
    await asyncio.sleep(0)
    revoking = asyncio.create_task(gate.on_partitions_revoked(set()))
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(revoking, 1.0)
    assert sent == ["first"]  # the second did not go between revocation and assignment
    await gate.on_partitions_assigned(set())
    assert await asyncio.wait_for(two, 1.0) is True
    assert await one is True
    assert sent == ["first", "second"]
