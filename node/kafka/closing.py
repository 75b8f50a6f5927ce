"""Closing aiokafka clients within a deadline, without letting their internal errors escape.

aiokafka's ``stop()`` can wait for an unreachable cluster, raise its own errors, or let an
internal task's cancellation escape (aiokafka#647). None of that may end a loop of the node:
``close_quietly`` waits at most ``timeout_s`` and swallows all three, but never swallows a
cancellation of the caller's own task (a hard stop must still stop it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiokafka.errors import KafkaError

CLOSE_TIMEOUT_S = 5.0


async def close_quietly(closing: Awaitable[object], timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Await ``closing`` for at most ``timeout_s``; ignore its failures, not our cancellation."""
    try:
        await asyncio.wait_for(closing, timeout_s)
    except (TimeoutError, KafkaError, OSError):
        return
    except asyncio.CancelledError:
        if own_cancellation():
            raise
        return  # escaped from inside the client: it is closed all the same


def own_cancellation() -> bool:
    """Tell whether the running task has been asked to cancel (not merely hit a stray one)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
