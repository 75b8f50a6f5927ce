"""A sink over aiokafka: one idempotent producer (acks=all) per link, writing whole record batches.

Implements ``node.transport.RecordSink`` and its delivery contract. Messages are grouped by
destination partition; each partition's share of a call is written batch after batch, behind the
previous call's share (``PartitionOrder``), so a failed batch is never overtaken by a later one. A
message keeps the partition it was read from when the destination topic has as many partitions
as its source (as MirrorMaker 2 does); otherwise the key picks it, as Kafka's default does.

Batches are sized to the destination topic's ``max.message.bytes`` (read once per topic), so the
broker never refuses a batch for size: a record that does not fit even alone is returned as
RecordRejected before anything is sent, and the idempotent sequence stays without gaps. If the
broker refuses for size all the same (the limit was lowered), the limit is read again and the
delivery fails, to be retried.

``reset`` aborts the producer: aiokafka retries an idempotent batch for ever while the cluster is
unreachable, so an abandoned producer must never be left to write later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from node.errors import DeliveryError, RecordRejected
from node.kafka.closing import close_quietly, own_cancellation
from node.kafka.connection import Connection, client_options
from node.kafka.topics import TopicLimits
from node.transport import Message, PartitionOrder, Substitute

MAX_REQUEST_SIZE = 16 * 1024 * 1024
_SIZE_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError)
CLOSE_TIMEOUT_S = 5.0


class KafkaSink:
    """Produces to one cluster with idempotence on, so retries inside the client never duplicate."""

    def __init__(
        self,
        bootstrap: Connection | str,
        client_id: str,
        limits: TopicLimits,
        *,
        batch_bytes: int = 1_000_000,
        deadline_s: float = 30.0,
        linger_ms: int = 5,
    ) -> None:
        self.bootstrap = bootstrap
        self._client_id = client_id
        self._limits = limits
        self._batch_bytes = batch_bytes
        self._deadline_s = deadline_s
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self._order = PartitionOrder()
        self._enqueue = asyncio.Lock()  # one call's writes are queued before the next call's

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                **client_options(self.bootstrap),
                client_id=self._client_id,
                enable_idempotence=True,
                acks="all",
                linger_ms=self._linger_ms,
                max_batch_size=self._batch_bytes,
                max_request_size=MAX_REQUEST_SIZE,
                request_timeout_ms=int(self._deadline_s * 1000),
            )
            try:
                await asyncio.wait_for(producer.start(), self._deadline_s)
            except (KafkaError, TimeoutError) as error:
                await _abort(producer)
                raise DeliveryError(f"connecting to {self.bootstrap}: {error!r}") from error
            except asyncio.CancelledError:  # a hard stop while connecting: close it all the same
                await _abort(producer)
                raise
            self._producer = producer
        return self._producer

    async def deliver(
        self, messages: Sequence[Message], substitute: Substitute | None = None
    ) -> list[RecordRejected | None]:
        """Produce ``messages`` and wait for every ack (no deadline here: the caller sets one).

        Returns, per message, None when acked or RecordRejected when it cannot fit its topic
        (with ``substitute``: when even its stand-in cannot). Raises DeliveryError when anything
        failed that may pass on retry.
        """
        results: list[RecordRejected | None] = [None] * len(messages)
        async with self._enqueue:
            producer = await self._started()
            try:
                groups = await self._by_partition(producer, messages)
                limits = {topic: await self._limits.max_message_bytes(topic) for topic, _ in groups}
            except KafkaError as error:
                raise DeliveryError(f"metadata of {self.bootstrap}: {error!r}") from error
            writes = [
                self._order.write(
                    (topic, partition),
                    partial(
                        self._write,
                        producer,
                        topic,
                        partition,
                        messages,
                        indexes,
                        limits[topic],
                        results,
                        substitute,
                    ),
                )
                for (topic, partition), indexes in groups.items()
            ]
        outcomes = await asyncio.gather(*writes, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, asyncio.CancelledError):
                raise DeliveryError(f"delivery to {self.bootstrap} was abandoned")
            if isinstance(outcome, BaseException):
                raise outcome
        return results

    async def _by_partition(
        self, producer: AIOKafkaProducer, messages: Sequence[Message]
    ) -> dict[tuple[str, int], list[int]]:
        """Pick each message's destination partition; group message indexes by it."""
        groups: dict[tuple[str, int], list[int]] = {}
        partitions: dict[str, list[int]] = {}
        for index, message in enumerate(messages):
            every = partitions.get(message.topic)
            if every is None:
                every = partitions[message.topic] = sorted(
                    await asyncio.wait_for(producer.partitions_for(message.topic), self._deadline_s)
                )
            origin = message.origin
            if origin is not None and origin[1] == len(every):
                partition = origin[0]
            else:
                partition = self._partitioner(message.key, every, every)
            groups.setdefault((message.topic, partition), []).append(index)
        return groups

    async def _write(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        partition: int,
        messages: Sequence[Message],
        indexes: list[int],
        limit: int,
        results: list[RecordRejected | None],
        substitute: Substitute | None,
    ) -> None:
        """Write one partition's messages batch after batch, each acked before the next."""
        size = min(self._batch_bytes, limit)
        batch, count = BatchBuilder(size, 0), 0

        async def add(message: Message) -> None:
            """Append ``message``; when the batch is full, send it and start the next with it."""
            nonlocal batch, count
            if not _appended(batch, message):
                await self._send(producer, batch, topic, partition)
                batch, count = BatchBuilder(size, 0), 0
                _appended(batch, message)
            count += 1

        for index in indexes:
            message = messages[index]
            if _appended(batch, message):  # most do: no coroutine made for them
                count += 1
            else:
                await add(message)
            if count == 1 and batch.size() > limit:  # alone, and still too large for its topic
                rejected = RecordRejected(
                    f"{topic}: a record of {batch.size()} bytes exceeds its max.message.bytes "
                    f"of {limit}"
                )
                batch, count = BatchBuilder(size, 0), 0
                if substitute is None:
                    results[index] = rejected
                    continue
                await add(substitute(message, rejected))
                if batch.size() > limit:
                    results[index] = RecordRejected(f"{rejected}; so is its stand-in")
                    batch, count = BatchBuilder(size, 0), 0
        if count:
            await self._send(producer, batch, topic, partition)

    async def _send(
        self, producer: AIOKafkaProducer, batch: BatchBuilder, topic: str, partition: int
    ) -> None:
        batch.close()  # complete: it need not linger for more
        try:
            future = await producer.send_batch(batch, topic, partition=partition)
            future.add_done_callback(_retrieved)  # an abandoned batch's failure is not an error
            await future
        except _SIZE_ERRORS as error:
            self._limits.forget(topic)
            raise DeliveryError(
                f"{topic}[{partition}] refused a batch for size: {error!r}"
            ) from error
        except KafkaError as error:
            raise DeliveryError(f"producing to {topic}[{partition}]: {error!r}") from error

    async def reset(self) -> None:
        """Abandon every unacked write and abort the producer; the next call starts a new one."""
        await self._order.abandon()
        producer, self._producer = self._producer, None
        if producer is not None:
            await _abort(producer)

    async def stop(self) -> None:
        """Flush what is buffered and close; abort if that takes longer than a few seconds.

        Nothing is lost by aborting: unacked records were never committed at their source.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(producer.stop()), CLOSE_TIMEOUT_S)
        except (TimeoutError, KafkaError):
            await _abort(producer)
        except asyncio.CancelledError:
            if own_cancellation():
                raise
            await _abort(producer)


async def _abort(producer: AIOKafkaProducer) -> None:
    """Stop a producer at once, dropping what it still holds (aiokafka has no public abort)."""
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    if task is not None:
        task.cancel()  # stop() then skips the flush that would wait for an unreachable cluster
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is not None:
        accumulator.fail_all(KafkaError("producer aborted"))  # nothing left to flush, or to write
    await close_quietly(producer.stop(), CLOSE_TIMEOUT_S)


def _appended(batch: BatchBuilder, message: Message) -> bool:
    """Append ``message`` to ``batch``; False when the batch is full (or closed)."""
    return (
        batch.append(key=message.key, value=message.value, timestamp=None, headers=message.headers)
        is not None
    )


def _retrieved(future: asyncio.Future[object]) -> None:
    """Mark a batch's outcome as seen, so abandoning it logs nothing."""
    if not future.cancelled():
        future.exception()
