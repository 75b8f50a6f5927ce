"""End to end through real Kafka on loopback: the node against the raw pipe, MirrorMaker 2 and Kafka.

Three single-node clusters (county, city, province; 1 GiB heap each). Per payload size (200 B,
1 KB, 10 KB and, one round, 100 KB for memory) the city's ``up.410102`` is filled once with
records as varied as a county's traffic (``workload.py``: 2,000 catalog resources, a skewed mix of
resources and targets, distinct ids and keys). Then, in ``--rounds`` interleaved rounds (the
order rotates), each bridge copies it city → province from the start under its own consumer
group:

- ``raw``: ``raw_pipe.py``, the node's own transport (KafkaSource, KafkaSink: closed record batches,
  partitions kept, 4 batches of 2,000 in flight) with no logic: the ceiling for Python and aiokafka;
- ``node``: ``exchange-node run`` as the city, passing records through (as on every hop after the
  first) with everything on that ships on: rules, accounting, metrics, the audit trail;
- ``mm2``: MirrorMaker 2 (dedicated mode, identity replication policy) tuned like the node (see
  ``MM2_TUNING``).

Each run is measured over a steady window: from ``WARMUP_S`` after the first record arrives
(``MM2_WARMUP_S`` for the JVM), for ``WINDOW_S``; the records copied in the window come from the
destination's end offsets (baseline taken before the run), the CPU from the bridge's
``/proc/PID/stat`` (utime + stime, its whole process tree) over the same window. A run that runs
out of records before its window ends is marked ``exhausted`` and not trusted.

The fill is sized from ``CEILINGS`` and topped up between runs to hold 18 s at the fastest second
any bridge reached on it (``run_filled``); a run that ran out is run again.

Also per size: Kafka's own ``ProducerPerformance`` (into the province, the node's producer
settings, over two of its 5 s reports after the first) and, at 1 KB, ``ConsumerPerformance``
(reading back what ProducerPerformance wrote, topped up until one whole read lasts 10 s): the
machine's ceiling. Also the node where records enter (``node-ingress``: the county, validating
and decoding every record); the node with two worker processes (``node-w2``, in the same
interleaved rounds as ``node``); and two hops county → city → province for node+node, raw+raw
and mm2+mm2 (``--two-hop-rounds``).
``--quick``: 1 KB only, one round, 5 s windows (written to ``e2e-quick.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from common import narrowed, table, write
from workload import (
    BEYOND_PROVINCE,
    COUNTY,
    DEPARTMENTS,
    RESOURCES,
    Row,
    Workload,
    catalog_entries,
    memo_hit_rates,
    write_catalog,
)

from node.kafka.topics import ensure_topics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy" / "local"))
import localkafka  # lives in deploy/local

HERE = Path(__file__).resolve().parent
EXE = Path(sys.executable).with_name("exchange-node")
PARTITIONS = 3
WINDOW_S = 10.0
WARMUP_S = 2.0
MM2_WARMUP_S = 4.0
SAMPLE_S = 0.25
FIRST_RECORD_TIMEOUT_S = 90.0
NODE_MAX_BATCH = 2000
NODE_BATCH_BYTES = 1_000_000
NODE_LINGER_MS = 5
NODE_FETCH_MAX_BYTES = 32 * 1024 * 1024
NODE_PARTITION_FETCH_BYTES = 4 * 1024 * 1024
NODE_MAX_REQUEST_SIZE = 16 * 1024 * 1024
MM2_TUNING = {
    "tasks.max": (str(PARTITIONS), "one task per partition, as many as the node's partitions"),
    "producer.batch.size": (str(NODE_BATCH_BYTES), "the node's batch_bytes (1 MB)"),
    "producer.linger.ms": (str(NODE_LINGER_MS), "the node's linger"),
    "producer.acks": ("all", "as the node"),
    "producer.enable.idempotence": ("true", "as the node"),
    "producer.max.request.size": (str(NODE_MAX_REQUEST_SIZE), "the node's max request"),
    "producer.compression.type": ("none", "the node does not compress"),
    "consumer.max.poll.records": (str(NODE_MAX_BATCH), "the node's max_batch"),
    "consumer.fetch.max.bytes": (str(NODE_FETCH_MAX_BYTES), "the node's fetch_max_bytes"),
    "consumer.max.partition.fetch.bytes": (str(NODE_PARTITION_FETCH_BYTES), "the node's"),
    "consumer.auto.offset.reset": ("earliest", "copy the topic from its start"),
    "plugin.discovery": (
        "service_load",
        "start-up only: no classpath scan, as Kafka's own warning "
        "advises (about 6 s less per start)",
    ),
}
"""MirrorMaker 2 settings (prefixed per cluster alias), each with why."""
MM2_HEAP = "-Xmx512m"
CEILINGS = {200: 75_000, 1024: 55_000, 10_240: 20_000, 102_400: 1_500}
"""A generous guess of the fastest bridge's records/s per size, to size the fill (``fill_count``):
at or above any bridge's fastest second in the last two full runs (73.5k, 59.1k, 21.4k, 1.7k
records/s); the fill holds 18 s of it, a run needs at most 14 s (warm-up and window)."""
_RUNS = itertools.count(1)
RETENTION = {"retention.bytes": str(512 * 1024 * 1024), "segment.bytes": str(64 * 1024 * 1024)}
"""Destinations keep at most 512 MB per partition, so a full run stays within a few GB of disk."""
BENCH_BROKER = (("log.retention.check.interval.ms", "5000"), ("file.delete.delay.ms", "1000"))
"""Retention enforced every 5 s, not every 5 minutes, and a deleted segment's file removed after
1 s, not 60: at 10 KB the bridges write 170 MB/s, and a full run once filled a 92 GB disk within
one default interval (a broker died of it)."""
WORKERS = {"node-w2": 2}
"""Node kinds run with several worker processes (``flow.workers``): the scale-out figures."""
ROLES = {
    "county": ("410102", "410100", ""),
    "city": ("410100", "410000", "410102"),
    "province": ("410000", "000000", "410100"),
}
"""A node's region, its parent's and its child's (whose hand-up topic it reads), by level."""


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_bench_clusters(
    purpose: str, names: tuple[str, ...]
) -> tuple[Path, list[localkafka.Cluster]]:
    """Start one single-node cluster (1 GiB heap) per name on loopback; return the work dir too."""
    localkafka.ensure_jars()
    work = Path(tempfile.mkdtemp(prefix=f"{purpose}-"))
    specs = [bench_spec(name, free_port(), free_port()) for name in names]
    return work, localkafka.start_clusters(specs, work / "kafka")


