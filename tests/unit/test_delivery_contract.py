"""The delivery contract against the in-memory sink, and the in-memory transport's fault switches.

The contract checks themselves live in ``tests/contract_checks.py``; the same checks run against
KafkaSink and real brokers in ``tests/integration/test_delivery_contract_kafka.py``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from node.errors import DeliveryError, RecordRejected, TransportError
from node.transport import Partition
from tests.contract_checks import (
    BATCH_BYTES,
    CHECKS,
    TIMEOUT_S,
    Check,
    Landed,
    deliver,
    message,
)
from tests.memory_transport import (
    RECORD_OVERHEAD,
    MemoryCluster,
    MemorySink,
    MemorySource,
    record_size,
)


@dataclass
class MemoryTarget:
    """The in-memory sink under the contract checks."""

    cluster: MemoryCluster = field(default_factory=MemoryCluster)
    made: int = 0

    def __post_init__(self) -> None:
        self.memory_sink = MemorySink(self.cluster, batch_bytes=BATCH_BYTES)

    @property
    def sink(self) -> MemorySink:
        """The sink under test."""
        return self.memory_sink

    async def create_topic(self, partitions: int, max_message_bytes: int | None = None) -> str:
        """Create a fresh topic."""
        self.made += 1
        name = f"contract.{self.made}"
        self.cluster.create_topic(name, partitions, max_message_bytes or 0)
        return name

    async def read_back(self, topic: str) -> list[Landed]:
        """Every record of ``topic``."""
        return [
            Landed(r.partition, r.offset, r.key, dict(r.headers)["cx-id"].decode())
            for r in self.cluster.records(topic)
        ]


@pytest.fixture
def target() -> MemoryTarget:
    """A fresh in-memory cluster and sink."""
    return MemoryTarget()


@pytest.mark.parametrize("check", CHECKS, ids=[check.__name__ for check in CHECKS])
async def test_memory_sink_keeps_the_contract(target: MemoryTarget, check: Check) -> None:
    """The in-memory sink passes every delivery-contract check."""
    await check(target)


async def test_failed_write_fails_later_calls_for_its_partition(target: MemoryTarget) -> None:
    """A later call for a partition whose earlier write failed fails too, without writing."""
    topic = await target.create_topic(1)
    target.cluster.fail_next(1)
    first = asyncio.ensure_future(target.sink.deliver([message(topic, "a", b"k")]))
    second = asyncio.ensure_future(target.sink.deliver([message(topic, "b", b"k")]))

    outcomes = await asyncio.wait_for(
        asyncio.gather(first, second, return_exceptions=True), TIMEOUT_S
    )
    assert [type(o) for o in outcomes] == [DeliveryError, DeliveryError]
    assert (target.cluster.writes, target.cluster.records(topic)) == (1, [])
    await target.sink.reset()
    assert await deliver(target.sink, [message(topic, "c", b"k")]) == [None]
    assert [r.record_id for r in await target.read_back(topic)] == ["c"]


async def test_failure_in_one_partition_spares_the_others(target: MemoryTarget) -> None:
    """A failed write fails its call, but the call's other partitions are written."""
    topic = await target.create_topic(2)
    target.cluster.fail_next(1)
    messages = [message(topic, f"m{p}", b"k", origin=(p, 2)) for p in (0, 1)]
    with pytest.raises(DeliveryError, match="injected failure"):
        await deliver(target.sink, messages)
    assert [r.record_id for r in await target.read_back(topic)] == ["m1"]


async def test_lost_ack_lands_and_still_fails(target: MemoryTarget) -> None:
    """A write failing after landing (a lost ack) leaves its records written and raises."""
    topic = await target.create_topic(1)
    target.cluster.fail_next(1, "ack lost", landed=True)
    with pytest.raises(DeliveryError, match="ack lost"):
        await deliver(target.sink, [message(topic, "a", b"k")])
    assert [r.record_id for r in await target.read_back(topic)] == ["a"]
    assert target.cluster.failed_writes == 1


