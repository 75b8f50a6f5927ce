"""Profile the node under load with py-spy and print where its time goes.

Fills the city's ``up.410102`` with records that pass through (as on every hop after the first),
or with ``--fresh`` the county's department outboxes (the node where records enter, validating),
runs the node under ``py-spy record`` until they are all copied, then prints the functions with
the most samples on top of the stack (self time) and in the stack (total time). py-spy comes with the
``bench`` extra (``make bench`` installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from bench_e2e import (
    EXE,
    bench_clusters,
    bridged_topic,
    copied,
    node_config,
    prepare,
)
from workload import Workload


def children(pid: int) -> list[int]:
    """Direct child pids of ``pid``."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def until_copied(consumer: AIOKafkaConsumer, topic: str, count: int, started: float) -> int:
    """Wait for ``count`` copies in ``topic``; return how many came.

    Gives up 5 s after the last new copy (some records of a fresh mix go elsewhere) or at 300 s.
    """
    done, since = 0, time.monotonic()
    while done < count and time.monotonic() - started < 300:
        now = await copied(consumer, topic)
        if now > done:
            done, since = now, time.monotonic()
        elif done and time.monotonic() - since > 5:
            break
        await asyncio.sleep(0.2)
    return done


def summarise(stacks: Path, top: int) -> None:
    """Print self and total sample counts per function from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in stacks.read_text().splitlines():
        frames, _, count_text = line.rpartition(" ")
        count = int(count_text)
        samples += count
        names = [frame.split(" (")[0] + " " + frame.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                 for frame in frames.split(";")]  # fmt: skip
        own[names[-1]] += count
        for name in set(names):
            total[name] += count
    print(f"{samples} samples\n\nself time:")
    for name, count in own.most_common(top):
        print(f"  {100 * count / samples:5.1f}%  {name}")
    print("\ntotal time (in the stack):")
    for name, count in total.most_common(top):
        print(f"  {100 * count / samples:5.1f}%  {name}")


async def main_async(
    size: int, count: int, top: int, workers: int, keep: Path | None, *, fresh: bool
) -> None:
    """Set up, run the node under py-spy, summarise."""
    with bench_clusters("profile-node", ("city", "province")) as (work, clusters):
        local, parent = clusters[0].bootstrap, clusters[1].bootstrap
        stage = await prepare(size, [local, parent], count, hops=1, fresh=fresh,
                              workload=Workload(size, fresh=fresh))  # fmt: skip
        role = stage.roles()[0]  # county where records enter, city where they pass through
        arrives = bridged_topic("node", stage.topics[0], stage.prefix, role)
        config = work / "node.toml"
        node_config(config, local, parent, stage.prefix, role=role, workers=workers)
        stacks = work / "stacks.txt"
        spy = str(Path(sys.executable).with_name("py-spy"))
        every = ["--subprocesses"] if workers > 1 else []  # the workers too, each its own root
        profiler = subprocess.Popen([spy, "record", "--format", "raw", "--rate", "250", *every,
                                     "-o", str(stacks), "--", str(EXE), "run", "--config", str(config)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        started = time.monotonic()
        try:
            consumer = AIOKafkaConsumer(bootstrap_servers=parent)
            await consumer.start()
            try:
                done = await until_copied(consumer, arrives, count, started)
            finally:
                await consumer.stop()
            took = time.monotonic() - started
        finally:  # however the wait ends: a node left running would outlive its brokers
            for child in children(profiler.pid):
                os.kill(child, signal.SIGTERM)  # the node, by pid; py-spy then writes its samples
            profiler.wait(timeout=120)
        print(f"copied {done} records of {size} B in {took:.1f} s (incl. start-up)")
        summarise(stacks, top)
        if keep is not None:
            shutil.copyfile(stacks, keep)
            print(f"\nraw stacks (with line numbers) kept in {keep}")


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--workers", type=int, default=1, help="flow.workers of the node")
    parser.add_argument("--keep", type=Path, help="copy py-spy's raw stacks to this file")
    parser.add_argument("--fresh", action="store_true",
                        help="profile the county node where departments publish (validating)")  # fmt: skip
    args = parser.parse_args()
    asyncio.run(
        main_async(args.size, args.count, args.top, args.workers, args.keep, fresh=args.fresh)
    )


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