def bench_spec(name: str, port: int, controller_port: int) -> localkafka.ClusterSpec:
    """A bench broker: 1 GiB heap, retention enforced within seconds (``BENCH_BROKER``)."""
    return localkafka.ClusterSpec(name, port, controller_port, heap_mb=1024,
                                  properties=BENCH_BROKER)  # fmt: skip


SHARED_CLUSTERS = "BENCH_SHARED_CLUSTERS"
"""Set by ``run.py`` for the scripts it runs: the brokers it started once for all of them (JSON,
``shared_clusters``), so each script does not start and stop its own (about 7 s a start)."""


def share(clusters: Sequence[localkafka.Cluster]) -> str:
    """The value of ``SHARED_CLUSTERS`` naming ``clusters`` (started by ``start_bench_clusters``)."""
    return json.dumps([[c.spec.name, c.spec.port, c.spec.controller_port, str(c.data_dir),
                        str(c.log_path), c.pid] for c in clusters])  # fmt: skip


def shared_clusters(names: tuple[str, ...]) -> list[localkafka.Cluster] | None:
    """The shared brokers named ``names``, in order; None unless ``SHARED_CLUSTERS`` has all."""
    said = os.environ.get(SHARED_CLUSTERS)
    if not said:
        return None
    known = {
        name: localkafka.Cluster(bench_spec(name, port, controller), Path(data), Path(log), pid)
        for name, port, controller, data, log, pid in json.loads(said)
    }  # fmt: skip
    return [known[name] for name in names] if all(name in known for name in names) else None


@contextlib.contextmanager
def bench_clusters(
    purpose: str, names: tuple[str, ...]
) -> Iterator[tuple[Path, list[localkafka.Cluster]]]:
    """``start_bench_clusters`` for a block; stopped after it, the work dir removed.

    When the block fails, the brokers' logs (``broker.log``) are kept for a look at what went
    wrong, and the topics' data removed. Brokers shared by ``run.py`` (``SHARED_CLUSTERS``) are
    used as they are and left running; only the work dir is the block's own.
    """
    shared = shared_clusters(names)
    if shared is not None:
        work = Path(tempfile.mkdtemp(prefix=f"{purpose}-"))
        try:
            yield work, shared
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    work, clusters = start_bench_clusters(purpose, names)
    try:
        yield work, clusters
    except BaseException:
        localkafka.stop_clusters(clusters)
        for data in [path for path in work.rglob("log") if path.is_dir()]:
            shutil.rmtree(data, ignore_errors=True)
        print(f"the brokers' logs are kept in {work}", file=sys.stderr, flush=True)
        raise
    localkafka.stop_clusters(clusters)
    shutil.rmtree(work, ignore_errors=True)


def records(size: int, count: int, *, fresh: bool = False) -> list[Row]:
    """``count`` varied records of about ``size`` bytes (``workload.Workload``)."""
    return list(Workload(size, fresh=fresh).rows(count))


async def fill(bootstrap: str, topic: str, rows: Iterable[Row]) -> int:
    """Produce ``rows`` to ``topic`` batch by batch; return how many were written.

    The key picks the partition (its CRC-32: a key always lands in the same one; Kafka's
    murmur2 in Python took 4.6 µs a record, a third of the fill's time).
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                max_batch_size=1_000_000, max_request_size=NODE_MAX_REQUEST_SIZE)  # fmt: skip
    await producer.start()
    sent = 0
    try:
        open_batches: dict[tuple[str, int], Any] = {}
        futures = []
        for key, value, headers in rows:
            where = topic
            partition = zlib.crc32(key) % PARTITIONS
            batch = open_batches.get((where, partition))
            if batch is None:
                batch = open_batches[where, partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                futures.append(await producer.send_batch(batch, where, partition=partition))
                batch = open_batches[where, partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)
            sent += 1
            if len(futures) > 64:
                await asyncio.gather(*futures)
                futures.clear()
        for (where, partition), batch in open_batches.items():
            futures.append(await producer.send_batch(batch, where, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


SPLIT_FROM = 200_000
"""Rows from which a fill is shared with a second process: rows are made and sent in Python, so
one process is the bottleneck (1M records of 200 B: 8.4 s alone, 4.7 s split in two)."""


async def send_rows(
    bootstrap: str, where: str, workload: Workload, count: int, first: int = 0
) -> int:
    """Write ``count`` rows of ``workload`` with ids from ``first``; return how many were written.

    ``where`` is the topic, or for fresh rows the prefix of the outboxes. From ``SPLIT_FROM``
    rows, a second process writes the second half, made by a workload of its own seed (so its
    ids are its own).
    """
    if count < SPLIT_FROM:
        return await _send(bootstrap, where, workload.rows(count, first), fresh=workload.fresh)
    half = count // 2
    spawned = multiprocessing.get_context("spawn")  # no copy of this process's event loop
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawned) as pool:
        theirs = asyncio.get_running_loop().run_in_executor(
            pool, _send_elsewhere, bootstrap, where, workload.size, workload.fresh,
            workload.targets, count - half, first + half,
        )  # fmt: skip
        mine = await _send(bootstrap, where, workload.rows(half, first), fresh=workload.fresh)
        return mine + await theirs


def _send_elsewhere(bootstrap: str, where: str, size: int, fresh: bool,
                    targets: tuple[tuple[str, int], ...], count: int, first: int) -> int:  # fmt: skip
    """``send_rows``'s second half, in the second process: seeded by its first id."""
    workload = Workload(size, fresh=fresh, seed=first, targets=targets)
    return asyncio.run(_send(bootstrap, where, workload.rows(count, first), fresh=fresh))


