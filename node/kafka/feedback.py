"""Correction feedback in Kafka: the store that keeps a node's book current, and a one-off read.

Every node appends the reports and status changes that pass it to its own compacted
``PREFIX.feedback`` topic (the links do, see ``node/kafka/bridge.py``). ``FeedbackStore`` reads
that topic from the beginning into the node's ``FeedbackBook``, so what a node knows survives
restarts; ``read_feedback`` reads it once to its end (the CLI). Neither writes anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka.errors import KafkaError

from node.core.feedback import FeedbackBook, decode, is_feedback
from node.errors import EnvelopeError, TransportError
from node.kafka.closing import close_quietly
from node.kafka.connection import Connection, state_reader, topic_partitions
from node.supervisor import Health


class FeedbackStore:
    """Reads ``topic`` into ``book`` until stopped; the loop ``feedback``."""

    def __init__(
        self,
        bootstrap: Connection | str,
        topic: str,
        book: FeedbackBook,
        health: Health,
        *,
        poll_ms: int = 100,
    ) -> None:
        self.name = "feedback"
        self.book = book
        self.unreadable = 0
        """Records of the topic that are not feedback (none, unless someone else writes it)."""
        self._bootstrap = bootstrap
        self._topic = topic
        self._health = health
        self._poll_ms = poll_ms
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        """Return from run() after the current poll."""
        self._stopping.set()

    async def run(self) -> None:
        """Read the topic from its beginning, then follow it; raise TransportError on failure."""
        consumer = state_reader(self._bootstrap)
        try:
            await consumer.start()
            partitions = await topic_partitions(consumer, self._topic, _missing(self._topic))
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            self._health.up(self.name)
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=self._poll_ms)
                for records in batch.values():
                    for record in records:
                        self.unreadable += not _fold(self.book, record.headers, record.value)
        except KafkaError as error:
            raise TransportError(f"reading feedback from {self._topic}: {error!r}") from error
        finally:
            await close_quietly(consumer.stop())


async def read_feedback(
    bootstrap: Connection | str, topic: str, *, deadline_s: float
) -> FeedbackBook:
    """Read ``topic`` to its end into a new book; raise TransportError past ``deadline_s``."""
    book = FeedbackBook()
    consumer = state_reader(bootstrap)
    try:
        async with asyncio.timeout(deadline_s):
            await consumer.start()
            partitions = await topic_partitions(consumer, topic, _missing(topic))
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            await consumer.seek_to_beginning(*partitions)
            behind = [tp for tp in partitions if ends[tp] > 0]
            while behind:
                batch = await consumer.getmany(*behind, timeout_ms=200)
                for tp, records in batch.items():
                    for record in records:
                        if record.offset < ends[tp]:
                            _fold(book, record.headers, record.value)
                behind = [tp for tp in behind if await consumer.position(tp) < ends[tp]]
    except TimeoutError as error:
        raise TransportError(f"{topic} on {bootstrap}: not read within {deadline_s:g} s") from error
    except (KafkaError, OSError) as error:
        raise TransportError(f"reading {topic} on {bootstrap}: {error!r}") from error
    finally:
        await close_quietly(consumer.stop())
    return book


def _fold(
    book: FeedbackBook, headers: Sequence[tuple[str, bytes]] | None, value: bytes | None
) -> bool:
    """Add one record of the feedback topic to ``book``; False if it is not feedback."""
    listed = list(headers or ())
    if not is_feedback(listed):
        return False
    try:
        book.add(decode(listed[0][1], value))
    except EnvelopeError:
        return False
    return True


def _missing(topic: str) -> str:
    return f"feedback topic {topic} does not exist (has the node run?)"
