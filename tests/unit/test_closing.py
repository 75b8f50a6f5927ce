"""Closing clients: their failures and stray cancellations are swallowed, ours are not."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError

from node.kafka.closing import close_quietly


async def raising(error: BaseException) -> None:
    """A close that fails with ``error``."""
    raise error


async def test_a_close_that_fails_or_hangs_is_swallowed_within_its_deadline() -> None:
    """A Kafka error, an escaping CancelledError and a hang all end quietly, the hang in time."""
    await close_quietly(raising(KafkaConnectionError()))
    await close_quietly(raising(asyncio.CancelledError()))
    forever = asyncio.Event()
    await asyncio.wait_for(close_quietly(forever.wait(), timeout_s=0.05), 5)


async def test_cancelling_the_closer_itself_still_cancels_it() -> None:
    """A hard stop of the task that is closing a client is not swallowed."""
    forever = asyncio.Event()
    closing = asyncio.ensure_future(close_quietly(forever.wait(), timeout_s=60))
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(closing, 5)
