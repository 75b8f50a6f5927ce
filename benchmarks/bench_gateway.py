"""Records/s through the HTTP gateway: JSON in, checked, encoded, produced and acked; and read back.

One single-node cluster on loopback and one node (``exchange-node run``, county 410102 as the
root) with the gateway on. An aiohttp client with a few concurrent connections POSTs person
records of the county's PSB resource for the county itself, so the node also routes each one to
its inbox and to a subscribed department (HRSS): the figures include that work on the same two
cores, as in production. Modes: 1 record per request and 100 per request, each over windows of
``--seconds`` (default 10) after a 2 s warm-up, in interleaved rounds; median, min and max.
Records are distinct (200 different people; ids made by the node). Then HRSS reads its delivery
topic back through ``GET /deliveries`` (pages of 1000) for one window.

CPU per record is the node process's utime + stime over the window divided by the records; the
client runs in this process and competes for the same cores, so records/s is a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from bench_e2e import EXE, bench_clusters, free_port, peak_rss_mb
from common import table, write

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy" / "local"))
import localkafka  # lives in deploy/local
from sample_records import person

from node.compose import to_json

REGION = "410102"
RESOURCE = f"{REGION}-PSB-00001"
TOKENS = {"PSB": "bench-psb-token", "HRSS": "bench-hrss-token"}
WARMUP_S = 2.0
READY_TIMEOUT_S = 90.0
PARTITIONS = 3


def config_text(bootstrap: str, prefix: str, port: int) -> str:
    """The node's TOML: a root county with the gateway for PSB and HRSS; HRSS subscribes."""
    clients = "".join(
        f'[[gateway.clients]]\ndepartment = "{dept}"\n'
        f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\nmax_batch = 1000\n'
        for dept, token in TOKENS.items()
    )
    return f"""
[node]
id = "bench-{prefix}"
level = "county"
region = "{REGION}"
[local]
bootstrap = "{bootstrap}"
topic_prefix = "{prefix}"
[topics]
partitions = {PARTITIONS}
[admin]
port = {port}
[log]
format = "json"
level = "warning"
[[departments]]
code = "HRSS"
clearance = 3
subscribe = ["{RESOURCE}"]
[gateway]
enabled = true
{clients}"""


def bodies(per_request: int, count: int = 50) -> list[bytes]:
    """``count`` distinct request bodies of ``per_request`` person records each."""
    rng = random.Random(per_request)
    people = [to_json(person(rng, REGION)) for _ in range(200)]
    return [
        json.dumps({
            "target": f"region:{REGION}",
            "records": [{"value": rng.choice(people)} for _ in range(per_request)],
        }, ensure_ascii=False).encode()
        for _ in range(count)
    ]  # fmt: skip


def cpu_s(pid: int) -> float:
    """Return the CPU seconds (utime + stime) a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_ready(
    session: aiohttp.ClientSession, base: str, node: subprocess.Popen[bytes]
) -> None:
    """Poll /readyz until 200 (bounded)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise RuntimeError(f"the node exited with {node.returncode}")
        try:
            async with session.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the node was not ready within {READY_TIMEOUT_S} s")


async def publish_window(session: aiohttp.ClientSession, base: str, pid: int, per_request: int,
                         concurrency: int, seconds: float) -> dict[str, Any]:  # fmt: skip
    """POST for WARMUP_S + ``seconds`` from ``concurrency`` workers; measure the last ``seconds``."""
    url = f"{base}/gateway/v1/resources/{RESOURCE}/records"
    headers = {"Authorization": f"Bearer {TOKENS['PSB']}", "Content-Type": "application/json"}
    pool = bodies(per_request)
    started = time.monotonic()
    measure_from, ends = started + WARMUP_S, started + WARMUP_S + seconds
    counted = {"records": 0, "requests": 0, "failed": 0}
    latencies: list[float] = []
    cpu_at_start: list[float] = []

    async def worker(n: int) -> None:
        i = n
        while (now := time.monotonic()) < ends:
            if now >= measure_from and not cpu_at_start:
                cpu_at_start.append(cpu_s(pid))
            sent = time.monotonic()
            async with session.post(url, data=pool[i % len(pool)], headers=headers) as response:
                await response.read()
                ok = response.status == 201
            done = time.monotonic()
            i += concurrency
            if sent >= measure_from and done <= ends:
                counted["requests"] += 1
                counted["records"] += per_request if ok else 0
                counted["failed"] += 0 if ok else 1
                latencies.append(done - sent)

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    cpu = cpu_s(pid) - (cpu_at_start[0] if cpu_at_start else cpu_s(pid))
    latencies.sort()
    return {
        "per_request": per_request, "concurrency": concurrency, "seconds": seconds,
        "records": counted["records"], "requests": counted["requests"], "failed": counted["failed"],
        "records_per_s": counted["records"] / seconds, "requests_per_s": counted["requests"] / seconds,
        "latency_p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "latency_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
        "node_cpu_us_per_record": 1e6 * cpu / counted["records"] if counted["records"] else None,
    }  # fmt: skip


