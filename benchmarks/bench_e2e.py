"""End to end through real Kafka on loopback: the node against a raw aiokafka pipe and MirrorMaker 2.

One hop at three payload sizes (three interleaved rounds; medians), then two hops
(county → city → province) at the same sizes, one round. ``--quick`` (under a minute and a half):
a fifth of the records at 1 KB and 10 KB, one round, no one-hop node-ingress, two hops at 1 KB
only and no raw+raw.

Two single-node clusters (city → province, 1 GiB heap each). For each payload size the city's
``up.410102`` is filled with N records that arrived from a child county (hop path ``410102^``), so
the node passes them through without decoding, as on every hop after the first (fresh records go
to the county's ``outbox.PSB``). A node hands its copies up to ``up.REGION`` on the next cluster;
the raw pipe and MM2 copy a topic to the same name. Then the bridge under
test starts (the node as ``exchange-node run``, or ``raw_pipe.py``) and the province topic's end
offsets are polled: throughput is N over the time from the first copied record to the last, so
start-up is not counted. Peak RSS is the bridge process's VmHWM. Same brokers, same records,
same run; the figures that matter are the ratios node / raw and node / MM2.
``node-ingress`` is the node where records enter the cascade: it checks every envelope and decodes
every value (the price of ingress validation, against ``node`` which passes bytes through).
Records are addressed to the national level (``region:000000``), so every node sends them up.
Two hops: the first node is the county (node-ingress, fresh records) or the city (node, records
from a county); the second is one level above it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from common import table, write

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy" / "local"))
import localkafka  # lives in deploy/local
from sample_records import PERSON, sample

from node.codec import load_schemas, packaged_schema_dir
from node.core.envelope import HOPS
from node.kafka.topics import ensure_topics

HERE = Path(__file__).resolve().parent
EXE = Path(sys.executable).with_name("exchange-node")
PARTITIONS = 3
_MM2_RUNS = itertools.count(1)
CHAINS = (("raw", "raw"), ("node", "node"), ("node-ingress", "node"), ("mm2", "mm2"))
"""Two-hop chains: node+node passes records through (as MM2 does); node-ingress validates first."""


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
    specs = [localkafka.ClusterSpec(name, free_port(), free_port(), heap_mb=1024) for name in names]
    return work, localkafka.start_clusters(specs, work / "kafka")


def records(
    size: int, count: int, *, fresh: bool = False
) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """``count`` (key, value, headers) of person records padded to about ``size`` bytes.

    Fresh records have an empty hop path, so the node validates them (decodes every value).
    """
    schemas = load_schemas(packaged_schema_dir())
    out = []
    base = sample(
        schemas, PERSON, "410102", "region:000000", seed=0, created_ms=int(time.time() * 1000)
    )
    _, datum = schemas.decode(base.value)
    datum["address"] = "x" * max(0, size - len(base.value))
    value = schemas.encode(PERSON, datum)
    hops = b"" if fresh else b"410102^"
    headers = [(k, v) for k, v in base.envelope.to_headers() if k != HOPS] + [(HOPS, hops)]
    for n in range(count):
        out.append((f"{n:012d}".encode(), value, headers))
    return out


async def fill(
    bootstrap: str, topic: str, batch: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
) -> None:
    """Produce the records to ``topic`` and wait for every ack."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024,
                                max_request_size=4 * 1024 * 1024)  # fmt: skip
    await producer.start()
    try:
        futures = [await producer.send(topic, v, key=k, headers=h) for k, v, h in batch]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def copied(consumer: AIOKafkaConsumer, topic: str) -> int:
    """Records on ``topic`` (sum of end offsets)."""
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    return int(sum((await consumer.end_offsets(partitions)).values()))


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a running process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def watch(
    process: subprocess.Popen[bytes], target: str, topic: str, count: int, timeout_s: float
) -> dict[str, Any]:
    """Poll the destination until ``count`` records arrived; return throughput and peak RSS."""
    deadline = time.monotonic() + timeout_s
    consumer = AIOKafkaConsumer(bootstrap_servers=target)
    await consumer.start()
    try:
        return await _watch(process, consumer, topic, count, deadline, timeout_s)
    finally:
        await consumer.stop()


