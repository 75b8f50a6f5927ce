"""A sink: one idempotent producer (acks=all) to one cluster, delivering batches of messages.

Messages are grouped by topic and partition and handed to the producer as whole record batches:
one future per batch, not per record. A message keeps the partition it was read from when the
destination topic has as many partitions as its source (as MirrorMaker 2 does; for keyed records
the key partitioner would pick the same one); otherwise the key picks it, as Kafka's default does.
A batch the broker rejects for size is retried record by record, so only the offending record is
rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from node.errors import DeliveryError, RecordRejected, TransportError

_PERMANENT = (MessageSizeTooLargeError, RecordTooLargeError)
MAX_REQUEST_SIZE = 4 * 1024 * 1024

Header = tuple[str, bytes]


class Message(NamedTuple):
    """One record to produce (a named tuple: built per copy, it must be cheap to make)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    origin: tuple[int, int] | None = None
    """The source partition and its topic's partition count, if the message was read from one."""


class Sink:
    """Produces to one cluster with idempotence on, so retries inside the client never duplicate."""

    def __init__(
        self, bootstrap: str, client_id: str, *, linger_ms: int = 5, batch_bytes: int = 1_000_000
    ) -> None:
        self.bootstrap = bootstrap
        self._client_id = client_id
        self._linger_ms = linger_ms
        self._batch_bytes = batch_bytes
        self._producer = self._new_producer()
        self._partitioner = DefaultPartitioner()
        self._enqueue = asyncio.Lock()  # batches of concurrent deliveries queue in call order
        self._reset_lock = asyncio.Lock()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self._client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=self._linger_ms,
            max_batch_size=self._batch_bytes,
            max_request_size=MAX_REQUEST_SIZE,
        )

    async def _reset(self, failed: AIOKafkaProducer) -> None:
        """Replace ``failed`` after a rejected batch, unless another delivery already did.

        A batch the broker refuses leaves a gap in the idempotent sequence of its partition, and
        every later batch then fails with OutOfOrderSequenceNumber; a new producer (a new producer
        id) starts the sequences afresh. Concurrent deliveries that saw the same failure replace
        it once (a lock and an identity check).
        """
        async with self._reset_lock:
            if self._producer is not failed:
                return
            with contextlib.suppress(TimeoutError, KafkaError):
                await asyncio.wait_for(failed.stop(), 10)
            fresh = self._new_producer()
            try:
                await fresh.start()
            except KafkaError as error:
                raise DeliveryError(
                    f"restarting the producer to {self.bootstrap}: {error!r}"
                ) from error
            self._producer = fresh

    async def start(self) -> None:
        """Connect; raise TransportError if the cluster is unreachable."""
        try:
            await self._producer.start()
        except KafkaError as error:
            raise TransportError(f"producer to {self.bootstrap}: {error!r}") from error

    async def deliver(self, messages: Sequence[Message]) -> list[RecordRejected | None]:
        """Produce ``messages`` and wait for every ack.

        Returns, per message, None when acked or RecordRejected when the broker refuses that
        record for good. Raises DeliveryError when anything failed that may pass on retry.
        """
        results: list[RecordRejected | None] = [None] * len(messages)
        producer = self._producer
        try:
            async with self._enqueue:
                batches = await self._submit(producer, messages, results)
            acks = await asyncio.gather(*(future for _, future in batches), return_exceptions=True)
        except KafkaError as error:
            raise DeliveryError(f"producing to {self.bootstrap}: {error!r}") from error
        failures = [ack for ack in acks if isinstance(ack, BaseException)]
        if failures:
            await self._reset(producer)
        for (indexes, _), ack in zip(batches, acks, strict=True):
            if isinstance(ack, _PERMANENT):
                await self._one_by_one(messages, indexes, results)
            elif isinstance(ack, KafkaError):
                raise DeliveryError(f"producing to {messages[indexes[0]].topic}: {ack!r}") from ack
            elif isinstance(ack, BaseException):
                raise ack
        return results

    async def _submit(
        self,
        producer: AIOKafkaProducer,
        messages: Sequence[Message],
        results: list[RecordRejected | None],
    ) -> list[tuple[list[int], asyncio.Future[object]]]:
        """Group messages into record batches per partition and hand each to the producer."""
        by_partition: dict[tuple[str, int], list[int]] = {}
        partitions: dict[str, list[int]] = {}
        for index, message in enumerate(messages):
            if message.topic not in partitions:
                known = await producer.partitions_for(message.topic)
                partitions[message.topic] = sorted(known)
            size = len(message.value or b"")
            if size > MAX_REQUEST_SIZE // 2:  # only large values can come near the limit
                size = DefaultRecordBatchBuilder.estimate_size_in_bytes(
                    message.key, message.value, message.headers
                )
            if size > MAX_REQUEST_SIZE:
                results[index] = RecordRejected(
                    f"{message.topic}: record of {size} bytes too large"
                )
                continue
            every = partitions[message.topic]
            origin = message.origin
            if origin is not None and origin[1] == len(every):
                partition = origin[0]
            else:
                partition = self._partitioner(message.key, every, every)
            by_partition.setdefault((message.topic, partition), []).append(index)
        submitted = []
        for (topic, partition), indexes in by_partition.items():
            batch = producer.create_batch()
            in_batch: list[int] = []
            for index in indexes:
                message = messages[index]
                while (
                    batch.append(
                        key=message.key,
                        value=message.value,
                        timestamp=None,
                        headers=message.headers,
                    )
                    is None
                ):
                    submitted.append((in_batch, await _send(producer, batch, topic, partition)))
                    batch, in_batch = producer.create_batch(), []
                in_batch.append(index)
            if in_batch:
                submitted.append((in_batch, await _send(producer, batch, topic, partition)))
        return submitted

    async def _one_by_one(
        self, messages: Sequence[Message], indexes: list[int], results: list[RecordRejected | None]
    ) -> None:
        """Resend a batch refused for size record by record, so only the culprit is rejected."""
        for index in indexes:
            message = messages[index]
            producer = self._producer
            try:
                future = await producer.send(
                    message.topic, message.value, key=message.key, headers=list(message.headers)
                )
                await future
            except _PERMANENT as error:
                results[index] = RecordRejected(f"{message.topic}: {error!r}")
                await self._reset(producer)
            except KafkaError as error:
                await self._reset(producer)
                raise DeliveryError(f"producing to {message.topic}: {error!r}") from error

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Flush what is buffered and close; give up after ``timeout_s`` (cluster unreachable).

        Nothing is lost by giving up: unacked records were never committed at their source.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._producer.stop(), timeout_s)


async def _send(
    producer: AIOKafkaProducer, batch: BatchBuilder, topic: str, partition: int
) -> asyncio.Future[object]:
    """Hand a complete batch to the producer closed: nothing more comes, so it need not linger."""
    batch.close()
    future: asyncio.Future[object] = await producer.send_batch(batch, topic, partition=partition)
    return future