async def _send(bootstrap: str, where: str, rows: Iterable[Row], *, fresh: bool) -> int:
    return await (fill_outboxes if fresh else fill)(bootstrap, where, rows)


async def fill_outboxes(bootstrap: str, prefix: str, rows: Iterable[Row]) -> int:
    """Produce fresh rows to ``PREFIX.outbox.DEPT`` of each row's source department."""
    by_dept: dict[str, list[Row]] = {}
    for row in rows:
        dept = dict(row[2])["cx-source-dept"].decode()
        by_dept.setdefault(dept, []).append(row)
    sent = 0
    for dept, mine in by_dept.items():
        sent += await fill(bootstrap, f"{prefix}.outbox.{dept}", mine)
    return sent


async def end_offsets(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> int:
    """Records on ``topics`` (sum of end offsets)."""
    partitions = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    return int(sum((await consumer.end_offsets(partitions)).values()))


async def copied(consumer: AIOKafkaConsumer, topic: str) -> int:
    """Records on ``topic`` (sum of end offsets)."""
    return await end_offsets(consumer, [topic])


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return found


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (utime + stime) of ``pid`` and its descendants, in seconds."""
    total = 0
    for member in _tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """The largest VmHWM in ``pid``'s process tree, in MB."""
    peak = 0.0
    for member in _tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) / 1024)
    return peak