async def _watch(process: subprocess.Popen[bytes], consumer: AIOKafkaConsumer, topic: str, count: int,
                 deadline: float, timeout_s: float) -> dict[str, Any]:  # fmt: skip
    first = last = None
    rss = 0.0
    while time.monotonic() < deadline:
        done = await copied(consumer, topic)
        now = time.monotonic()
        if process.poll() is None:
            rss = max(rss, peak_rss_mb(process.pid))
        if done and first is None:
            first = now
        if done >= count:
            last = now
            break
        if process.poll() is not None and process.returncode != 0:
            raise RuntimeError(f"bridge exited with {process.returncode}")
        await asyncio.sleep(0.02)
    if first is None or last is None:
        raise RuntimeError(
            f"only {await copied(consumer, topic)} of {count} records copied in {timeout_s} s"
        )
    seconds = max(last - first, 1e-3)
    return {"seconds": seconds, "records_per_s": count / seconds, "peak_rss_mb": rss}


def mm2_command(work: Path, city: str, province: str, topic: str) -> list[str]:
    """Write an MM2 properties file copying ``topic`` city → province; return the java command.

    Cluster aliases are unique per run, so no run reads the internal topics of an earlier one.
    """
    run = next(_MM2_RUNS)
    properties = work / f"{topic}.mm2-{run}.properties"
    a, b = f"src{run}", f"dst{run}"
    internal = ("replication.factor", "checkpoints.topic.replication.factor",
                "heartbeats.topic.replication.factor", "offset-syncs.topic.replication.factor",
                "offset.storage.replication.factor", "status.storage.replication.factor",
                "config.storage.replication.factor")  # fmt: skip
    lines = [
        f"clusters = {a}, {b}", f"{a}.bootstrap.servers = {city}", f"{b}.bootstrap.servers = {province}",
        f"{a}->{b}.enabled = true", f"{a}->{b}.topics = {topic.replace('.', '[.]')}", f"{b}->{a}.enabled = false",
        "replication.policy.class = org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        f"tasks.max = {PARTITIONS}", "emit.checkpoints.enabled = false", "sync.topic.configs.enabled = false",
        "sync.topic.acls.enabled = false", "refresh.topics.interval.seconds = 5",
        f"{b}.producer.linger.ms = 5", f"{b}.producer.batch.size = 262144", f"{b}.producer.acks = all",
        f"{b}.producer.enable.idempotence = true", f"{a}.consumer.auto.offset.reset = earliest",
        *(f"{key} = 1" for key in internal),
    ]  # fmt: skip
    properties.write_text("\n".join(lines) + "\n")
    libs = localkafka.ensure_jars()
    return [localkafka.check_java(), "-Xms512m", "-Xmx512m", *localkafka.JVM_FLAGS,
            f"-Dlog4j2.configurationFile={localkafka.LOG4J_CONFIG}", "-cp", f"{libs}/*",
            "org.apache.kafka.connect.mirror.MirrorMaker", str(properties)]  # fmt: skip


ROLES = {
    "county": ("410102", "410100", ""),
    "city": ("410100", "410000", "410102"),
    "province": ("410000", "000000", "410100"),
}
"""A node's region, its parent's and its child's (whose hand-up topic it reads), by level:
records enter at the county and pass the others."""


def node_config(path: Path, city: str, province: str, prefix: str, *, role: str) -> None:
    """A node bridging two clusters as ``role``: county (where records enter), city or province."""
    level = role
    region, parent, child = ROLES[role]
    children = f'["{child}"]' if child else "[]"
    path.write_text(f"""
[node]
id = "bench-{prefix}"
level = "{level}"
region = "{region}"
children = {children}
[local]
bootstrap = "{city}"
topic_prefix = "{prefix}"
[parent]
bootstrap = "{province}"
region = "{parent}"
topic_prefix = "{prefix}"
[topics]
partitions = {PARTITIONS}
[admin]
port = {free_port()}
[log]
format = "json"
level = "warning"
""")


