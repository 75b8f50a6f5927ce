"""The seams between a link and its transport: our record types and the protocols they cross.

A link reads from a ``RecordSource`` and writes to ``RecordSink``s; both speak only the types
below, never a client library's. ``node.kafka`` implements them over aiokafka; the tests have an
in-memory implementation that can be told to fail, stall, reject or lose its connection, and one
delivery-contract suite runs against both.

The delivery contract of a sink, which the link's ordering relies on:

- ``deliver`` returns, per message, None (acked) or RecordRejected (refused for good: too large
  for its topic); anything that may pass on retry raises DeliveryError. Given ``substitute``, a
  message too large for its topic is replaced in place by ``substitute(message, rejection)`` (a
  bounded stand-in), so order holds; it is rejected only if even the stand-in does not fit.
- Deliveries are ordered per destination partition: a message of a later ``deliver`` call is
  never written before every earlier call's messages for the same partition were acked, and when
  an earlier call failed for that partition, the later one fails too without writing it.
- ``reset`` abandons whatever is unacked (those calls raise DeliveryError); nothing abandoned is
  written afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from node.errors import DeliveryError, RecordRejected

Header = tuple[str, bytes]


class Partition(NamedTuple):
    """One partition of one topic."""

    topic: str
    partition: int


class Record(Protocol):
    """A consumed record. A protocol, so a client's own record objects pass without a copy."""

    @property
    def partition(self) -> int:
        """Partition it was read from."""

    @property
    def offset(self) -> int:
        """Its offset there."""

    @property
    def key(self) -> bytes | None:
        """The record key."""

    @property
    def value(self) -> bytes | None:
        """The value bytes, untouched."""

    @property
    def headers(self) -> Sequence[Header]:
        """Headers in the order they were written."""

    @property
    def timestamp(self) -> int:
        """When the writer produced it, ms since the epoch (Kafka's CreateTime)."""


Batch = Mapping[Partition, Sequence[Record]]
"""Fetched records by partition, each list in offset order."""


class Message(NamedTuple):
    """One record to produce (a named tuple: built per copy, it must be cheap to make)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    origin: tuple[int, int] | None = None
    """The source partition and its topic's partition count, if the message was read from one."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Records a source lost before they were read (retention removed them, or a recreation).

    ``first``..``last`` is the lost offset range (``last`` None when unknown).
    """

    partition: Partition
    first: int
    last: int | None
    resumed_at: int
    why: str


Substitute = Callable[[Message, RecordRejected], Message]
"""Makes a bounded stand-in for a message too large for its topic."""


class RecordSource(Protocol):
    """Reads one topic as a consumer group, committing explicitly."""

    topic: str

    async def start(self) -> None:
        """Connect and join the group; raise TransportError if that fails."""

    async def fetch(self) -> Batch:
        """Wait up to the fetch timeout for records; raise TransportError on failure."""

    def partition_count(self) -> int | None:
        """Partitions of the topic; None before known."""

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        """Commit next offsets; False if the group rebalanced; TransportError on failure."""

    def rewind(self, offsets: Mapping[Partition, int]) -> None:
        """Fetch again from ``offsets``."""

    def lag_by_partition(self) -> dict[int, int]:
        """Count records per partition not committed yet, as last seen; no I/O (scrape time).

        Partitions whose end or committed offset is not known yet are left out.
        """

    async def lag(self, timeout_s: float) -> int | None:
        """Count the records of the topic the group has not committed yet.

        None while unknown; TransportError when the cluster does not answer in ``timeout_s``.
        """

    async def stop(self) -> None:
        """Leave the group and close (bounded in time)."""


class RecordSink(Protocol):
    """Produces to one cluster under the delivery contract in this module's docstring."""

    async def deliver(
        self, messages: Sequence[Message], substitute: Substitute | None = None
    ) -> list[RecordRejected | None]:
        """Write ``messages``; return per message None or RecordRejected; DeliveryError."""

    async def reset(self) -> None:
        """Abandon everything unacked; the next ``deliver`` starts afresh."""

    async def stop(self) -> None:
        """Flush and close (bounded in time)."""


Clock = Callable[[], float]
"""Seconds since the epoch (``time.time``), injected so tests can move time."""


class PartitionOrder:
    """Chains writes per destination partition, as the delivery contract requires.

    ``write(key, send)`` runs ``send`` only after the previous write of ``key`` succeeded; if that
    one failed, this one fails with DeliveryError without running ``send``. ``abandon`` cancels
    every write still pending.
    """

    def __init__(self) -> None:
        self._tails: dict[Hashable, asyncio.Task[None]] = {}
        self._pending: set[asyncio.Task[None]] = set()

    def write(self, key: Hashable, send: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Queue ``send`` behind the previous write of ``key``; return its task."""
        previous = self._tails.get(key)

        async def chained() -> None:
            if previous is not None:
                try:
                    await asyncio.shield(previous)
                except asyncio.CancelledError:
                    if not previous.cancelled():
                        raise  # this write itself was cancelled
                    raise DeliveryError(f"an earlier write to {key} was abandoned") from None
                except Exception as error:
                    raise DeliveryError(f"an earlier write to {key} failed: {error}") from error
            await send()

        task = asyncio.ensure_future(chained())
        self._tails[key] = task
        self._pending.add(task)
        task.add_done_callback(lambda done: self._forget(key, done))
        return task

    def _forget(self, key: Hashable, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        failed = task.cancelled() or task.exception() is not None
        if self._tails.get(key) is task and not failed:
            del self._tails[key]  # a failed tail stays, so later writes fail until abandoned

    async def abandon(self) -> None:
        """Cancel every pending write and wait for them; later writes start a fresh chain."""
        pending = list(self._pending)
        self._tails.clear()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
