"""Profile the node in steady state with py-spy: where its CPU goes, by stage and by function.

Fills the city's ``up.410102`` with records that pass through (as on every hop after the first),
or with ``--fresh`` the county's department outboxes (the node where records enter, validating),
starts the node, waits for its first copies and a warm-up, then attaches ``py-spy record`` to it
for ``--seconds`` (start-up is not in the profile). Prints the share of samples per stage of the
node's work (``STAGES``), then the functions with the most samples on top of the stack (self
time) and in the stack (total time). With ``--json``, writes ``results/profile.json``
(``profile-fresh.json`` with ``--fresh``) with the machine it ran on. py-spy comes with the
``bench`` extra (``make bench`` installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from bench_e2e import (
    CEILINGS,
    EXE,
    WARMUP_S,
    bench_clusters,
    bridged_topic,
    copied,
    cpu_seconds,
    first_copy,
    kill_bridges,
    node_config,
    prepare,
)
from common import write
from workload import Workload

STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("audit trail: facts of each copy", ("audit_facts",)),
    ("audit trail: chaining and writing", ("AuditWriter.",)),
    ("fetching (aiokafka's consumer)", ("KafkaSource.fetch", "Fetcher.")),
    ("writer check", ("Writers.check_batch",)),
    ("deciding (routing, rules, validation, provenance)", ("Decider.decide",)),
    ("building copies", ("Messages.of_batch",)),
    ("producing (aiokafka's producer)",
     ("KafkaSink.", "PartitionOrder.write", "Sender.", "MessageAccumulator.")),
    ("accounting, metrics and ledgers", ("Accountant.", "StatsWriter.", "QualityWriter.")),
    ("committing and lag", ("KafkaSource.", "GroupCoordinator.")),
    ("reading from sockets (asyncio, aiokafka's connections)",
     ("AIOKafkaConnection._read", "_SelectorSocketTransport.")),
    ("waiting for I/O (idle)", ("EpollSelector.select",)),
)  # fmt: skip
"""Each sample goes to the first stage one of whose function-name prefixes is in its stack; the
audit trail comes first, as its facts are gathered while accounting and its lines produced."""
OTHER = "other (the event loop, timers, the node's other loops)"
SAMPLE_RATE = 250
"""py-spy samples a second."""


def stage_of(functions: Sequence[str]) -> str:
    """The stage (``STAGES``) of a sample whose stack holds ``functions`` (qualified names)."""
    for stage, prefixes in STAGES:
        if any(function.startswith(prefixes) for function in functions):
            return stage
    return OTHER


def profile_of(raw: str, top: int | None) -> dict[str, Any]:
    """Return the shares of samples per stage and per function (on top of the stack, in it).

    ``raw`` is py-spy's raw (collapsed) output: a stack a line, ``frame;frame;... count``, each
    frame ``name (file:line)``.
    """
    stages: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        frames, _, count_text = line.rpartition(" ")
        if not frames:
            continue
        count = int(count_text)
        samples += count
        named = [frame.split(" (")[0] for frame in frames.split(";")]
        where = [f"{name} {frame.split(' (')[-1].split(':')[0].rsplit('/', 1)[-1]}"
                 for name, frame in zip(named, frames.split(";"), strict=True)]  # fmt: skip
        stages[stage_of(named)] += count
        own[where[-1]] += count
        for name in set(where):
            total[name] += count

    def shares(counter: collections.Counter[str], most: int | None) -> dict[str, float]:
        return {name: round(100 * n / samples, 1) for name, n in counter.most_common(most)}

    return {"samples": samples, "stages_pct": shares(stages, None),
            "self_pct": shares(own, top), "total_pct": shares(total, top)}  # fmt: skip


def report(profile: dict[str, Any]) -> None:
    """Print the shares per stage, then per function."""
    print(f"{profile['samples']} samples\n\nby stage:")
    for title, key in (("", "stages_pct"), ("\nself time:", "self_pct"),
                       ("\ntotal time (in the stack):", "total_pct")):  # fmt: skip
        if title:
            print(title)
        for name, share in profile[key].items():
            print(f"  {share:5.1f}%  {name}")


async def main_async(args: argparse.Namespace) -> None:
    """Set up, run the node, profile its steady state, report."""
    size, seconds = args.size, args.seconds
    count = args.count or int(CEILINGS[size] * (WARMUP_S + seconds + 10))  # more than it copies
    with bench_clusters("profile-node", ("city", "province")) as (work, clusters):
        local, parent = clusters[0].bootstrap, clusters[1].bootstrap
        stage = await prepare(size, [local, parent], count, hops=1, fresh=args.fresh,
                              workload=Workload(size, fresh=args.fresh))  # fmt: skip
        role = stage.roles()[0]  # county where records enter, city where they pass through
        arrives = bridged_topic("node", stage.topics[0], stage.prefix, role)
        config = work / "node.toml"
        node_config(config, local, parent, stage.prefix, role=role, workers=args.workers)
        stacks = work / "stacks.txt"
        spy = str(Path(sys.executable).with_name("py-spy"))
        every = ["--subprocesses"] if args.workers > 1 else []  # the workers too
        log = (work / "node.log").open("wb")
        node = subprocess.Popen([str(EXE), "run", "--config", str(config)], stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
        consumer = AIOKafkaConsumer(bootstrap_servers=parent)
        await consumer.start()
        try:
            await first_copy(node, consumer, [arrives])
            await asyncio.sleep(WARMUP_S)
            before, cpu_before = await copied(consumer, arrives), cpu_seconds(node.pid)
            await asyncio.to_thread(subprocess.run, [
                spy, "record", "--pid", str(node.pid), "--duration", f"{seconds:g}", "--rate",
                str(SAMPLE_RATE), "--format", "raw", *every, "-o", str(stacks)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=seconds + 60)  # fmt: skip
            after, cpu = await copied(consumer, arrives), cpu_seconds(node.pid) - cpu_before
        finally:  # however it ends: a node left running would outlive its brokers
            await consumer.stop()
            kill_bridges([node])  # by pid, its workers too: nothing is measured after py-spy
            log.close()
        done = after - before
        if after >= stage.available:
            print(f"warning: the node ran out of records ({stage.available:,}); raise --count")
        print(f"profiled {seconds:g} s: {done:,} records of {size} B copied "
              f"({done / seconds:,.0f}/s, {cpu / max(done, 1) * 1e6:.1f} µs CPU each, "
              f"slowed by sampling)")  # fmt: skip
        profile = profile_of(stacks.read_text(), args.top)
        report(profile)
        if args.keep is not None:
            shutil.copyfile(stacks, args.keep)
            print(f"\nraw stacks (with line numbers) kept in {args.keep}")
        if args.json:
            results = {"node": "county, where records enter" if args.fresh else
                       "city, records passing through", "payload_bytes": size, "seconds": seconds,
                       "records": done, "cpu_us_per_record": round(cpu / max(done, 1) * 1e6, 1),
                       "rate_hz": SAMPLE_RATE, "workers": args.workers, **profile}  # fmt: skip
            print(f"wrote {write('profile-fresh' if args.fresh else 'profile', results)}")


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=15.0, help="profiled, after a warm-up")
    parser.add_argument("--count", type=int, default=None,
                        help="records filled (default: more than the node copies meanwhile)")  # fmt: skip
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--workers", type=int, default=1, help="flow.workers of the node")
    parser.add_argument("--keep", type=Path, help="copy py-spy's raw stacks to this file")
    parser.add_argument("--json", action="store_true", help="write results/profile.json")
    parser.add_argument("--fresh", action="store_true",
                        help="profile the county node where departments publish (validating)")  # fmt: skip
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
