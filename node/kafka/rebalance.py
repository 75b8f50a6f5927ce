"""Keeps a member's offset commits out of its group's rebalances.

aiokafka forgets its member id when a commit sent in one generation of the group is answered
after the next generation began (ILLEGAL_GENERATION): the member then joins again as a
stranger, and the group can wait for its former self until that session times out, 10 s in
which no member of the group reads anything. A worker process joining the group while another
commits its batches set this off once in 25 joins on the benchmark machine.

The ``CommitGate`` closes when the group takes this member's partitions back (aiokafka awaits
``on_partitions_revoked`` before it joins again) and first waits for a commit under way, so
none is in flight while the generation changes; it opens again once the new assignment is in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import ConsumerRebalanceListener, TopicPartition

T = TypeVar("T")


class CommitGate(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Lets one commit through at a time, and none from revocation to the next assignment."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()  # before the first join there is nothing to commit anyway
        self._passing = asyncio.Lock()

    @property
    def is_open(self) -> bool:
        """Whether a commit may go now."""
        return self._open.is_set()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Close, then wait for the commit under way (it has its own deadline)."""
        self._open.clear()
        async with self._passing:
            pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Open: the new generation is settled."""
        self._open.set()

    async def through(self, commit: Callable[[], Awaitable[T]], wait_s: float) -> T | None:
        """Run ``commit`` once the gate is open; None if it stayed closed for ``wait_s``."""
        try:
            async with asyncio.timeout(wait_s):
                while True:
                    await self._open.wait()
                    await self._passing.acquire()
                    if self._open.is_set():
                        break
                    self._passing.release()  # closed while this one waited its turn
        except TimeoutError:
            return None
        try:
            return await commit()
        finally:
            self._passing.release()
