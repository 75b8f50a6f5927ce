"""The ceiling of our stack: a raw aiokafka consume → produce pipe with no logic.

Same client settings as the node (idempotent producer, acks=all, linger 5 ms, 1 MB batches,
manual commits after every batch is acked). Runs until it has copied ``--count`` records.
"""

from __future__ import annotations

import argparse
import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def pipe(source: str, target: str, topic: str, count: int, max_batch: int) -> None:
    """Copy ``count`` records of ``topic`` from ``source`` to ``target``."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=source, group_id=f"raw-pipe-{topic}", enable_auto_commit=False,
        auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )  # fmt: skip
    producer = AIOKafkaProducer(
        bootstrap_servers=target, enable_idempotence=True, acks="all", linger_ms=5,
        max_batch_size=1_000_000, max_request_size=4 * 1024 * 1024,
    )  # fmt: skip
    await consumer.start()
    await producer.start()
    copied = 0
    try:
        while copied < count:
            batch = await consumer.getmany(timeout_ms=200, max_records=max_batch)
            futures = [
                await producer.send(topic, r.value, key=r.key, headers=list(r.headers))
                for records in batch.values()
                for r in records
            ]
            await asyncio.gather(*futures)
            if batch:
                await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batch.items()})
            copied += len(futures)
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    """Parse arguments and run the pipe."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(pipe(args.source, args.target, args.topic, args.count, args.max_batch))


if __name__ == "__main__":
    main()