async def read_window(
    session: aiohttp.ClientSession, base: str, pid: int, seconds: float
) -> dict[str, Any]:
    """Page through HRSS's deliveries (1000 a page) for ``seconds``; records/s read."""
    url = f"{base}/gateway/v1/deliveries"
    headers = {"Authorization": f"Bearer {TOKENS['HRSS']}"}
    cursor, records, pages = "", 0, 0
    cpu_before, started = cpu_s(pid), time.monotonic()
    while time.monotonic() - started < seconds:
        async with session.get(
            url, params={"cursor": cursor, "limit": "1000"}, headers=headers
        ) as response:
            page = await response.json()
        if response.status != 200 or not page["records"]:
            break
        records += len(page["records"])
        pages += 1
        cursor = page["cursor"]
    elapsed = time.monotonic() - started
    cpu = cpu_s(pid) - cpu_before
    return {"records": records, "pages": pages, "seconds": elapsed, "records_per_s": records / elapsed,
            "node_cpu_us_per_record": 1e6 * cpu / records if records else None}  # fmt: skip


async def main_async(seconds: float, rounds: int, concurrency: int) -> None:
    """Start a cluster and a node, run the rounds, print and write the results."""
    with bench_clusters("bench-gateway", ("county",)) as (work, clusters):
        prefix = f"g{int(time.time()) % 10_000_000}"
        port = free_port()
        config = work / "node.toml"
        config.write_text(config_text(clusters[0].bootstrap, prefix, port))
        log = (work / "node.log").open("wb")
        node = subprocess.Popen(
            [str(EXE), "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{port}"
        rows: list[dict[str, Any]] = []
        try:
            timeout = aiohttp.ClientTimeout(total=60)
            connector = aiohttp.TCPConnector(limit=concurrency)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                await wait_ready(session, base, node)
                for round_ in range(rounds):
                    for per_request in (1, 100):
                        row = await publish_window(
                            session, base, node.pid, per_request, concurrency, seconds
                        )
                        row["round"] = round_
                        rows.append(row)
                        print(f"  round {round_} {per_request:3} rec/request: {row['records_per_s']:>8,.0f} rec/s  "
                              f"{row['requests_per_s']:>6,.0f} req/s  p50 {row['latency_p50_ms']:.1f} ms  "
                              f"p99 {row['latency_p99_ms']:.1f} ms  failed {row['failed']}", flush=True)  # fmt: skip
                reading = await read_window(session, base, node.pid, seconds)
                print(
                    f"  read back: {reading['records_per_s']:,.0f} rec/s over {reading['pages']} pages",
                    flush=True,
                )
            rss = peak_rss_mb(node.pid)
        finally:
            localkafka.stop_processes([node])
            log.close()
    summary = []
    for per_request in (1, 100):
        mine = [r for r in rows if r["per_request"] == per_request]
        rates = [r["records_per_s"] for r in mine]
        cpus = [r["node_cpu_us_per_record"] for r in mine if r["node_cpu_us_per_record"]]
        summary.append({
            "per_request": per_request, "rounds": len(mine), "records_per_s_median": statistics.median(rates),
            "records_per_s_min": min(rates), "records_per_s_max": max(rates),
            "latency_p50_ms_median": statistics.median(r["latency_p50_ms"] for r in mine),
            "node_cpu_us_per_record_median": statistics.median(cpus) if cpus else None,
        })  # fmt: skip
    print(f"\nGateway POST, {concurrency} connections, {seconds:g} s windows, {rounds} round(s):")
    print(table(["records/request", "records/s median", "min", "max", "p50 ms", "node CPU µs/record"],
                [[s["per_request"], s["records_per_s_median"], s["records_per_s_min"], s["records_per_s_max"],
                  round(s["latency_p50_ms_median"], 1), s["node_cpu_us_per_record_median"] or "-"]
                 for s in summary]))  # fmt: skip
    print(
        f"GET deliveries (1000/page): {reading['records_per_s']:,.0f} records/s; node peak RSS {rss:.0f} MB"
    )
    results = {"runs": rows, "summary": summary, "read": reading, "node_peak_rss_mb": rss,
               "concurrency": concurrency, "window_s": seconds}  # fmt: skip
    print(f"wrote {write('gateway', results)}")


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window (≥ 10 s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main_async(args.seconds, args.rounds, args.concurrency))


if __name__ == "__main__":
    main()
