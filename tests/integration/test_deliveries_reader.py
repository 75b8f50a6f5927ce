"""The gateway's delivery reader pages through a topic with small fetches (real brokers).

Its fetches ask for little (``READ_PARTITION_BYTES``) so paging keeps the node's memory flat; a
record larger than that must still come, in order, once, as every other record does.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaProducer

from node.kafka.deliveries import READ_FETCH_BYTES, READ_PARTITION_BYTES, KafkaDeliveryReader
from node.kafka.topics import ensure_topics

PARTITIONS = 3
BIG = 600 * 1024
WAIT_S = 60.0


async def test_records_larger_than_a_fetch_come_in_order_and_once(
    clusters: dict[str, str], prefix: str
) -> None:
    """Small, big, small on every partition: all read back exactly once, in offset order."""
    assert max(READ_PARTITION_BYTES, READ_FETCH_BYTES) < BIG
    bootstrap, topic = clusters["county"], f"{prefix}.deliver.HRSS"
    await ensure_topics(bootstrap, [topic], PARTITIONS, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    sizes = [100] * 5 + [BIG] + [100] * 5 + [BIG, BIG] + [100] * 3
    try:
        for partition in range(PARTITIONS):
            for n, size in enumerate(sizes):
                value = f"{partition}-{n}-".encode().ljust(size, b".")
                await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()
    reader = KafkaDeliveryReader(bootstrap, "test-deliveries")
    read: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    cursor: dict[int, int] = {}
    deadline = time.monotonic() + WAIT_S
    try:
        while sum(len(values) for values in read.values()) < PARTITIONS * len(sizes):
            assert time.monotonic() < deadline, {p: len(v) for p, v in read.items()}
            page = await reader.read(topic, cursor, 1000, 0.5)
            assert page is not None
            records, cursor = page
            for record in records:
                read[record.partition].append(record.value or b"")
    finally:
        await reader.close()
    for partition, values in read.items():
        assert [v.split(b"-")[1] for v in values] == [f"{n}".encode() for n in range(len(sizes))]
        assert [len(v) for v in values] == sizes
        assert all(v.startswith(f"{partition}-".encode()) for v in values)
