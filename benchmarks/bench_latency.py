"""End-to-end latency at a fixed offered load below saturation: the node and MirrorMaker 2.

One hop (city → province) on real clusters. The bridge starts on an empty topic; once it has
carried a probe record (its start-up is not latency), a producer offers 1 KB records at a steady rate, each stamped with its creation time (``cx-created-ms``, which both
bridges carry through); a consumer on the destination records arrival minus creation. The first
two seconds are warm-up and are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from bench_e2e import (
    EXE,
    PARTITIONS,
    bench_clusters,
    bridged_topic,
    first_topic,
    kill_bridges,
    mm2_command,
    node_config,
    records,
)
from common import narrowed, table, write

from node.core.envelope import CREATED_MS
from node.core.heartbeat import is_heartbeat
from node.kafka.topics import ensure_topics

WARMUP_S = 2.0
READY_TIMEOUT_S = 90.0
PROBE = b"probe"
"""Keys of the records sent until the bridge carries one; not counted."""


async def carried(source: str, topic: str, target: str, arrives: str) -> float:
    """Send a probe record every half second until one arrives; return the seconds it took."""
    template = records(1024, 1)[0]
    producer = AIOKafkaProducer(bootstrap_servers=source, acks="all")
    consumer = AIOKafkaConsumer(bootstrap_servers=target)
    await producer.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(arrives, p) for p in range(PARTITIONS)]
        started = time.monotonic()
        while not sum((await consumer.end_offsets(partitions)).values()):
            if time.monotonic() - started > READY_TIMEOUT_S:
                raise RuntimeError(f"the bridge carried no record in {READY_TIMEOUT_S:g} s")
            await producer.send_and_wait(topic, template[1], key=PROBE, headers=template[2])
            await asyncio.sleep(0.5)
        return time.monotonic() - started
    finally:
        await producer.stop()
        await consumer.stop()


async def offer(bootstrap: str, topic: str, rate: int, seconds: float) -> int:
    """Produce ``rate`` records/s for ``seconds``, stamping each with its creation time."""
    template = records(1024, 1)[0]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    sent, started = 0, time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) - sent
            for _ in range(due):
                headers = [(k, v) for k, v in template[2] if k != CREATED_MS]
                headers.append((CREATED_MS, str(int(time.time() * 1000)).encode()))
                await producer.send(
                    topic, template[1], key=f"{sent:012d}".encode(), headers=headers
                )
                sent += 1
            await asyncio.sleep(0.005)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def collect(bootstrap: str, topic: str, latencies: list[float], stop: asyncio.Event) -> None:
    """Read ``topic`` until ``stop`` is set, appending each record's latency in ms."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=f"latency-{topic}")  # fmt: skip
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            now_ms = time.time() * 1000
            for rows in batch.values():
                for r in rows:
                    if is_heartbeat(r.headers) or r.key == PROBE:
                        continue
                    created = dict(r.headers).get(CREATED_MS)
                    latencies.append(now_ms - int(created) if created else float("nan"))
    finally:
        await consumer.stop()


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0-1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_one(
    kind: str, rate: int, seconds: float, city: str, province: str, work: Path
) -> dict[str, Any]:
    """Start a bridge on an empty topic, offer load, and measure latencies."""
    prefix = f"lat{kind}{int(time.time() * 1000) % 10_000_000}"
    topic = first_topic(prefix, fresh=False)  # handed up by county 410102, as the city reads them
    arrives = bridged_topic(kind, topic, prefix, "city")
    await ensure_topics(city, [topic], PARTITIONS, 1)
    await ensure_topics(province, [arrives], PARTITIONS, 1)
    if kind == "node":
        config = work / f"{prefix}.toml"
        node_config(config, city, province, prefix, role="city")
        command = [str(EXE), "run", "--config", str(config)]
    else:
        command = mm2_command(work, city, province, [topic])
    log = (work / f"{prefix}.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready_s = await carried(city, topic, province, arrives)
        latencies: list[float] = []
        stop = asyncio.Event()
        collector = asyncio.create_task(collect(province, arrives, latencies, stop))
        sent = await offer(city, topic, rate, seconds)
        for _ in range(100):  # up to 10 s for the tail to arrive
            if len(latencies) >= sent:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(collector, 30)
    finally:
        kill_bridges([process])  # nothing is measured after the load: no graceful stop
        log.close()
    steady = latencies[int(WARMUP_S * rate) :]
    return {"bridge": kind, "rate": rate, "sent": sent, "received": len(latencies),
            "p50_ms": percentile(steady, 0.5), "p99_ms": percentile(steady, 0.99),
            "max_ms": max(steady), "ready_s": ready_s}  # fmt: skip


async def main_async(quick: bool, bridges: tuple[str, ...], *, partial: bool) -> None:
    """Start two clusters, measure both bridges, print and write the results."""
    rows = []
    with bench_clusters("bench-latency", ("city", "province")) as (work, clusters):
        for kind in bridges:
            steady_s = 4 if quick else 14  # 12 s counted: a steady window
            bootstraps = clusters[0].bootstrap, clusters[1].bootstrap
            rows.append(await run_one(kind, 1000, steady_s, *bootstraps, work))
    print("Latency at 1,000 records/s of 1 KB, one hop (ms):")
    print(table(["bridge", "sent", "received", "p50", "p99", "max"],
                [[r["bridge"], r["sent"], r["received"], r["p50_ms"], r["p99_ms"], r["max_ms"]] for r in rows]))  # fmt: skip
    print(f"\nwrote {write('latency', {'runs': rows, 'quick': quick, 'partial': partial})}")


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bridges", default="node,mm2", help="comma-separated: node, mm2")
    args = parser.parse_args()
    bridges = tuple(args.bridges.split(","))
    asyncio.run(main_async(args.quick, bridges, partial=narrowed(parser, args)))


if __name__ == "__main__":
    main()
