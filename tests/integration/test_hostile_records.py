"""Records no client library can read, written to a real broker, and what the node does with them.

A record whose header key is not UTF-8 is valid on the wire for the broker (Kafka's Java client
reads header keys leniently) but aiokafka cannot read it: its C reader raises a bare
UnicodeDecodeError, its Python reader CorruptRecordException. The record is written honestly: a
record batch built by aiokafka's own builder with a placeholder key, that key's bytes replaced
by ones of the same length that are not UTF-8, the batch's CRC recomputed, and the batch sent
with a plain produce request to the partition's leader.
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
from department_client import publish, read_topic
from sample_records import PERSON, sample

from node.codec import load_schemas, packaged_schema_dir
from node.kafka.source import KafkaSource, Unreadable
from node.kafka.topics import TopicNames
from node.transport import Record
from tests.integration.conftest import node_config
from tests.unit.test_catalog import entry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PLACEHOLDER = b"cx-placeholder"
NOT_UTF8 = b"cx-\xff\xfe\xfd-not-utf8"[: len(PLACEHOLDER)]
CRC_AT, ATTRIBUTES_AT = 17, 21
"""Byte offsets of a v2 record batch: the CRC-32C, and the attributes where what it covers starts."""
WAIT_S = 60.0
SCHEMAS = load_schemas(packaged_schema_dir())
COUNTY, CITY = "410102", "410100"
OPEN = "410102-PSB-00001"

Header = tuple[str, bytes]


def hostile_batch(records: Sequence[tuple[bytes, bytes, list[Header]]], bad: set[int]) -> bytes:
    """A v2 record batch of ``records``; those at index ``bad`` get a header key not UTF-8."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=16 * 1024 * 1024,
    )  # fmt: skip
    now_ms = int(time.time() * 1000)
    for index, (key, value, headers) in enumerate(records):
        marked = [*headers, (PLACEHOLDER.decode(), b"x")] if index in bad else headers
        assert builder.append(index, timestamp=now_ms, key=key, value=value, headers=marked)
    data = bytearray(builder.build())
    assert data.count(PLACEHOLDER) == len(bad)
    data = bytearray(data.replace(PLACEHOLDER, NOT_UTF8))
    struct.pack_into(">I", data, CRC_AT, calc_crc32c(bytes(data[ATTRIBUTES_AT:])))
    return bytes(data)


