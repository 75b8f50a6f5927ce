"""The delivery contract of a RecordSink as plain async checks, shared by two suites.

``tests/unit/test_delivery_contract.py`` runs them against the in-memory sink and
``tests/integration/test_delivery_contract_kafka.py`` against KafkaSink and real brokers. Each
suite provides a ``ContractTarget``: the sink under test (built with ``BATCH_BYTES``), a way to
create a fresh topic and a way to read a topic back. Messages carry their id in ``cx-id``; the
checks count ids, they never look at logs.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple, Protocol

from node.errors import RecordRejected
from node.transport import Message, RecordSink

ID = "cx-id"
BATCH_BYTES = 16_384
"""The sinks under test produce batches of at most this many bytes, so a call spans several."""
TOPIC_LIMIT = 100_000
"""``max.message.bytes`` of the topic in the too-large check."""
TIMEOUT_S = 30.0


class Landed(NamedTuple):
    """A record read back from a topic."""

    partition: int
    offset: int
    key: bytes | None
    record_id: str


class ContractTarget(Protocol):
    """A sink under test and the cluster behind it."""

    @property
    def sink(self) -> RecordSink:
        """The sink under test."""

    async def create_topic(self, partitions: int, max_message_bytes: int | None = None) -> str:
        """Create a topic no other check uses; return its name."""

    async def read_back(self, topic: str) -> list[Landed]:
        """Return every record of ``topic``, by partition in offset order."""


def message(
    topic: str,
    record_id: str,
    key: bytes | None,
    size: int = 100,
    origin: tuple[int, int] | None = None,
) -> Message:
    """A message of ``size`` value bytes carrying ``record_id`` in its header."""
    return Message(topic, key, b"v" * size, [(ID, record_id.encode())], origin)


async def deliver(sink: RecordSink, messages: Sequence[Message]) -> list[RecordRejected | None]:
    """Deliver with a deadline."""
    return await asyncio.wait_for(sink.deliver(messages), TIMEOUT_S)


def assert_landed_once_in_order(landed: Sequence[Landed], sent: Sequence[Message]) -> None:
    """Every sent id landed exactly once, and each partition holds its ids in the sending order."""
    sent_ids = [dict(m.headers)[ID].decode() for m in sent]
    counts = Counter(record.record_id for record in landed)
    lost = [i for i in sent_ids if counts[i] == 0]
    doubled = [i for i, n in counts.items() if n > 1]
    assert (lost, doubled) == ([], []), f"lost {len(lost)}, duplicated {len(doubled)}"
    assert set(counts) == set(sent_ids), "records landed that were never sent"
    rank = {record_id: index for index, record_id in enumerate(sent_ids)}
    by_partition: defaultdict[int, list[Landed]] = defaultdict(list)
    for record in landed:
        by_partition[record.partition].append(record)
    for partition, records in by_partition.items():
        order = [rank[r.record_id] for r in sorted(records, key=lambda r: r.offset)]
        assert order == sorted(order), f"partition {partition} is out of order"


async def acked_messages_land_once_in_order(target: ContractTarget) -> None:
    """Messages of five pipelined calls land exactly once, in call order per partition."""
    topic = await target.create_topic(3)
    calls = [  # about 20 KB per partition and call: two batches each
        [message(topic, f"c{c}-{i:03d}", f"k{i % 7}".encode(), 1_000) for i in range(60)]
        for c in range(5)
    ]
    started = [asyncio.ensure_future(target.sink.deliver(call)) for call in calls]
    results = await asyncio.wait_for(asyncio.gather(*started), TIMEOUT_S)

    assert [r for result in results for r in result] == [None] * 300
    landed = await target.read_back(topic)
    assert_landed_once_in_order(landed, [m for call in calls for m in call])
    partitions_of_key: defaultdict[bytes | None, set[int]] = defaultdict(set)
    for record in landed:
        partitions_of_key[record.key].add(record.partition)
    assert all(len(p) == 1 for p in partitions_of_key.values()), "a key spans partitions"


async def too_large_record_is_rejected_in_place(target: ContractTarget) -> None:
    """A record over max.message.bytes is RecordRejected; the records around it land in order."""
    topic = await target.create_topic(1, max_message_bytes=TOPIC_LIMIT)
    before = [message(topic, f"a{i:02d}", b"k", 2_000, (0, 1)) for i in range(20)]
    huge = message(topic, "huge", b"k", 150_000, (0, 1))
    after = [message(topic, f"b{i:02d}", b"k", 2_000, (0, 1)) for i in range(20)]
    results = await deliver(target.sink, [*before, huge, *after])
    later = [message(topic, f"c{i:02d}", b"k", 2_000, (0, 1)) for i in range(5)]
    later_results = await deliver(target.sink, later)

    assert isinstance(results[20], RecordRejected)
    assert results[:20] + results[21:] + later_results == [None] * 45
    landed = await target.read_back(topic)
    assert_landed_once_in_order(landed, [*before, *after, *later])
    assert [r.record_id for r in landed] == [
        dict(m.headers)[ID].decode() for m in [*before, *after, *later]
    ]


async def record_over_batch_bytes_within_the_limit_lands(target: ContractTarget) -> None:
    """A record larger than a batch but within max.message.bytes lands, between its neighbours."""
    topic = await target.create_topic(1, max_message_bytes=TOPIC_LIMIT)
    sent = [
        message(topic, "before", b"k", 2_000),
        message(topic, "large", b"k", 3 * BATCH_BYTES),
        message(topic, "after", b"k", 2_000),
    ]
    assert await deliver(target.sink, sent) == [None] * 3
    assert [r.record_id for r in await target.read_back(topic)] == ["before", "large", "after"]


async def origin_partition_kept_when_counts_match(target: ContractTarget) -> None:
    """A message keeps its origin partition when the counts match; else its key picks one."""
    topic = await target.create_topic(3)
    kept = [message(topic, f"o{i:02d}", f"x{i}".encode(), origin=(i % 3, 3)) for i in range(30)]
    keyed = [
        message(topic, f"h{i:02d}", f"k{i % 4}".encode(), origin=(i % 5, 5)) for i in range(40)
    ]
    assert await deliver(target.sink, [*kept, *keyed]) == [None] * 70

    landed = await target.read_back(topic)
    assert_landed_once_in_order(landed, [*kept, *keyed])
    partition_of = {r.record_id: r.partition for r in landed}
    assert [partition_of[f"o{i:02d}"] for i in range(30)] == [i % 3 for i in range(30)]
    partitions_of_key: defaultdict[bytes | None, set[int]] = defaultdict(set)
    for record in landed:
        if record.record_id.startswith("h"):
            partitions_of_key[record.key].add(record.partition)
    assert all(len(p) == 1 for p in partitions_of_key.values()), "a key spans partitions"


async def delivers_again_after_reset(target: ContractTarget) -> None:
    """After reset() the sink delivers again, and every acked message is there once."""
    topic = await target.create_topic(2)
    first = [message(topic, f"f{i:02d}", f"k{i % 3}".encode()) for i in range(20)]
    second = [message(topic, f"s{i:02d}", f"k{i % 3}".encode()) for i in range(20)]
    assert await deliver(target.sink, first) == [None] * 20
    await asyncio.wait_for(target.sink.reset(), TIMEOUT_S)
    assert await deliver(target.sink, second) == [None] * 20

    assert_landed_once_in_order(await target.read_back(topic), [*first, *second])


async def empty_call_returns_nothing(target: ContractTarget) -> None:
    """Delivering no messages returns an empty list and writes nothing."""
    topic = await target.create_topic(1)
    assert await deliver(target.sink, []) == []
    assert await target.read_back(topic) == []


Check = Callable[[ContractTarget], Awaitable[None]]
CHECKS: list[Check] = [
    acked_messages_land_once_in_order,
    too_large_record_is_rejected_in_place,
    record_over_batch_bytes_within_the_limit_lands,
    origin_partition_kept_when_counts_match,
    delivers_again_after_reset,
    empty_call_returns_nothing,
]