async def test_stalled_write_abandoned_by_reset_never_lands(target: MemoryTarget) -> None:
    """A write blocked by stall() and abandoned by reset() raises and never lands after release."""
    topic = await target.create_topic(1)
    target.cluster.stall()
    stalled = asyncio.ensure_future(target.sink.deliver([message(topic, "stalled", b"k")]))
    queued = asyncio.ensure_future(target.sink.deliver([message(topic, "queued", b"k")]))
    await target.cluster.wait_until(lambda: target.cluster.blocked_writes == 1)

    await asyncio.wait_for(target.sink.reset(), TIMEOUT_S)
    outcomes = await asyncio.wait_for(
        asyncio.gather(stalled, queued, return_exceptions=True), TIMEOUT_S
    )
    target.cluster.release()
    assert [type(o) for o in outcomes] == [DeliveryError, DeliveryError]
    assert await deliver(target.sink, [message(topic, "fresh", b"k")]) == [None]
    assert [r.record_id for r in await target.read_back(topic)] == ["fresh"]
    assert target.cluster.abandoned_writes == 1


async def test_released_write_lands(target: MemoryTarget) -> None:
    """A write blocked by stall() lands once released."""
    topic = await target.create_topic(1)
    target.cluster.stall()
    stalled = asyncio.ensure_future(target.sink.deliver([message(topic, "a", b"k")]))
    await target.cluster.wait_until(lambda: target.cluster.blocked_writes == 1)
    assert target.cluster.records(topic) == []
    target.cluster.release()
    assert await asyncio.wait_for(stalled, TIMEOUT_S) == [None]
    assert [r.record_id for r in await target.read_back(topic)] == ["a"]


async def test_size_limit_counts_key_value_headers_and_overhead(target: MemoryTarget) -> None:
    """A record exactly at max.message.bytes lands; one byte more is RecordRejected."""
    fits = message("limited", "fits", b"k", 400)
    limit = record_size(fits.key, fits.value, fits.headers)
    assert limit == 1 + 400 + len("cx-id") + len("fits") + RECORD_OVERHEAD
    target.cluster.reject_size("limited", limit)
    too_big = message("limited", "over", b"k", 401)

    results = await deliver(target.sink, [fits, too_big])
    assert results[0] is None
    assert isinstance(results[1], RecordRejected)
    assert [r.record_id for r in await target.read_back("limited")] == ["fits"]


async def test_lost_connection_fails_the_source_and_blocks_writes() -> None:
    """Without a connection start, fetch and commit raise TransportError and writes wait."""
    cluster = MemoryCluster()
    source = MemorySource(cluster, "in", "g", 10)
    sink = MemorySink(cluster)
    cluster.lose_connection()
    with pytest.raises(TransportError):
        await source.start()
    writing = asyncio.ensure_future(sink.deliver([message("out", "a", b"k")]))
    await cluster.wait_until(lambda: cluster.blocked_writes == 1)

    cluster.restore()
    assert await asyncio.wait_for(writing, TIMEOUT_S) == [None]
    await source.start()
    cluster.lose_connection()
    with pytest.raises(TransportError):
        await source.fetch()
    with pytest.raises(TransportError):
        await source.commit({Partition("in", 0): 0})


async def test_source_reads_from_committed_offsets_in_bounded_batches() -> None:
    """A source starts at its group's committed offsets, fetches max_batch at most, and rewinds."""
    cluster = MemoryCluster(default_partitions=2)
    for i in range(30):
        cluster.produce("in", f"k{i % 5}".encode(), b"v", [("cx-id", f"{i}".encode())])
    source = MemorySource(cluster, "in", "g", 8)
    await source.start()
    batch = await source.fetch()
    assert sum(len(r) for r in batch.values()) == 8
    assert await source.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
    assert await source.lag(1.0) == 22

    restarted = MemorySource(cluster, "in", "g", 100)
    await restarted.start()
    rest = await restarted.fetch()
    assert sum(len(r) for r in rest.values()) == 22
    assert await restarted.lag(1.0) == 22  # fetched, not committed
    restarted.rewind({tp: records[0].offset for tp, records in rest.items()})
    assert await restarted.fetch() == rest
    assert restarted.partition_count() == 2
    await restarted.stop()
    assert restarted.partition_count() is None


async def test_empty_fetch_waits_for_a_record() -> None:
    """A fetch on an empty topic returns the first record produced while it waits."""
    cluster = MemoryCluster()
    source = MemorySource(cluster, "in", "g", 10)
    source.fetch_timeout_s = TIMEOUT_S
    await source.start()
    fetching = asyncio.ensure_future(source.fetch())
    await asyncio.sleep(0)  # let the fetch start waiting
    cluster.produce("in", b"k", b"v", [])
    batch = await asyncio.wait_for(fetching, TIMEOUT_S)
    assert [r.value for records in batch.values() for r in records] == [b"v"]