async def produce_raw(bootstrap: str, topic: str, partition: int, batch: bytes) -> None:
    """Send ``batch`` as it is to the leader of ``topic``/``partition``; raise if refused.

    A new topic's leader may not be elected yet (error 6, not the leader): asked again then.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        client = producer.client
        deadline = time.monotonic() + WAIT_S
        while True:
            await client.force_metadata_update()
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            if leader is not None and leader >= 0:
                request = ProduceRequest(None, -1, 10_000, [(topic, [(partition, batch)])])
                response = await asyncio.wait_for(client.send(leader, request), WAIT_S)
                ((_, partitions),) = response.topics
                error = partitions[0][1]
                if error == 0:
                    return
                assert error in (3, 6), f"the broker refused the crafted batch: error {error}"
            assert time.monotonic() < deadline, f"{topic} has no leader for {partition}"
            await asyncio.sleep(0.2)
    finally:
        await producer.stop()


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` and wait until it exists."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await asyncio.wait_for(
            admin.create_topics([NewTopic(topic, partitions, replication_factor=1)]), WAIT_S
        )
    finally:
        await admin.close()


def good(topic_ids: Sequence[str]) -> list[tuple[bytes, bytes, list[Header]]]:
    """Records keyed by their id, the id also in a header."""
    return [(i.encode(), b"v-" + i.encode(), [("cx-id", i.encode())]) for i in topic_ids]


async def test_aiokafka_cannot_read_a_header_key_that_is_not_utf8(
    clusters: dict[str, str],
) -> None:
    """The reproduction: a plain consumer raises UnicodeDecodeError, again on every retry."""
    bootstrap, topic = clusters["city"], f"hostile-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, 1)
    await produce_raw(bootstrap, topic, 0, hostile_batch(good(["a", "b", "c"]), {1}))
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        raised: list[type[BaseException]] = []
        read = 0
        deadline = time.monotonic() + WAIT_S
        while len(raised) < 3 and time.monotonic() < deadline:
            try:
                got = await asyncio.wait_for(consumer.getmany(timeout_ms=500), WAIT_S)
            except UnicodeDecodeError as error:
                raised.append(type(error))
            else:
                read += sum(len(records) for records in got.values())
        assert raised == [UnicodeDecodeError] * 3
        assert read == 0  # not even the record before the bad one
    finally:
        await consumer.stop()


async def read_all(source: KafkaSource, want: int) -> tuple[list[Record], int]:
    """Fetch until ``want`` records came or WAIT_S passed; return them and the fetches made."""
    got: list[Record] = []
    fetches = 0
    deadline = time.monotonic() + WAIT_S
    while len(got) < want and time.monotonic() < deadline:
        batch = await source.fetch()
        fetches += 1
        for records in batch.values():
            got.extend(records)
        if batch:
            await source.commit({p: rs[-1].offset + 1 for p, rs in batch.items()})
    return got, fetches


async def test_the_source_hands_out_a_stand_in_for_the_bad_record_and_every_other_once(
    clusters: dict[str, str],
) -> None:
    """Two partitions, bad records in the middle of one: a stand-in each, every good id once.

    Partition 0 holds 5 good records, then a record batch of 9 with bad ones at its indexes 2
    and 6, then 5 good; partition 1 holds 8 good records. The source never raises; aiokafka
    cannot read past the first bad record, so the source reads that batch itself. The
    stand-ins sit at the bad records' offsets (7 and 11) and say why; every other record comes
    once, in order.
    """
    bootstrap, topic = clusters["city"], f"hostile-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, 2)
    before, batch_ids, after = (
        [f"p0-{n}" for n in range(5)],
        [f"p0-{n}" for n in range(5, 14)],
        [f"p0-{n}" for n in range(14, 19)],
    )
    other = [f"p1-{n}" for n in range(8)]
    await produce_raw(bootstrap, topic, 0, hostile_batch(good(before), set()))
    await produce_raw(bootstrap, topic, 0, hostile_batch(good(batch_ids), {2, 6}))
    await produce_raw(bootstrap, topic, 0, hostile_batch(good(after), set()))
    await produce_raw(bootstrap, topic, 1, hostile_batch(good(other), set()))
    lost = [5 + 2, 5 + 6]
    expected = sorted({*before, *batch_ids, *after, *other} - {batch_ids[2], batch_ids[6]})

    source = KafkaSource(bootstrap, topic, f"g-{topic}", max_batch=100, fetch_timeout_ms=200)
    await source.start()
    try:
        got, fetches = await read_all(source, len(expected) + len(lost))
    finally:
        await source.stop()
    stand_ins = [r for r in got if isinstance(r, Unreadable)]
    ids = sorted(dict(r.headers)["cx-id"].decode() for r in got if not isinstance(r, Unreadable))
    print(f"fetches={fetches} records={len(got)} stand-ins={[r.offset for r in stand_ins]}")
    assert ids == expected  # every good record exactly once
    assert [(r.partition, r.offset) for r in stand_ins] == [(0, o) for o in lost]
    for stand_in, offset in zip(stand_ins, lost, strict=True):
        said = f"header key is not UTF-8 at offset {offset} of {topic} partition 0"
        assert stand_in.problem.startswith(said)
    by_partition: dict[int, list[int]] = {}
    for record in got:
        by_partition.setdefault(record.partition, []).append(record.offset)
    assert by_partition == {0: list(range(19)), 1: list(range(8))}  # in order, no gap


async def test_a_node_refuses_the_bad_record_as_a_stub_and_forwards_every_other(
    clusters: dict[str, str], prefix: str, nodes: Any, tmp_path: Path
) -> None:
    """A county node reads a department outbox: 10 records, a batch of 11 whose 5th is bad, 10.

    The bad record (offset 14) is refused as a stub (bad_envelope, the offset named); the 30
    others reach the city exactly once and in order; the link stays up.
    """
    (tmp_path / "catalog.toml").write_text(entry(OPEN), encoding="utf-8")
    config = node_config(
        COUNTY, "county", clusters["county"], prefix, parent=(clusters["city"], CITY, prefix),
        node={"catalog_dir": str(tmp_path)},
    )  # fmt: skip
    node = await nodes(config)
    now_ms = int(time.time() * 1000)
    records = [
        sample(SCHEMAS, PERSON, COUNTY, f"region:{CITY}", seed=n, created_ms=now_ms,
               resource=OPEN, source_dept="PSB")
        for n in range(31)
    ]  # fmt: skip
    raw = [(r.envelope.record_id.encode(), r.value, r.envelope.to_headers()) for r in records]
    outbox = f"{prefix}.outbox.PSB"
    await publish(clusters["county"], outbox, records[:10])
    await produce_raw(clusters["county"], outbox, 0, hostile_batch(raw[10:21], {4}))
    await publish(clusters["county"], outbox, records[21:])
    expected = [r.envelope.record_id for r in records[:14] + records[15:]]

    names = TopicNames(prefix)
    forwarded = await read_topic(
        clusters["city"], names.up(COUNTY), until=lambda got: len(got) >= len(expected),
        timeout_s=WAIT_S,
    )  # fmt: skip
    refused = await read_topic(
        clusters["county"], names.refused, until=lambda got: len(got) >= 1, timeout_s=WAIT_S
    )
    print(f"forwarded={len(forwarded)} refused={len(refused)}")
    assert [r.record_id for r in forwarded] == expected
    assert len(refused) == 1
    (stub,) = refused
    assert stub.headers["cx-refusal-reason"] == "bad_envelope"
    assert stub.value is None
    message = stub.headers["cx-refusal-message"]
    assert message.startswith(f"header key is not UTF-8 at offset 14 of {outbox} partition 0")
    assert await node.settled("exchange_records_refused_total", 1, link="local",
                              reason="bad_envelope") == 1  # fmt: skip
    async with aiohttp.ClientSession() as session:
        health = f"http://127.0.0.1:{node.admin_port}/healthz"
        async with session.get(health) as response:
            assert response.status == 200
