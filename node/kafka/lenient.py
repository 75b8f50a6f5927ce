"""Reading a record batch aiokafka cannot: one with a header key that is not UTF-8.

aiokafka parses a whole record batch to hand out any record of it, and fails on a header key that
is not UTF-8 (Kafka's own clients read such keys leniently), so the good records after the bad
one in its batch cannot be read through the consumer. ``read_batch`` fetches the batch holding
an offset with a plain fetch request to the partition's leader and parses its records itself:
good ones as ``Read`` records, bad ones as ``(offset, problem)`` pairs.

It leans on aiokafka internals (the client of a consumer, the Python record batch reader's
decompression and buffer): any surprise there is reported as ``LenientReadError`` and the caller
falls back to refusing what it cannot read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.default_records import _DefaultRecordBatchPy
from aiokafka.record.util import decode_varint

from node.transport import Header

_BATCH_HEAD = struct.Struct(">qi")  # base offset, batch length (of what follows)
_MAGIC_AT = 16


class LenientReadError(Exception):
    """The batch could not be fetched or parsed this way (the caller falls back)."""


@dataclass(frozen=True, slots=True)
class Read:
    """A record read from the raw batch (the fields of ``node.transport.Record``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp: int


@dataclass(frozen=True, slots=True)
class BatchRead:
    """One batch's records from an offset on, its bad ones, and where the next batch starts."""

    records: list[Read]
    bad: list[tuple[int, str]]
    next_offset: int


async def read_batch(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, max_bytes: int, timeout_s: float
) -> BatchRead:
    """Fetch and parse the record batch of ``tp`` that holds ``offset``; LenientReadError."""
    try:
        data = await _fetch(consumer, tp, offset, max_bytes, timeout_s)
        return parse(data, tp, offset)
    except LenientReadError:
        raise
    except Exception as error:  # any surprise in aiokafka's internals: the caller falls back
        raise LenientReadError(repr(error)) from error


async def _fetch(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, max_bytes: int, timeout_s: float
) -> bytes:
    """Return the raw record batches of ``tp`` from ``offset`` (a plain fetch request)."""
    client = consumer._client  # the consumer's own connections and metadata
    leader = client.cluster.leader_for_partition(tp)
    if leader is None or leader < 0:
        raise LenientReadError(f"no leader known for {tp.topic} partition {tp.partition}")
    wanted = [(tp.topic, [(tp.partition, offset, max_bytes)])]
    response = await client.send(
        leader, FetchRequest(int(timeout_s * 1000), 1, max_bytes, 0, wanted)
    )
    ((_, partitions),) = response.topics
    (_, error_code, _, *data) = partitions[0]
    if error_code != 0:
        raise LenientReadError(f"fetch error code {error_code}")
    return bytes(data[-1] or b"")


def parse(data: bytes, tp: TopicPartition, offset: int) -> BatchRead:
    """Parse the first batch of ``data`` (raw record batches) that ends after ``offset``."""
    pos = 0
    while pos + _BATCH_HEAD.size <= len(data):
        _, length = _BATCH_HEAD.unpack_from(data, pos)
        end = pos + _BATCH_HEAD.size + length
        if end > len(data):
            break
        if data[pos + _MAGIC_AT] < 2:
            raise LenientReadError("not a v2 record batch")
        batch = _DefaultRecordBatchPy(data[pos:end])
        pos = end
        if batch.next_offset <= offset:
            continue
        if not batch.validate_crc():
            raise LenientReadError(f"record batch at offset {batch.base_offset} fails its CRC")
        if batch.is_control_batch:
            return BatchRead([], [], batch.next_offset)
        return _records(batch, tp, offset)
    raise LenientReadError(f"no whole record batch holding offset {offset} was returned")


def _records(batch: _DefaultRecordBatchPy, tp: TopicPartition, offset: int) -> BatchRead:
    """Parse every record of ``batch`` at ``offset`` or later, leniently."""
    batch._maybe_uncompress()
    buffer, pos = batch._buffer, batch._pos
    log_append = batch.timestamp_type == batch.LOG_APPEND_TIME
    records: list[Read] = []
    bad: list[tuple[int, str]] = []
    for _ in range(batch._num_records):
        length, pos = decode_varint(buffer, pos)
        end = pos + length
        _, pos = decode_varint(buffer, pos)  # attributes
        delta, pos = decode_varint(buffer, pos)
        stamp = batch.max_timestamp if log_append else batch.first_timestamp + delta
        offset_delta, pos = decode_varint(buffer, pos)
        key, pos = _bytes(buffer, pos)
        value, pos = _bytes(buffer, pos)
        count, pos = decode_varint(buffer, pos)
        headers: list[Header] = []
        problem = None
        for _ in range(max(count, 0)):
            size, pos = decode_varint(buffer, pos)
            raw = bytes(buffer[pos : pos + size])
            pos += size
            data, pos = _bytes(buffer, pos)
            try:
                headers.append((raw.decode("utf-8"), cast("bytes", data)))  # null stays null
            except UnicodeDecodeError:
                problem = "header key is not UTF-8"
        if pos != end:
            raise LenientReadError(f"record at offset {batch.base_offset + offset_delta} is torn")
        at = batch.base_offset + offset_delta
        if at < offset:
            continue
        if problem is not None:
            bad.append((at, problem))
        else:
            records.append(Read(tp.topic, tp.partition, at, key, value, tuple(headers), stamp))
    return BatchRead(records, bad, batch.next_offset)


def _bytes(buffer: bytearray, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(buffer, pos)
    if size < 0:
        return None, pos
    return bytes(buffer[pos : pos + size]), pos + size
