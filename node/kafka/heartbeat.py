"""The heartbeat loops: a small record on every link this node feeds, every few seconds.

``heartbeat-up`` writes to the parent's ``up.REGION`` (the topic only this node may write there, so
the parent knows the beat is this node's), ``heartbeat-down`` to each child's hand-over topic
on the local cluster, so each neighbour can tell a silent link from an idle one. A write that is
not acked within the deadline raises TransportError: the supervisor marks the loop down with the
reason and retries; the sink is reset first, so an abandoned heartbeat is never written later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import structlog

from node.core.heartbeat import HEARTBEAT, VERSION, Beat
from node.errors import TransportError
from node.ops.events import HeartbeatRejected, emit
from node.supervisor import Health
from node.transport import Message, RecordSink


class HeartbeatSender:
    """Writes ``beat()`` to every topic in ``topics`` every ``interval_s`` until stopped.

    ``after_beat`` runs after each heartbeat sent (the app logs neighbours falling silent there).
    """

    def __init__(
        self,
        name: str,
        sink: RecordSink,
        topics: Sequence[str],
        beat: Callable[[], Beat],
        health: Health,
        *,
        interval_s: float,
        deadline_s: float,
        on_sent: Callable[[int], None],
        log: structlog.typing.FilteringBoundLogger,
        after_beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self._sink = sink
        self._topics = list(topics)
        self._beat = beat
        self._health = health
        self._interval_s = interval_s
        self._deadline_s = deadline_s
        self._on_sent = on_sent
        self._after_beat = after_beat
        self._log = log.bind(loop=name)
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        """Return from run() at the next tick."""
        self._stopping.set()

    async def run(self) -> None:
        """Send a heartbeat every interval; raise TransportError when one is not acked in time."""
        while not self._stopping.is_set():
            await self._send()
            if not self._health.is_up(self.name):
                self._health.up(self.name)
            self._after_beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)

    async def _send(self) -> None:
        beat = self._beat()
        value, key = beat.encode(), beat.region.encode()
        messages = [Message(t, key, value, [(HEARTBEAT, VERSION)]) for t in self._topics]
        try:
            results = await asyncio.wait_for(self._sink.deliver(messages), self._deadline_s)
        except TimeoutError:
            await self._sink.reset()
            raise TransportError(
                f"heartbeat not acked within {self._deadline_s:g} s by {self._topics}"
            ) from None
        except TransportError:
            await self._sink.reset()
            raise
        sent = 0
        for message, rejected in zip(messages, results, strict=True):
            if rejected is None:
                sent += 1
            else:  # too large for the topic: say so, and keep beating on the others
                emit(self._log, HeartbeatRejected(message.topic, str(rejected)))
        self._on_sent(sent)
