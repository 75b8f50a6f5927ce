"""Consuming exchange topics from Python: decoded records with their envelope, for subscribers.

A department's platform (or ``exchange-node tail``) reads a delivery topic, the inbox or the
refusal topic with ``Subscriber`` and gets ``Delivered`` values: the envelope parsed from the
headers, the value decoded with the shipped schemas (also when projected to a grant's items) and
made JSON-ready, and the refusal reason on refused records::

    schemas = load_schemas(packaged_schema_dir())
    async with Subscriber("127.0.0.1:19092", "cascade.deliver.HRSS",
                          group="hrss-platform", schemas=schemas) as subscriber:
        async for delivered in subscriber.records():
            store(delivered.envelope, delivered.value)   # your processing
            await subscriber.commit()                    # at-least-once: commit after it

Heartbeats between nodes are skipped. A record that cannot be read (malformed envelope, a value
that does not decode) is still returned, with ``error`` saying why, so one bad record never stops
a subscriber. Every wait is bounded; Kafka failures are raised as TransportError.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from node.compose import to_json
from node.core.avro import HEADER_SIZE, MAGIC, SchemaSet
from node.core.envelope import REFUSAL_MESSAGE, REFUSAL_REASON, REFUSED_BY, Envelope
from node.core.heartbeat import is_heartbeat
from node.errors import NodeError, PayloadError, TransportError
from node.kafka.closing import close_quietly
from node.kafka.connection import Connection, client_options
from node.kafka.messages import PROJECTION
from node.kafka.rebalance import CommitGate

DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a node refused a record (headers of a record on the refusal topic)."""

    reason: str
    """A stable reason code (README, "Refusal reasons"), e.g. ``cycle`` or ``no_grant``."""
    message: str
    refused_by: str
    """``REGION/LINK`` of the node and link that refused it."""


