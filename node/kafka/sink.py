"""A sink: one idempotent producer (acks=all) to one cluster, delivering batches of messages."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

from node.errors import DeliveryError, RecordRejected, TransportError

_PERMANENT = (MessageSizeTooLargeError, RecordTooLargeError)

Header = tuple[str, bytes]


@dataclass(frozen=True, slots=True)
class Message:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[Header]


class Sink:
    """Produces to one cluster with idempotence on, so retries inside the client never duplicate."""

    def __init__(self, bootstrap: str, client_id: str, *, linger_ms: int = 5) -> None:
        self.bootstrap = bootstrap
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
        )

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
        pending: list[tuple[int, asyncio.Future[object]]] = []
        for index, message in enumerate(messages):
            try:
                future = await self._producer.send(
                    message.topic, message.value, key=message.key, headers=list(message.headers)
                )
            except _PERMANENT as error:
                results[index] = RecordRejected(f"{message.topic}: {error!r}")
                continue
            except KafkaError as error:
                raise DeliveryError(f"sending to {message.topic}: {error!r}") from error
            pending.append((index, future))
        acks = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
        for (index, _), ack in zip(pending, acks, strict=True):
            if isinstance(ack, _PERMANENT):
                results[index] = RecordRejected(f"{messages[index].topic}: {ack!r}")
            elif isinstance(ack, KafkaError):
                raise DeliveryError(f"producing to {messages[index].topic}: {ack!r}") from ack
            elif isinstance(ack, BaseException):
                raise ack
        return results

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Flush what is buffered and close; give up after ``timeout_s`` (cluster unreachable).

        Nothing is lost by giving up: unacked records were never committed at their source.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._producer.stop(), timeout_s)
