"""Reading a department's delivery topic from given offsets, for the HTTP gateway.

No consumer group and no commits: the caller keeps where it stopped (the gateway's cursor) and
asks again from there. A small pool of consumers is reused across requests; each request takes
one, asks for the partitions' first and end offsets, assigns them, seeks and fetches, then drops
the assignment and gives the consumer back. (An idle consumer keeping its assignment would keep
a fetch outstanding, and the broker answers a connection's requests in order, so the next
request's offset lookups would wait behind that fetch's ``fetch_max_wait_ms``.)

Resource handling: at most ``consumers`` consumers exist; a request waits for a free one within
its deadline. A consumer that failed is closed, not reused. ``close`` closes the idle ones and
every one handed back later, and ends long polls early.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from node.errors import TransportError
from node.kafka.closing import close_quietly
from node.kafka.connection import Connection, client_options
from node.transport import Record

FIRST_RECORD_WAIT_S = 5.0
"""How long a read waits for records the end offsets say are there (a fetch's round trip)."""
POLL_SLICE_S = 0.5
"""A long poll checks this often whether the reader is closing."""
PARTITIONS_TTL_S = 30.0
"""How long a topic's partition list is trusted before it is read again."""
READ_PARTITION_BYTES = 128 * 1024
READ_FETCH_BYTES = 512 * 1024
"""Bytes one fetch asks for per partition and in all: a page is at most 1,000 records, and the
client's defaults (1 MB a partition, 50 MB in all) took a node paging through three partitions
from 140 MB to 390-630 MB of RSS in ``benchmarks/bench_gateway.py``. A record larger than this
still comes (the broker returns a partition's first batch whole)."""


class KafkaDeliveryReader:
    """Reads topics of one cluster from caller-kept offsets (the gateway's ``DeliveryReader``)."""

    def __init__(
        self,
        bootstrap: Connection | str,
        client_id: str,
        *,
        consumers: int = 4,
        deadline_s: float = 30.0,
    ) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._deadline_s = deadline_s
        self._slots = asyncio.Semaphore(consumers)
        self._idle: list[AIOKafkaConsumer] = []
        self._partitions: dict[str, tuple[float, list[int]]] = {}
        self._closed = False

    async def read(
        self, topic: str, after: Mapping[int, int], limit: int, wait_s: float
    ) -> tuple[list[Record], dict[int, int]] | None:
        """Return up to ``limit`` records of ``topic`` from ``after`` and the next offsets.

        ``after`` maps partitions to the next offset to read; a partition missing from it, or
        whose offset lies beyond its end (the topic was recreated), is read from its beginning.
        Waits up to ``wait_s`` when nothing is there. Returns None when the topic does not
        exist. Raises TransportError when the cluster does not answer within the deadline.
        """
        try:
            async with asyncio.timeout(self._deadline_s + wait_s):
                async with self._slots:
                    consumer = self._idle.pop() if self._idle else await self._started()
                    healthy = False
                    try:
                        result = await self._read(consumer, topic, after, limit, wait_s)
                        healthy = True
                    finally:
                        if healthy and not self._closed:
                            consumer.unsubscribe()  # an idle consumer must not keep fetching
                            self._idle.append(consumer)
                        else:
                            await close_quietly(consumer.stop())
                    return result
        except KafkaError as error:
            raise TransportError(f"reading {topic} on {self._bootstrap}: {error!r}") from error
        except TimeoutError:
            raise TransportError(f"reading {topic} on {self._bootstrap}: timed out") from None

    async def _started(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            **client_options(self._bootstrap),
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # only when retention removed records meanwhile
            request_timeout_ms=int(max(self._deadline_s, 5.0) * 1000) + 5000,
            max_partition_fetch_bytes=READ_PARTITION_BYTES,
            fetch_max_bytes=READ_FETCH_BYTES,
        )
        try:
            await consumer.start()
        except BaseException:
            await close_quietly(consumer.stop())
            raise
        return consumer

    async def _read(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        after: Mapping[int, int],
        limit: int,
        wait_s: float,
    ) -> tuple[list[Record], dict[int, int]] | None:
        partitions = await self._partitions_of(consumer, topic)
        if partitions is None:
            return None
        tps = [TopicPartition(topic, p) for p in partitions]
        firsts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        positions: dict[int, int] = {}
        for tp in tps:
            wanted = after.get(tp.partition)
            if wanted is None or wanted > ends[tp]:
                wanted = firsts[tp]
            positions[tp.partition] = max(wanted, firsts[tp])  # retention removed the rest
        waiting = any(positions[tp.partition] < ends[tp] for tp in tps)
        if not waiting and wait_s <= 0:
            return [], positions
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, positions[tp.partition])
        deadline = time.monotonic() + max(wait_s, FIRST_RECORD_WAIT_S if waiting else 0.0)
        records: list[Record] = []
        while not self._closed:
            remaining = deadline - time.monotonic()
            batch = await consumer.getmany(
                *tps,
                timeout_ms=int(max(0.0, min(remaining, POLL_SLICE_S)) * 1000),
                max_records=limit,
            )
            for tp, fetched in batch.items():
                records.extend(fetched)
                positions[tp.partition] = fetched[-1].offset + 1
            if records or remaining <= 0:
                break
        return records, positions

    async def _partitions_of(self, consumer: AIOKafkaConsumer, topic: str) -> list[int] | None:
        known = self._partitions.get(topic)
        if known is not None and time.monotonic() - known[0] < PARTITIONS_TTL_S:
            return known[1]
        cluster = await consumer._client.fetch_all_metadata()  # aiokafka has no public one
        found = cluster.partitions_for_topic(topic)
        if not found:
            return None
        partitions = sorted(found)
        self._partitions[topic] = (time.monotonic(), partitions)
        return partitions

    async def close(self) -> None:
        """Close the idle consumers; the busy ones close when handed back."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(close_quietly(consumer.stop()) for consumer in idle))