@dataclass
class Window:
    """What one bridge did over its steady window."""

    records: int
    seconds: float
    cpu_s: float
    peak_rss_mb: float
    exhausted: bool
    first_copy_s: float
    """From the bridge's start to its first record copied (start-up: the JVM, group joins)."""
    per_second: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The figures of the window, as stored in the JSON."""
        rate = self.records / self.seconds
        spread = self.per_second or [rate]
        return {"records_per_s": rate, "window_s": self.seconds, "records_in_window": self.records,
                "cpu_us_per_record": 1e6 * self.cpu_s / max(1, self.records),
                "cpu_cores": self.cpu_s / self.seconds, "peak_rss_mb": self.peak_rss_mb,
                "exhausted": self.exhausted, "slowest_second": min(spread),
                "fastest_second": max(spread), "first_copy_s": self.first_copy_s,
                "per_second": [round(r) for r in self.per_second]}  # fmt: skip


async def measure(
    process: subprocess.Popen[bytes], target: str, topics: Sequence[str], available: int,
    *, warmup_s: float, window_s: float,
) -> Window:  # fmt: skip
    """Wait for the first copy, warm up, then measure ``window_s`` of steady copying."""
    started = time.monotonic()
    consumer = AIOKafkaConsumer(bootstrap_servers=target)
    await consumer.start()
    try:
        baseline = await first_copy(process, consumer, topics)
        first_copy_s = time.monotonic() - started
        await asyncio.sleep(warmup_s)
        began, start_count = time.monotonic(), await end_offsets(consumer, topics)
        start_cpu = cpu_seconds(process.pid)
        count, now, per_second, last = start_count, began, [], (began, start_count)
        while now - began < window_s:
            await asyncio.sleep(SAMPLE_S)
            _check_alive(process)
            count, now = await end_offsets(consumer, topics), time.monotonic()
            if now - last[0] >= 1.0:
                per_second.append((count - last[1]) / (now - last[0]))
                last = (now, count)
            if count - baseline >= available:
                break
        cpu = cpu_seconds(process.pid) - start_cpu
        return Window(count - start_count, now - began, cpu, peak_rss_mb(process.pid),
                      count - baseline >= available, first_copy_s, per_second)  # fmt: skip
    finally:
        await consumer.stop()


async def first_copy(
    process: subprocess.Popen[bytes], consumer: AIOKafkaConsumer, topics: Sequence[str]
) -> int:
    """Wait for the bridge's first copy to ``topics``; return the records they held before it.

    Raises RuntimeError when the bridge exits, or copies nothing within FIRST_RECORD_TIMEOUT_S.
    """
    baseline = await end_offsets(consumer, topics)
    deadline = time.monotonic() + FIRST_RECORD_TIMEOUT_S
    while await end_offsets(consumer, topics) == baseline:
        _check_alive(process)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"bridge (pid {process.pid}): no record copied within {FIRST_RECORD_TIMEOUT_S:g} s"
            )
        await asyncio.sleep(0.05)
    return baseline


def kill_bridges(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGKILL each bridge with its descendants (a node's workers) and reap the bridges.

    Nothing is measured once the window ends, and a graceful stop took about a second per run.
    """
    pids = [pid for process in processes if process.poll() is None for pid in _tree(process.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for process in processes:
        process.wait(timeout=30)


def _check_alive(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        raise RuntimeError(f"bridge exited with {process.returncode}")


def mm2_command(work: Path, source: str, target: str, topics: Sequence[str]) -> list[str]:
    """Write an MM2 properties file copying ``topics`` source → target; return the java command.

    Cluster aliases are unique per run, so no run reads the internal topics of an earlier one.
    """
    run = next(_RUNS)
    properties = work / f"mm2-{run}.properties"
    a, b = f"src{run}", f"dst{run}"
    internal = ("replication.factor", "checkpoints.topic.replication.factor",
                "heartbeats.topic.replication.factor", "offset-syncs.topic.replication.factor",
                "offset.storage.replication.factor", "status.storage.replication.factor",
                "config.storage.replication.factor")  # fmt: skip
    pattern = "|".join(re.escape(t) for t in topics)
    lines = [
        f"clusters = {a}, {b}", f"{a}.bootstrap.servers = {source}", f"{b}.bootstrap.servers = {target}",
        f"{a}->{b}.enabled = true", f"{a}->{b}.topics = {pattern}", f"{b}->{a}.enabled = false",
        "replication.policy.class = org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        "emit.checkpoints.enabled = false", "emit.heartbeats.enabled = false",
        "sync.topic.configs.enabled = false", "sync.topic.acls.enabled = false",
        "refresh.topics.interval.seconds = 5", *(f"{key} = 1" for key in internal),
    ]  # fmt: skip
    for key, (value, _) in MM2_TUNING.items():
        if key in ("tasks.max", "plugin.discovery"):  # plugin.discovery: MM2's own and its worker's
            lines.append(f"{key} = {value}")
        if key != "tasks.max":
            lines.append(f"{a if key.startswith('consumer.') else b}.{key} = {value}")
    properties.write_text("\n".join(lines) + "\n")
    libs = localkafka.ensure_jars()
    return [localkafka.check_java(), "-Xms512m", MM2_HEAP, *localkafka.JVM_FLAGS,
            f"-Dlog4j2.configurationFile={localkafka.LOG4J_CONFIG}", "-cp", f"{libs}/*",
            "org.apache.kafka.connect.mirror.MirrorMaker", str(properties)]  # fmt: skip


def node_config(
    path: Path, local: str, parent: str, prefix: str, *, role: str, audit: bool = True,
    workers: int = 1,
) -> None:  # fmt: skip
    """A node bridging two clusters as ``role`` (county, city or province), with the bench catalog.

    ``audit`` False turns the audit trail off (on by default, as the node ships); ``workers``
    is ``flow.workers``.
    """
    region, parent_region, child = ROLES[role]
    children = f'["{child}"]' if child else "[]"
    catalog = path.parent / "bench-catalog"
    if not (catalog / "bench.toml").exists():
        write_catalog(catalog, catalog_entries())
    path.write_text(f"""
[node]
id = "bench-{prefix}-{role}-{next(_RUNS)}"
level = "{role}"
region = "{region}"
children = {children}
catalog_dir = "{catalog}"
[local]
bootstrap = "{local}"
topic_prefix = "{prefix}"
[parent]
bootstrap = "{parent}"
region = "{parent_region}"
topic_prefix = "{prefix}"
[topics]
partitions = {PARTITIONS}
[flow]
workers = {workers}
[admin]
port = {free_port()}
[audit]
enabled = {"true" if audit else "false"}
[log]
format = "json"
level = "warning"
""")


def first_topic(prefix: str, *, fresh: bool) -> str:
    """Where records wait for the city: the county's hand-up (or, fresh, PSB's outbox)."""
    return f"{prefix}.outbox.PSB" if fresh else f"{prefix}.up.{COUNTY}"


def bridged_topic(kind: str, topic: str, prefix: str, role: str) -> str:
    """Where bridge ``kind`` as ``role`` writes what it reads from ``topic``."""
    return f"{prefix}.up.{ROLES[role][0]}" if kind.startswith("node") else topic


def bridge_command(kind: str, source: str, target: str, prefix: str, topics: Sequence[str],
                   work: Path, *, role: str) -> list[str]:  # fmt: skip
    """The command that runs bridge ``kind`` from ``source`` to ``target``, reading ``topics``."""
    if kind.startswith("node"):
        config = work / f"{prefix}-{kind}-{role}-{next(_RUNS)}.toml"
        node_config(config, source, target, prefix, role=role, audit=kind != "node-noaudit",
                    workers=WORKERS.get(kind, 1))  # fmt: skip
        return [str(EXE), "run", "--config", str(config)]
    if kind == "mm2":
        return mm2_command(work, source, target, topics)
    return [sys.executable, str(HERE / "raw_pipe.py"), "--source", source, "--target", target,
            "--topic", ",".join(topics)]  # fmt: skip


@dataclass
class Stage:
    """Filled topics of one payload size and chain length: where each bridge starts and ends."""

    size: int
    prefix: str
    clusters: list[str]
    """The bootstraps along the chain: the first holds the filled topics."""
    topics: list[str]
    available: int
    workload: Workload
    """Where the filled records came from: a top-up continues it (new ids, next keys)."""
    fresh: bool = False

    def roles(self) -> tuple[str, ...]:
        """The level of each node along the chain."""
        return (("county", "city", "province") if self.fresh else ("city", "province"))[
            : len(self.clusters) - 1
        ]


async def run_bridges(stage: Stage, kinds: Sequence[str], work: Path, *,
                      window_s: float) -> dict[str, Any]:  # fmt: skip
    """Run one bridge per hop of ``stage`` (``kinds`` in order) and measure the last hop's output."""
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    topics = list(stage.topics)
    began = time.monotonic()
    try:
        for hop, (kind, role) in enumerate(zip(kinds, stage.roles(), strict=True)):
            source, target = stage.clusters[hop], stage.clusters[hop + 1]
            command = bridge_command(kind, source, target, stage.prefix, topics, work, role=role)
            log = (work / f"{stage.prefix}-{kind}-{hop}-{next(_RUNS)}.log").open("wb")
            logs.append(log)
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
            topics = [bridged_topic(kind, topics[0], stage.prefix, role)] if kind.startswith(
                "node") else topics  # fmt: skip
        warmup = MM2_WARMUP_S if "mm2" in kinds else WARMUP_S
        window = await measure(processes[-1], stage.clusters[-1], topics, stage.available,
                               warmup_s=warmup, window_s=window_s)  # fmt: skip
        result = window.summary()
        stopping = time.monotonic()
        if len(processes) > 1:  # CPU of every bridge of the chain over the same window is not
            result["note"] = "cpu and rss of the last hop's bridge only"  # comparable: say so
    finally:
        kill_bridges(processes)
        for handle in logs:
            handle.close()
    result["stop_s"] = time.monotonic() - stopping
    result["wall_s"] = time.monotonic() - began  # start, warm-up, window and stop: the bench's time
    return {"bridge": "+".join(kinds), "hops": len(kinds), "payload_bytes": stage.size, **result}


async def prepare(size: int, clusters: list[str], count: int, *, hops: int, fresh: bool,
                  workload: Workload) -> Stage:  # fmt: skip
    """Fill a fresh prefix's first topics with ``count`` records; create every topic on the way."""
    prefix = stage_prefix(hops, fresh, size)
    chain = clusters[: hops + 1]
    if fresh:
        topics = [f"{prefix}.outbox.{dept}" for dept in DEPARTMENTS]
        await ensure_topics(chain[0], topics, PARTITIONS, 1)
        available = await send_rows(chain[0], prefix, workload, count)
    else:
        topics = [first_topic(prefix, fresh=False)]
        await ensure_topics(chain[0], topics, PARTITIONS, 1)
        available = await send_rows(chain[0], topics[0], workload, count)
    roles = (("county", "city", "province") if fresh else ("city", "province"))[:hops]
    node_in = topics[0]
    for hop, role in enumerate(roles):  # every kind of bridge's destinations, bounded on disk
        node_out = bridged_topic("node", node_in, prefix, role)
        await ensure_topics(chain[hop + 1], [*topics, node_out], PARTITIONS, 1, RETENTION)
        node_in = node_out
    return Stage(size, prefix, chain, topics, available, workload, fresh)


def stage_prefix(hops: int, fresh: bool, size: int) -> str:
    """A new stage's topic prefix: hops, fresh or passing records, size, and a clock stamp."""
    return f"b{hops}{'i' if fresh else 'p'}{size}x{int(time.time() * 1000) % 10_000_000}"


_STAGE_TOPIC = re.compile(r"b\d[ip](\d+)x\d+\.")
"""How every topic of a stage begins: ``prepare``'s prefix (its size in the first group)."""


def _size_of(topic: str) -> int | None:
    """The payload size of the stage ``topic`` belongs to (None: not a stage's topic)."""
    found = _STAGE_TOPIC.match(topic)
    return int(found.group(1)) if found else None


async def drop_stages(clusters: Sequence[str], size: int) -> int:
    """Delete the topics of every stage of ``size`` on ``clusters``; return how many.

    A finished size's records are never read again: dropping them keeps the brokers' disk to
    one size's worth (a full run held up to 49 GB with every size kept).
    """
    return sum([await delete_topics(b, lambda name: _size_of(name) == size) for b in clusters])


async def delete_topics(bootstrap: str, chosen: Callable[[str], bool]) -> int:
    """Delete the topics on ``bootstrap`` that ``chosen`` picks; return how many."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-drop")
    await admin.start()
    try:
        mine = [name for name in await admin.list_topics() if chosen(name)]
        if mine:
            await admin.delete_topics(mine)
        return len(mine)
    finally:
        await admin.close()


RUNS_WHEN_SHORT = 3
"""Runs of one bridge at most, when each ran out of records (then kept, marked exhausted)."""


def fill_seconds(window_s: float) -> float:
    """Seconds of copying a fill must last: the longest warm-up, the window and 4 s of margin."""
    return MM2_WARMUP_S + window_s + 4


def wanted(row: dict[str, Any], available: int, window_s: float) -> int:
    """Records a stage should hold for a run as fast as ``row``'s fastest second.

    ``fill_seconds`` at that rate, as ``Plan.fill_count`` sizes the first fill from ``CEILINGS``.
    A run that ran out (maybe in its warm-up, with no fair second to go by) wants at least four
    times what there was.
    """
    need = int(row["fastest_second"] * fill_seconds(window_s))
    return max(need, 4 * available) if row["exhausted"] else need


async def top_up(stage: Stage, count: int) -> None:
    """Append ``count`` more records of the stage's workload to its first topics."""
    where = stage.prefix if stage.fresh else stage.topics[0]
    added = await send_rows(stage.clusters[0], where, stage.workload, count, stage.available)
    stage.available += added
    print(f"  topped up {stage.topics[0]}{' ...' if stage.fresh else ''} with {added:,} records "
          f"({stage.available:,} in all)", flush=True)  # fmt: skip


async def run_filled(stage: Stage, kinds: Sequence[str], work: Path, *,
                     window_s: float) -> dict[str, Any]:  # fmt: skip
    """``run_bridges``, keeping the stage filled for the fastest bridge seen (``CEILINGS`` guess).

    A faster host than the ceilings were set on empties the fill: after each run the stage is
    topped up to what its fastest second needs, and a run that ran out is run once more.
    """
    for attempt in range(1, RUNS_WHEN_SHORT + 1):
        row = await run_bridges(stage, kinds, work, window_s=window_s)
        need = wanted(row, stage.available, window_s)
        if need > stage.available:
            await top_up(stage, need - stage.available)
        if not row["exhausted"]:
            break
        if attempt < RUNS_WHEN_SHORT:
            print(f"  {row['bridge']} ran out of records: run again", flush=True)
    return row


def rotated(kinds: Sequence[str], round_: int) -> list[str]:
    """``kinds`` starting at a different one each round, so none always goes first."""
    shift = round_ % len(kinds)
    return [*kinds[shift:], *kinds[:shift]]


def tool_command(tool: str, *args: str) -> list[str]:
    """The command running one of Kafka's performance tools."""
    libs = localkafka.ensure_jars()
    return [localkafka.check_java(), "-Xmx512m", *localkafka.JVM_FLAGS,
            f"-Dlog4j2.configurationFile={localkafka.LOG4J_CONFIG}", "-cp", f"{libs}/*",
            f"org.apache.kafka.tools.{tool}", *args]  # fmt: skip


def kafka_tool(tool: str, *args: str) -> str:
    """Run one of Kafka's performance tools; return what it printed."""
    command = tool_command(tool, *args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} failed: {done.stderr[-2000:]}")
    return done.stdout


PRODUCER_REPORT_S = 5.0
"""ProducerPerformance prints what it sent every 5 s (a fixed interval of the tool)."""
PRODUCER_INTERVAL = re.compile(r"^(\d+) records sent, ([\d.]+) records/sec")


def steady_interval_rate(
    command: list[str], window_s: float, timeout_s: float = 120
) -> tuple[int, float]:
    """Run ProducerPerformance past its first report (warm-up), then ``window_s`` of reports.

    Returns the records and seconds of the steady reports; the tool is killed after them (it
    was given more records than it can send in that time).
    """
    wanted = max(1, round(window_s / PRODUCER_REPORT_S))
    steady: list[tuple[int, float]] = []
    seen = 0
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:  # fmt: skip
        killer = threading.Timer(timeout_s, process.kill)  # a silent tool cannot hang the bench
        killer.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                report = PRODUCER_INTERVAL.match(line.strip())
                if report is None:
                    continue
                seen += 1
                if seen > 1:  # the first report is the warm-up: the JVM, the first batches
                    records, rate = int(report.group(1)), float(report.group(2))
                    steady.append((records, records / rate))
                if len(steady) == wanted:
                    break
        finally:
            killer.cancel()
            process.kill()
    if len(steady) < wanted:
        raise RuntimeError(f"ProducerPerformance gave {len(steady)} of {wanted} steady reports")
    return sum(r for r, _ in steady), sum(s for _, s in steady)


def producer_args(target: str, topic: str, size: int, records: int) -> list[str]:
    """ProducerPerformance's arguments: ``records`` of ``size`` bytes to ``topic``, at once.

    The node's producer settings (batch size, linger, acks, idempotence).
    """
    return ["--topic", topic, "--num-records", str(records), "--record-size", str(size),
            "--throughput", "-1", "--producer-props", f"bootstrap.servers={target}", "acks=all",
            "enable.idempotence=true", f"batch.size={NODE_BATCH_BYTES}",
            f"linger.ms={NODE_LINGER_MS}"]  # fmt: skip


async def producer_performance(
    target: str, size: int, window_s: float
) -> tuple[dict[str, Any], str]:
    """Kafka's producer into ``target`` at ``size`` bytes, the node's producer settings, steady.

    Its rate over ``window_s`` of its own 5 s reports after the first (as a bridge's window
    follows its warm-up), then it is stopped; it is given far more records than it can send.
    Returns its row and its topic, which keeps every record (no byte retention) for
    ``consumer_performance`` to read.
    """
    topic = f"perf{size}x{next(_RUNS)}"
    await ensure_topics(
        target, [topic], PARTITIONS, 1, {"segment.bytes": RETENTION["segment.bytes"]}
    )
    command = tool_command("ProducerPerformance", *producer_args(target, topic, size, 10**9))
    records, seconds = await asyncio.to_thread(steady_interval_rate, command, window_s)
    return {"tool": "ProducerPerformance", "payload_bytes": size, "records": records,
            "records_per_s": records / seconds, "seconds": seconds}, topic  # fmt: skip


CONSUMER_WINDOW_S = 10.0
"""ConsumerPerformance reads for at least this long, as a bridge's window lasts."""
CONSUMER_AIM_S = 20.0
"""A top-up makes the topic this many seconds' worth at the rate just read: a longer read runs
faster (less of it is warm-up; 614k records/s over 5.3 s, 955k over 10 s at 1 KB), so it still
lasts the window."""
CONSUMER_READS = 3
"""Reads at most: a read too short for the window is followed by a top-up and another read."""


async def consumer_performance(bootstrap: str, topic: str, size: int) -> dict[str, Any]:
    """Kafka's consumer reading all of ``topic`` for at least ``CONSUMER_WINDOW_S`` (fetch rate).

    The tool stops at the end of its records, so while a read ends sooner the topic is topped
    up by ProducerPerformance to ``CONSUMER_AIM_S`` at the rate just read, and read again whole
    by a new group. ``reads`` says how many it took; a read still short is kept and says so
    (``short``).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        for read in range(1, CONSUMER_READS + 1):
            count = await end_offsets(consumer, [topic])
            row = await asyncio.to_thread(read_whole, bootstrap, topic, size, count)
            if row["seconds"] >= CONSUMER_WINDOW_S or read == CONSUMER_READS:
                break
            more = int(count * (CONSUMER_AIM_S / row["seconds"] - 1))
            print(f"  ConsumerPerformance read {count:,} records in {row['seconds']:.1f} s: "
                  f"{more:,} more", flush=True)  # fmt: skip
            args = producer_args(bootstrap, topic, size, more)
            await asyncio.to_thread(kafka_tool, "ProducerPerformance", *args)
    finally:
        await consumer.stop()
    return {**row, "reads": read, "short": row["seconds"] < CONSUMER_WINDOW_S}


def read_whole(bootstrap: str, topic: str, size: int, count: int) -> dict[str, Any]:
    """Run ConsumerPerformance over the ``count`` records of ``topic``; its fetch rate and time."""
    out = kafka_tool("ConsumerPerformance", "--bootstrap-server", bootstrap, "--topic", topic,
                     "--messages", str(count), "--timeout", "60000")  # fmt: skip
    lines = [line for line in out.strip().splitlines() if line and line[0].isdigit()]
    if not lines:
        raise RuntimeError(f"ConsumerPerformance printed no figures: {out[-500:]}")
    cells = [cell.strip() for cell in lines[-1].split(",")]
    fetch_ms, fetch_rate = float(cells[7]), float(cells[9])
    return {"tool": "ConsumerPerformance", "payload_bytes": size, "records": count,
            "records_per_s": fetch_rate, "seconds": fetch_ms / 1000}  # fmt: skip


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (hops, size, bridge): median, min and max of rate and CPU per record; peak RSS."""
    groups: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["hops"], run["payload_bytes"], run["bridge"]), []).append(run)
    out = []
    for (hops, size, bridge), mine in sorted(groups.items()):
        trusted = [r for r in mine if not r["exhausted"]] or mine
        out.append({"hops": hops, "payload_bytes": size, "bridge": bridge, "rounds": len(trusted),
                    "records_per_s": spread([r["records_per_s"] for r in trusted]),
                    "cpu_us_per_record": spread([r["cpu_us_per_record"] for r in trusted]),
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
                    "window_s": min(r["window_s"] for r in trusted),
                    "exhausted_runs": len(mine) - len([r for r in mine if not r["exhausted"]])})  # fmt: skip
    return out


def ratios(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Node against MM2 and the raw pipe (and two workers against one), from the medians."""
    by = {(s["hops"], s["payload_bytes"], s["bridge"].split("+")[0]): s for s in summary}
    out = []
    for hops, size in sorted({(h, p) for h, p, _ in by}):
        node, mm2, raw = (by.get((hops, size, kind)) for kind in ("node", "mm2", "raw"))
        if node is None:
            continue
        rate, cpu = node["records_per_s"]["median"], node["cpu_us_per_record"]["median"]
        row: dict[str, Any] = {"hops": hops, "payload_bytes": size}
        if mm2:
            row["node_over_mm2"] = rate / mm2["records_per_s"]["median"]
            row["cpu_node_over_mm2"] = cpu / mm2["cpu_us_per_record"]["median"]
        if raw:
            row["node_over_raw"] = rate / raw["records_per_s"]["median"]
        scaled = by.get((hops, size, "node-w2"))
        if scaled:
            row["w2_over_node"] = scaled["records_per_s"]["median"] / rate
            row["cpu_w2_over_node"] = scaled["cpu_us_per_record"]["median"] / cpu
            if mm2:  # scaled out as MM2 is (tasks.max): two processes against its task threads
                row["w2_over_mm2"] = (
                    scaled["records_per_s"]["median"] / mm2["records_per_s"]["median"]
                )
                row["cpu_w2_over_mm2"] = (
                    scaled["cpu_us_per_record"]["median"] / mm2["cpu_us_per_record"]["median"]
                )
        out.append(row)
    return out


@dataclass
class Plan:
    """What one invocation runs."""

    sizes: list[int]
    rounds: int
    window_s: float
    kinds: tuple[str, ...]
    two_hop_rounds: int
    memory_size: int | None
    two_hop_sizes: tuple[int, ...]
    """Sizes that also get two hops, the node without audit, the entry node and
    ConsumerPerformance (1 KB)."""
    tools: bool
    ingress: bool
    attribution: bool
    quick: bool
    partial: bool = False
    """Narrowed by its options (``common.narrowed``): not the full run the README quotes."""

    def fill_count(self, size: int, bridges: int = 1) -> int:
        """Records to fill: enough for the fastest bridge's warm-up and window, with a margin."""
        return int(CEILINGS[size] * fill_seconds(self.window_s) / bridges)


def log_run(row: dict[str, Any]) -> None:
    """One line per run, as it finishes."""
    flag = "  EXHAUSTED" if row["exhausted"] else ""
    print(f"  {row['bridge']:18} {row['payload_bytes']:>6} B: {row['records_per_s']:>9,.0f} rec/s"
          f"  {row['cpu_us_per_record']:6.1f} µs CPU/rec  RSS {row['peak_rss_mb']:4.0f} MB"
          f"  window {row['window_s']:.1f} s of {row['wall_s']:.0f} (first copy {row['first_copy_s']:.1f},"
          f" stop {row['stop_s']:.1f}){flag}", flush=True)  # fmt: skip


async def run_size(plan: Plan, size: int, clusters: list[str], work: Path,
                   runs: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """Every measurement of one payload size; returns facts about its workload."""
    workload = Workload(size, fresh=False)
    sample = list(Workload(size, fresh=False).rows(min(200_000, plan.fill_count(size))))
    facts = {"payload_bytes": size, "memo_hit_rate": memo_hit_rates(sample),
             "mean_value_bytes": statistics.mean(len(v) for _, v, _ in sample),
             "mean_header_bytes": statistics.mean(sum(len(k) + len(v) for k, v in h) for _, _, h in sample)}  # fmt: skip
    filling = time.monotonic()
    one = await prepare(size, clusters[1:], plan.fill_count(size), hops=1, fresh=False,
                        workload=workload)  # fmt: skip
    facts["fill_s"] = time.monotonic() - filling
    print(f"{size} B: {one.available:,} records in {one.topics[0]} ({facts['fill_s']:.0f} s)",
          flush=True)  # fmt: skip
    memory = size == plan.memory_size  # one round, without MM2's start-up: the node's peak RSS
    kinds = [k for k in plan.kinds if k != "mm2"] if memory else list(plan.kinds)
    if size in plan.two_hop_sizes and "node" in kinds and not plan.quick:
        kinds += WORKERS  # scale-out: interleaved with the one-process node, same rounds
    for round_ in range(1 if memory else plan.rounds):
        for kind in rotated(kinds, round_):
            row = await run_filled(one, [kind], work, window_s=plan.window_s)
            row["round"] = round_
            runs.append(row)
            log_run(row)
    if memory:
        return facts
    if plan.tools:
        made, topic = await producer_performance(one.clusters[1], size, plan.window_s)
        rows = [made]
        if size in plan.two_hop_sizes:  # 10 s of reading takes 30-60 s of writing: one size
            rows.insert(0, await consumer_performance(one.clusters[1], topic, size))
        await delete_topics(one.clusters[1], lambda name: name == topic)  # GBs: read, done
        tools += rows
        for tool in rows:
            print(f"  {tool['tool']:18} {size:>6} B: {tool['records_per_s']:>9,.0f} rec/s "
                  f"over {tool['seconds']:.1f} s", flush=True)  # fmt: skip
    if (
        plan.attribution and size in plan.two_hop_sizes
    ):  # the node without its audit trail: what the trail costs end to end
        row = await run_filled(one, ["node-noaudit"], work, window_s=plan.window_s)
        row["round"] = 0
        runs.append(row)
        log_run(row)
    if plan.ingress and size in plan.two_hop_sizes:
        fresh = await prepare(size, clusters[1:], plan.fill_count(size, 3), hops=1, fresh=True,
                              workload=Workload(size, fresh=True))  # fmt: skip
        row = await run_filled(fresh, ["node-ingress"], work, window_s=plan.window_s)
        row["round"] = 0
        runs.append(row)
        log_run(row)
    if plan.two_hop_rounds and size in plan.two_hop_sizes:
        beyond = Workload(size, fresh=False, targets=BEYOND_PROVINCE)  # both hops hand it up
        two = await prepare(size, clusters, plan.fill_count(size), hops=2, fresh=False,
                            workload=beyond)  # fmt: skip
        for round_ in range(plan.two_hop_rounds):
            for kind in rotated(plan.kinds, round_):
                row = await run_filled(two, [kind, kind], work, window_s=plan.window_s)
                row["round"] = round_
                runs.append(row)
                log_run(row)
    return facts


async def main_async(plan: Plan) -> None:
    """Start the clusters, measure every size, print and write the results."""
    runs: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    workloads = []
    began = time.monotonic()
    with bench_clusters("bench-e2e", ("county", "city", "province")) as (work, clusters):
        bootstraps = [cluster.bootstrap for cluster in clusters]
        for size in plan.sizes:
            workloads.append(await run_size(plan, size, bootstraps, work, runs, tools))
            print(f"{size} B: dropped {await drop_stages(bootstraps, size)} topics", flush=True)
    summary = summarise(runs)
    report(summary, tools, workloads, plan)
    result = {
        "quick": plan.quick, "partial": plan.partial, "window_s": plan.window_s, "warmup_s": WARMUP_S,
        "mm2_warmup_s": MM2_WARMUP_S, "rounds": plan.rounds, "two_hop_rounds": plan.two_hop_rounds,
        "seconds": time.monotonic() - began,
        "workload": {"resources": RESOURCES, "departments": len(DEPARTMENTS), "by_size": workloads},
        "mm2": {key: {"value": value, "why": why} for key, (value, why) in MM2_TUNING.items()}
        | {"heap": {"value": MM2_HEAP, "why": "fixed heap, as the brokers'"}},
        "summary": summary, "ratios": ratios(summary), "kafka_tools": tools, "runs": runs,
    }  # fmt: skip
    print(f"\nwrote {write('e2e', result)}")


def report(summary: list[dict[str, Any]], tools: list[dict[str, Any]],
           workloads: list[dict[str, Any]], plan: Plan) -> None:  # fmt: skip
    """Print the tables."""

    def fig(s: dict[str, float], fmt: str = ",.0f") -> str:
        return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"

    print(f"\nSteady windows of {plan.window_s:g} s; median (min-max) over rounds:")
    print(table(["hops", "payload B", "bridge", "rounds", "records/s", "CPU µs/record", "peak RSS MB"],
                [[s["hops"], s["payload_bytes"], s["bridge"], s["rounds"], fig(s["records_per_s"]),
                  fig(s["cpu_us_per_record"], ".1f"), round(s["peak_rss_mb"])] for s in summary]))  # fmt: skip
    print("\nRatios of medians:")
    print(table(["hops", "payload B", "node/MM2 rec/s", "node/MM2 CPU per record", "node/raw"],
                [[r["hops"], r["payload_bytes"], _r(r.get("node_over_mm2")),
                  _r(r.get("cpu_node_over_mm2")), _r(r.get("node_over_raw"))] for r in ratios(summary)]))  # fmt: skip
    if tools:
        print("\nKafka's own tools on the same brokers:")
        print(table(["tool", "payload B", "records/s", "seconds"],
                    [[t["tool"], t["payload_bytes"], t["records_per_s"], t["seconds"]] for t in tools]))  # fmt: skip
    print("\nWorkload:")
    print(table(["payload B", "mean value B", "mean headers B", "routing memo hits", "policy memo hits"],
                [[w["payload_bytes"], w["mean_value_bytes"], w["mean_header_bytes"],
                  f"{100 * w['memo_hit_rate']['routing']:.2f}%",
                  f"{100 * w['memo_hit_rate']['policy']:.2f}%"] for w in workloads]))  # fmt: skip


def _r(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bridges", default="raw,node,mm2", help="comma-separated: raw, node, mm2")
    parser.add_argument("--rounds", type=int, default=None, help="one-hop rounds (5; quick: 1)")
    parser.add_argument("--two-hop-rounds", type=int, default=None, help="(1; quick: 0)")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated payload sizes (200,1024,10240,102400)")  # fmt: skip
    parser.add_argument("--window", type=float, default=None, help="seconds (10; quick: 5)")
    parser.add_argument("--no-tools", action="store_true", help="skip Kafka's performance tools")
    parser.add_argument("--no-ingress", action="store_true", help="skip the entry node")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [1024] if args.quick else [200, 1024, 10_240, 102_400])  # fmt: skip
    plan = Plan(
        sizes=sizes, rounds=args.rounds or (1 if args.quick else 5),
        window_s=args.window or (5.0 if args.quick else WINDOW_S),
        kinds=tuple(args.bridges.split(",")),
        two_hop_rounds=args.two_hop_rounds if args.two_hop_rounds is not None else (0 if args.quick else 1),
        memory_size=102_400, two_hop_sizes=(1024,), tools=not args.no_tools and not args.quick,
        ingress=not args.no_ingress, attribution=not args.quick, quick=args.quick,
        partial=narrowed(parser, args),
    )  # fmt: skip
    asyncio.run(main_async(plan))


if __name__ == "__main__":
    main()
