"""The ceiling of our stack: the node's own Kafka transport with no logic between source and sink.

It reads with the node's ``KafkaSource`` and writes with its ``KafkaSink`` (closed record batches
per partition, idempotent producer, acks=all, linger 5 ms, 1 MB batches), runs with the node's
garbage-collector settings (``node/heap.py``), keeps source partitions, and pipelines up to
``--in-flight`` batches of ``--max-batch`` records as the link does, committing each batch once
it and every batch before it are acked. No envelope is read, no rule applied, no
metric or audit entry written: whatever the node does beyond this is the price of its logic.
``topic`` may be a comma-separated list; each is copied to the same name. Runs until stopped
(SIGTERM) or until ``--count`` records are copied.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import uuid
from collections import deque

from node import heap
from node.errors import RecordRejected
from node.kafka.sink import KafkaSink
from node.kafka.source import KafkaSource
from node.kafka.topics import TopicLimits
from node.transport import Batch, Message


async def pipe(
    source: str, target: str, topics: list[str], *, count: int, max_batch: int, in_flight: int
) -> None:
    """Copy ``topics`` from ``source`` to ``target`` until ``count`` records (0: until stopped)."""
    group = f"raw-pipe-{uuid.uuid4().hex[:12]}"  # a group of its own: every run starts at the start
    reader = KafkaSource(source, topics, group, max_batch=max_batch,
                         fetch_timeout_ms=200, fetch_max_bytes=32 * 1024 * 1024)  # fmt: skip
    writer = KafkaSink(target, "raw-pipe", TopicLimits(target))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    pending: deque[tuple[Batch, asyncio.Task[list[RecordRejected | None]]]] = deque()
    copied = 0
    await reader.start()
    try:
        while not stopping.is_set() and (count == 0 or copied < count):
            batch = await reader.fetch()
            if batch:
                task = asyncio.ensure_future(writer.deliver(_messages(batch, reader)))
                pending.append((batch, task))
            while pending and (pending[0][1].done() or len(pending) >= in_flight):
                copied += await _settle(reader, pending)
        while pending:
            copied += await _settle(reader, pending)
    finally:
        for _, task in pending:
            task.cancel()
        with contextlib.suppress(Exception):
            await writer.stop()
        await reader.stop()


def _messages(batch: Batch, reader: KafkaSource) -> list[Message]:
    count = reader.partition_count()
    if count is None:
        return [
            Message(tp.topic, r.key, r.value, list(r.headers))
            for tp, rs in batch.items()
            for r in rs
        ]
    return [
        Message(tp.topic, r.key, r.value, list(r.headers), (r.partition, count))
        for tp, rs in batch.items()
        for r in rs
    ]


async def _settle(
    reader: KafkaSource, pending: deque[tuple[Batch, asyncio.Task[list[RecordRejected | None]]]]
) -> int:
    """Wait for the oldest batch's acks and commit it; return its record count."""
    batch, task = pending.popleft()
    await task
    await reader.commit({tp: records[-1].offset + 1 for tp, records in batch.items() if records})
    return sum(len(records) for records in batch.values())


def main() -> None:
    """Parse arguments and run the pipe."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--topic", required=True, help="one topic or a comma-separated list")
    parser.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    parser.add_argument("--max-batch", type=int, default=2000, help="as the node's flow.max_batch")
    parser.add_argument("--in-flight", type=int, default=4, help="as the node's max_in_flight")
    args = parser.parse_args()
    heap.settle()  # the node's collector settings too
    asyncio.run(pipe(args.source, args.target, args.topic.split(","), count=args.count,
                     max_batch=args.max_batch, in_flight=args.in_flight))  # fmt: skip


if __name__ == "__main__":
    main()