def first_topic(prefix: str, *, fresh: bool) -> str:
    """Where the records are filled: PSB's outbox at the county (fresh), or the county's hand-up."""
    return f"{prefix}.outbox.PSB" if fresh else f"{prefix}.up.410102"


def bridged_topic(kind: str, topic: str, prefix: str, role: str) -> str:
    """Where bridge ``kind`` as ``role`` writes what it reads from ``topic``."""
    return f"{prefix}.up.{ROLES[role][0]}" if kind.startswith("node") else topic


def bridge_command(
    kind: str, source: str, target: str, prefix: str, topic: str, count: int, work: Path, *,
    role: str,
) -> list[str]:  # fmt: skip
    """The command that runs bridge ``kind`` from ``source`` to ``target``, reading ``topic``."""
    if kind.startswith("node"):
        config = work / f"{prefix}-{kind}-{source.rsplit(':', 1)[1]}.toml"
        node_config(config, source, target, prefix, role=role)
        return [str(EXE), "run", "--config", str(config)]
    if kind == "mm2":
        return mm2_command(work, source, target, topic)
    return [sys.executable, str(HERE / "raw_pipe.py"), "--source", source, "--target", target,
            "--topic", topic, "--count", str(count)]  # fmt: skip


async def run_chain(
    hops: list[tuple[str, str, str]], size: int, count: int, work: Path, *, fresh: bool
) -> dict[str, Any]:
    """Fill a fresh topic, run one bridge per (kind, source, target) hop, and measure at the end."""
    kinds = "+".join(kind for kind, _, _ in hops)
    prefix = f"b{len(hops)}{kinds.replace('+', '')}{size}x{int(time.time() * 1000) % 10_000_000}"
    clusters = [hops[0][1], *(target for _, _, target in hops)]
    roles = (("county", "city", "province") if fresh else ("city", "province"))[: len(hops)]
    topics = [first_topic(prefix, fresh=fresh)]  # each node one level above the last
    for (kind, _, _), role in zip(hops, roles, strict=True):
        topics.append(bridged_topic(kind, topics[-1], prefix, role))
    for cluster, topic in zip(clusters, topics, strict=True):
        await ensure_topics(cluster, [topic], PARTITIONS, 1)
    await fill(clusters[0], topics[0], records(size, count, fresh=fresh))
    processes = []
    logs: list[IO[bytes]] = []
    try:
        for (kind, source, target), role, topic in zip(hops, roles, topics, strict=False):
            log = (work / f"{prefix}-{len(logs)}.log").open("wb")
            logs.append(log)
            command = bridge_command(kind, source, target, prefix, topic, count, work, role=role)
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        result = await watch(processes[-1], clusters[-1], topics[-1], count, timeout_s=300)
    finally:
        localkafka.stop_processes(processes)
        for handle in logs:
            handle.close()
    mb = size * count / 1e6
    bridge = hops[0][0] if len(hops) == 1 else kinds
    return {"bridge": bridge, "hops": len(hops), "payload_bytes": size, "records": count,
            "mb_per_s": mb / result["seconds"], **result}  # fmt: skip


async def run_one(
    kind: str, size: int, count: int, city: str, province: str, work: Path
) -> dict[str, Any]:
    """One hop, city → province."""
    return await run_chain(
        [(kind, city, province)], size, count, work, fresh=kind == "node-ingress"
    )