@dataclass(frozen=True, slots=True)
class Delivered:
    """One record read from a topic, decoded as far as it could be."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    envelope: Envelope | None
    """None when the envelope headers are missing or malformed (see ``error``)."""
    raw: bytes | None
    """The value as written (framed Avro), None for a refusal stub or a tombstone."""
    value: dict[str, Any] | None
    """The decoded value, JSON-ready (dates and times ISO, bytes hex); None if undecodable."""
    schema: str | None = None
    refusal: Refusal | None = None
    projection: tuple[str, ...] | None = None
    """The information items a projected value keeps (``cx-projection``), None if whole."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Every header as text (undecodable bytes replaced), the last value of a name winning."""
    error: str | None = None
    """Why the envelope or value could not be read; None when both were."""

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready description: position, envelope, refusal, value and error."""
        envelope = self.envelope
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "id": envelope.record_id if envelope else self.headers.get("cx-id"),
            "envelope": None if envelope is None else envelope_json(envelope),
            "refusal": None if self.refusal is None else {
                "reason": self.refusal.reason,
                "message": self.refusal.message,
                "refused_by": self.refusal.refused_by,
            },
            "projection": None if self.projection is None else list(self.projection),
            "schema": self.schema,
            "value": self.value,
            "error": self.error,
        }  # fmt: skip


def envelope_json(envelope: Envelope) -> dict[str, Any]:
    """Return the envelope as JSON-ready values (``created`` in ISO 8601, UTC)."""
    return {
        "id": envelope.record_id,
        "resource": envelope.resource,
        "source_region": envelope.source_region,
        "source_dept": envelope.source_dept,
        "target": str(envelope.target),
        "grade": envelope.grade,
        "sharing": envelope.sharing.value,
        "created_ms": envelope.created_ms,
        "created": iso_ms(envelope.created_ms),
        "hops": [str(hop) for hop in envelope.hops],
    }


def iso_ms(epoch_ms: int) -> str:
    """Return milliseconds since the epoch as ISO 8601 in UTC, to the millisecond."""
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ValueReader:
    """Decodes framed values, whole or projected; remembers the projected schemas it derived."""

    def __init__(self, schemas: SchemaSet) -> None:
        self._schemas = schemas
        self._projected: dict[tuple[bytes, tuple[str, ...]], SchemaSet] = {}

    def read(self, raw: bytes, projection: tuple[str, ...] | None) -> tuple[str, dict[str, Any]]:
        """Return (schema name, datum); raise PayloadError if the value cannot be decoded."""
        if projection is None:
            return self._schemas.decode(raw)
        if len(raw) < HEADER_SIZE or raw[:2] != MAGIC:
            raise PayloadError("value is not Avro single-object encoded (no C3 01 marker)")
        key = (raw[2:HEADER_SIZE], projection)
        found = self._projected.get(key)
        if found is None:
            found = self._projected[key] = self._projection_of(*key)
        return found.decode(raw)

    def _projection_of(self, fingerprint: bytes, items: tuple[str, ...]) -> SchemaSet:
        for name, schema in self._schemas.by_name.items():
            definition = schema.definition
            if not isinstance(definition, dict):
                continue
            fields = {field["name"] for field in definition.get("fields", ())}
            if set(items) <= fields:
                projected = self._schemas.projection(name, items)
                if projected.fingerprint == fingerprint:
                    return SchemaSet({name: projected})
        raise PayloadError(
            f"no known schema projected to {','.join(items)} has fingerprint {fingerprint.hex()}"
        )


def read_record(
    reader: ValueReader,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]],
) -> Delivered:
    """Parse the envelope, refusal and projection headers and decode the value; never raise."""
    headers = list(headers)
    texts = {name: (data or b"").decode("utf-8", "replace") for name, data in headers}
    problems: list[str] = []
    envelope: Envelope | None = None
    try:
        envelope = Envelope.from_headers(headers)
    except NodeError as error:
        problems.append(f"envelope: {error}")
    refusal = None
    if REFUSAL_REASON in texts:
        refusal = Refusal(
            texts[REFUSAL_REASON], texts.get(REFUSAL_MESSAGE, ""), texts.get(REFUSED_BY, "")
        )
    projection = None
    if PROJECTION in texts:
        projection = tuple(item for item in texts[PROJECTION].split(",") if item)
    schema = decoded = None
    if value is None:
        problems.append("value: none (a refusal stub or a deletion marker)")
    else:
        try:
            schema, datum = reader.read(value, projection)
            decoded = to_json(datum)
        except PayloadError as error:
            problems.append(f"value: {error}")
    return Delivered(
        topic, partition, offset, timestamp_ms, key, envelope, value, decoded, schema, refusal,
        projection, texts, "; ".join(problems) or None,
    )  # fmt: skip


class Subscriber:
    """Reads one topic of a Kafka cluster and returns its records decoded.

    With ``group`` the subscriber joins that consumer group: partitions are shared with the
    group's other members and ``commit`` stores how far it got, so a restart resumes there (a
    new group starts at the beginning if ``from_beginning``, else at the end). Without a group
    it reads every partition and commits nothing.

    Resource handling: use it as an async context manager (or call ``start`` and ``close``);
    ``close`` leaves the group within ``timeout_s``. Error handling: a cluster that cannot be
    reached within ``timeout_s`` on starting, a failed fetch or a failed commit raise
    TransportError; records that cannot be decoded never raise (see ``Delivered.error``).
    """

    def __init__(
        self,
        bootstrap: Connection | str,
        topic: str,
        *,
        schemas: SchemaSet,
        group: str | None = None,
        from_beginning: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_records: int = 500,
        client_id: str = "exchange-subscriber",
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.group = group
        self._reader = ValueReader(schemas)
        self._timeout_s = timeout_s
        self._max_records = max_records
        self._options: dict[str, Any] = {
            **client_options(bootstrap),
            "group_id": group,
            "client_id": client_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest" if from_beginning else "latest",
            "request_timeout_ms": max(1000, int(timeout_s * 1000)),
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._gate = CommitGate()

    async def start(self) -> None:
        """Connect and subscribe; raise TransportError if the cluster is not reached in time."""
        consumer = AIOKafkaConsumer(**self._options)
        try:
            await asyncio.wait_for(consumer.start(), self._timeout_s)
        except (TimeoutError, KafkaError, OSError) as error:
            await close_quietly(consumer.stop(), self._timeout_s)
            raise TransportError(
                f"cannot reach the Kafka cluster at {self.bootstrap} "
                f"within {self._timeout_s:g} s: {error!r}"
            ) from error
        self._gate = CommitGate()
        consumer.subscribe([self.topic], listener=self._gate)
        self._consumer = consumer

    async def close(self) -> None:
        """Leave the group and disconnect, within ``timeout_s``; uncommitted records stay so."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await close_quietly(consumer.stop(), self._timeout_s)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def poll(self, timeout_s: float = 1.0) -> list[Delivered]:
        """Wait at most ``timeout_s`` for records; return those read (empty if none came).

        Raises TransportError if the fetch fails or the client does not answer in time.
        """
        consumer = self._started_consumer()
        try:
            batch = await asyncio.wait_for(
                consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=self._max_records),
                timeout_s + self._timeout_s,
            )
        except (TimeoutError, KafkaError) as error:
            raise TransportError(f"reading {self.topic} on {self.bootstrap}: {error!r}") from error
        delivered: list[Delivered] = []
        for partition in sorted(batch, key=lambda tp: tp.partition):
            for record in batch[partition]:
                headers = list(record.headers or ())
                if is_heartbeat(headers):
                    continue
                read = read_record(
                    self._reader, partition.topic, partition.partition, record.offset,
                    record.timestamp, record.key, record.value, headers,
                )  # fmt: skip
                delivered.append(read)
        return delivered

    async def records(self, idle_timeout_s: float | None = None) -> AsyncGenerator[Delivered, None]:
        """Yield records as they come; end after ``idle_timeout_s`` without one (None: never)."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            wait = 1.0 if idle_timeout_s is None else max(0.0, last + idle_timeout_s - loop.time())
            batch = await self.poll(min(wait, 1.0))
            if batch:
                last = loop.time()
                for delivered in batch:
                    yield delivered
            elif idle_timeout_s is not None and loop.time() - last >= idle_timeout_s:
                return

    async def commit(self) -> None:
        """Store the group's position after every record returned so far (after processing them).

        Raises TransportError if the commit fails or is not acknowledged within ``timeout_s``
        (or the group is still rebalancing then: the records come again); ValueError without a
        group. No commit goes while the group rebalances (``node.kafka.rebalance``).
        """
        if self.group is None:
            raise ValueError("commit needs a consumer group (Subscriber(..., group=...))")
        consumer = self._started_consumer()
        if not consumer.assignment():
            return  # nothing assigned, nothing read: nothing to store

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s  # the gate's wait and the commit together

        async def stored() -> bool:
            await asyncio.wait_for(consumer.commit(), max(0.0, deadline - loop.time()))
            return True

        try:
            done = await self._gate.through(stored, self._timeout_s)
        except (TimeoutError, KafkaError) as error:
            raise TransportError(
                f"committing {self.topic} for group {self.group}: {error!r}"
            ) from error
        if done is None:
            raise TransportError(
                f"committing {self.topic} for group {self.group}: the group was still "
                f"rebalancing after {self._timeout_s:g} s (records not committed come again)"
            )

    def _started_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the subscriber is not started (use async with, or start())")
        return self._consumer