async def main_async(
    quick: bool, kinds: tuple[str, ...], rounds: int, sizes: set[int] | None
) -> None:
    """Start the clusters, run every size for both bridges, print and write the results."""
    work, clusters = start_bench_clusters("bench-e2e", ("county", "city", "province"))
    rows = []
    chains = []
    try:
        county, city, province = (cluster.bootstrap for cluster in clusters)
        plan = [(200, 50_000), (1024, 50_000), (10_240, 10_000)]
        if quick:
            plan = [(size, count // 5) for size, count in plan if size >= 1024]
        plan = [(size, count) for size, count in plan if sizes is None or size in sizes]
        for size, count in plan:
            for round_ in range(rounds):  # bridges interleaved, so drift hits them alike
                for kind in kinds:
                    if quick and kind == "node-ingress":
                        continue  # quick: ingress is priced in the node-ingress+node chain
                    row = await run_one(kind, size, count, city, province, work)
                    row["round"] = round_
                    rows.append(row)
                    print(
                        f"  {kind:12} {size:6} B: {row['records_per_s']:>9,.0f} rec/s  {row['mb_per_s']:6.1f} MB/s  peak RSS {row['peak_rss_mb']:.0f} MB",
                        flush=True,
                    )
        for size, count in plan if not quick else [(1024, 10_000)]:  # quick: two hops at 1 KB
            for first, second in CHAINS:
                if first.split("-")[0] not in kinds or (quick and first == "raw"):
                    continue
                hops = [(first, county, city), (second, city, province)]
                row = await run_chain(hops, size, count, work, fresh=first == "node-ingress")
                chains.append(row)
                print(
                    f"  two hops {row['bridge']:18} {size:6} B: {row['records_per_s']:>9,.0f} rec/s",
                    flush=True,
                )
    finally:
        localkafka.stop_clusters(clusters)
    ratios = []
    for size, _ in plan:

        def median(kind: str, key: str = "records_per_s", size: int = size) -> float | None:
            values = [r[key] for r in rows if r["bridge"] == kind and r["payload_bytes"] == size]
            return statistics.median(values) if values else None

        raw, node, mm2 = median("raw"), median("node"), median("mm2")
        if raw is None or node is None:
            continue
        ratios.append({"payload_bytes": size, "rounds": rounds, "raw": raw, "node": node, "mm2": mm2,
                       "node_ingress": median("node-ingress"),
                       "node_over_raw": node / raw, "node_over_mm2": node / mm2 if mm2 else None,
                       "node_peak_rss_mb": max(r["peak_rss_mb"] for r in rows if r["bridge"].startswith("node") and r["payload_bytes"] == size)})  # fmt: skip
    print(f"\nOne hop (city → province), records/s, median of {rounds} round(s):")
    print(table(["payload B", "raw", "node", "node ingress", "MM2", "node/raw", "node/MM2", "node peak RSS MB"],
                [[r["payload_bytes"], r["raw"], r["node"], r["node_ingress"] or "-", r["mm2"] or "-", round(r["node_over_raw"], 2),
                  round(r["node_over_mm2"], 2) if r["node_over_mm2"] else "-", round(r["node_peak_rss_mb"])]
                 for r in ratios]))  # fmt: skip
    if chains:
        print(
            "\nTwo hops (county → city → province), one round, records/s (the node validates at the first hop):"
        )
        print(table(["payload B", "bridges", "records/s", "MB/s"],
                    [[c["payload_bytes"], c["bridge"], c["records_per_s"], c["mb_per_s"]] for c in chains]))  # fmt: skip
    print(
        f"\nwrote {write('e2e', {'runs': rows, 'ratios': ratios, 'two_hops': chains, 'quick': quick})}"
    )


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bridges", default="raw,node,node-ingress,mm2",
                        help="comma-separated: raw, node, node-ingress, mm2")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=None, help="rounds per size (3; quick: 1)")
    parser.add_argument(
        "--sizes", default=None, help="comma-separated payload sizes (all: 200,1024,10240)"
    )
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    sizes = {int(size) for size in args.sizes.split(",")} if args.sizes else None
    asyncio.run(main_async(args.quick, tuple(args.bridges.split(",")), rounds, sizes))


if __name__ == "__main__":
    main()
