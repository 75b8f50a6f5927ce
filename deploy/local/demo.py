"""The local cascade demo: three real Kafka clusters, four nodes, records moving up and down.

Province 410000 (Henan) ← city 410100 (Zhengzhou) ← counties 410102 and 410103, where 410103 is a
logical platform sharing the county cluster under its own topic prefix. The demo starts the
clusters and the nodes (``exchange-node run``), publishes sample records in both directions plus
one broken record, prints where each arrived and with which hop path, shows each node's counters,
the cascade as the province's live page sees it and the county's exchange statistics, then stops
everything it started, by process id (``--stay`` keeps it running to look at the pages).

Run with the project's virtual environment: ``make demo`` (or ``.venv/bin/python deploy/local/demo.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import localkafka
from department_client import Published, Received, publish, read_topic
from sample_records import LEGAL_ENTITY, LICENCE, PERSON, sample

from node.codec import SchemaSet, load_schemas, packaged_schema_dir

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CLUSTERS = {"province": 19092, "city": 29092, "county": 39092}
NODES = {  # config file → (admin port, cluster, topic prefix, region)
    "province": (9410, "province", "cascade", "410000"),
    "city": (9411, "city", "cascade", "410100"),
    "county": (9412, "county", "cascade", "410102"),
    "county-b": (9413, "county", "cascade-410103", "410103"),
}
WAIT_S = 60.0


@dataclass(frozen=True)
class Scenario:
    """One record sent in the demo and what should become of it."""

    title: str
    published: Published
    at_node: str  # where it is published
    expect: tuple[str, ...]  # nodes whose inbox should receive it; () = the refusal topic


def scenarios(schemas: SchemaSet) -> list[Scenario]:
    """The records the demo sends."""
    now = int(time.time() * 1000)

    def rec(schema: str, source: str, target: str, seed: int) -> Published:
        return sample(schemas, schema, source, target, seed=seed, created_ms=now)

    broken_envelope = rec(PERSON, "410102", "region:410000", 99).envelope
    return [
        Scenario("up: county → province", rec(PERSON, "410102", "region:410000", 1), "county", ("province",)),
        Scenario("up: county → city (level)", rec(LEGAL_ENTITY, "410102", "level:city", 2), "county", ("city",)),
        Scenario("across: county → sibling county", rec(LICENCE, "410102", "region:410103", 3), "county", ("county-b",)),
        Scenario("down: province → one county", rec(PERSON, "410000", "region:410102", 4), "province", ("county",)),
        Scenario("down: province → city subtree", rec(LICENCE, "410000", "subtree:410100", 5), "province", ("city", "county", "county-b")),
        Scenario("refused: undecodable value", Published(broken_envelope, b"\xc3\x01not-avro"), "county", ()),
        Scenario("refused: not shared (catalog)", sample(schemas, PERSON, "410102", "region:410000", seed=7, created_ms=now, resource="410102-PSB-00009"), "county", ()),
        Scenario("refused: not the one source", sample(schemas, PERSON, "410102", "region:410000", seed=8, created_ms=now, source_dept="HRSS"), "county", ()),
    ]  # fmt: skip


def topic(node: str, name: str) -> tuple[str, str]:
    """The bootstrap address and full topic name of ``name`` on ``node``'s cluster."""
    _, cluster, prefix, _ = NODES[node]
    return f"127.0.0.1:{CLUSTERS[cluster]}", f"{prefix}.{name}"


@contextmanager
def running_nodes(logs: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start every demo node as ``exchange-node run``; SIGTERM them (by pid) on the way out."""
    exe = Path(sys.executable).with_name("exchange-node")
    processes = []
    try:
        for name in NODES:
            log = (logs / f"node-{name}.log").open("wb")
            config = HERE / "demo" / f"{name}.toml"
            processes.append(
                subprocess.Popen(
                    [exe, "run", "--config", config], stdout=log, stderr=subprocess.STDOUT
                )
            )
        yield processes
    finally:
        localkafka.stop_processes(processes, timeout=40)


def wait_healthy(processes: list[subprocess.Popen[bytes]], logs: Path) -> None:
    """Wait until every node's /healthz answers 200; fail with the node's log tail if not."""
    deadline = time.monotonic() + WAIT_S
    for (name, (port, *_)), process in zip(NODES.items(), processes, strict=True):
        while True:
            if process.poll() is not None:
                tail = (logs / f"node-{name}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"node {name} exited with {process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"node {name} not healthy after {WAIT_S} s; see {logs}")
            time.sleep(0.2)


async def exchange(schemas: SchemaSet) -> list[tuple[Scenario, dict[str, Received]]]:
    """Publish every scenario's record, then collect where each one landed."""
    plan = scenarios(schemas)
    for scenario in plan:
        await publish(*topic(scenario.at_node, "outbox"), [scenario.published])
    results = []
    for scenario in plan:
        record_id = scenario.published.envelope.record_id
        places = [(n, "inbox") for n in scenario.expect] or [(scenario.at_node, "refused")]
        found: dict[str, Received] = {}
        for node, name in places:
            got = await read_topic(
                *topic(node, name),
                until=lambda rs, rid=record_id: any(r.record_id == rid for r in rs),  # type: ignore[misc]
                timeout_s=WAIT_S,
            )
            found.update({f"{node}.{name}": r for r in got if r.record_id == record_id})
        results.append((scenario, found))
    return results


def report(results: list[tuple[Scenario, dict[str, Received]]]) -> bool:
    """Print where each record arrived; return whether every one arrived where expected."""
    ok = True
    print(f"\n{'scenario':34} {'record':10} {'arrived at':18} hop path / refusal")
    print("-" * 100)
    for scenario, found in results:
        expected = len(scenario.expect) or 1
        short = scenario.published.envelope.record_id[:8]
        if len(found) != expected:
            ok = False
            print(f"{scenario.title:34} {short:10} MISSING (found {sorted(found)})")
        title = scenario.title
        for place, received in found.items():
            detail = received.headers.get("cx-hops", "")
            if "cx-refusal-reason" in received.headers:
                detail = f"{received.headers['cx-refusal-reason']}: {received.headers['cx-refusal-message']}"
            same = (
                "bytes unchanged" if received.value == scenario.published.value else "BYTES CHANGED"
            )
            print(f"{title:34} {short:10} {place:18} {detail}  [{same}]")
            title = short = ""
    return ok


def counters() -> None:
    """Print each node's record counters from its /metrics endpoint."""
    print("\nnode counters (from /metrics):")
    for name, (port, *_) in NODES.items():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        lines = [
            line for line in text.splitlines()
            if line.startswith(("exchange_records_out_total", "exchange_records_refused_total"))
            and not line.endswith(" 0.0")
        ]  # fmt: skip
        print(f"  {name}: " + ("; ".join(lines) if lines else "(nothing yet)"))


def cascade_tree() -> None:
    """Print the cascade as the province's /cascade.json shows it (children report their subtree)."""
    port = NODES["province"][0]
    deadline = time.monotonic() + 20
    while True:  # the counties appear once the city's heartbeat carried their beats
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/cascade.json", timeout=5) as r:
            document = json.load(r)
        nested = [c for city in document["children"] for c in city.get("children", [])]
        if len(nested) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print(f"\nthe cascade as the province sees it (http://127.0.0.1:{port}/cascade):")

    def show(view: dict[str, Any], depth: int) -> None:
        links = view.get("links") or {}
        states = ", ".join(f"{n} {'up' if v.get('up') else 'DOWN'}" for n, v in links.items())
        age = view.get("heartbeat_age_s")
        heard = "" if age is None else f", heartbeat {age:.1f} s ago"
        stale = " STALE" if view.get("stale") else ""
        print(f"  {'  ' * depth}{view['region']} {view.get('node') or '?'}: {states}{heard}{stale}")
        for child in view.get("children", []):
            show(child, depth + 1)

    show(document, 0)


def stay() -> None:
    """Wait for Ctrl-C, telling where each node's live page is."""
    for name, (port, *_) in NODES.items():
        print(f"  {name:9} http://127.0.0.1:{port}/cascade")
    print("the cascade keeps running; Ctrl-C stops it")
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(1)


def statistics() -> None:
    """Print what the county exchanged, as ``exchange-node stats`` reads it from its topic."""
    exe = Path(sys.executable).with_name("exchange-node")
    config = HERE / "demo" / "county.toml"
    print("\nexchange statistics of the county (exchange-node stats --since 1h):")
    done = subprocess.run(
        [exe, "stats", "--config", config, "--since", "1h"], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    print(done.stdout or done.stderr)


def main() -> int:
    """Run the demo; exit 0 if every record went where it should."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=REPO / ".local" / "demo", help="working folder")
    parser.add_argument(
        "--stay",
        action="store_true",
        help="keep the cascade running until Ctrl-C (look at the pages)",
    )
    args = parser.parse_args()
    work: Path = args.dir
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"Kafka {localkafka.KAFKA_VERSION} jars: {localkafka.ensure_jars()}")
    specs = [
        localkafka.ClusterSpec(name=name, port=port, controller_port=port + 1)
        for name, port in CLUSTERS.items()
    ]
    began = time.monotonic()
    shutil.rmtree(work / "kafka", ignore_errors=True)  # every demo starts from empty clusters
    clusters = localkafka.start_clusters(specs, work / "kafka")
    try:
        print(f"3 clusters up in {time.monotonic() - began:.1f} s: "
              + ", ".join(f"{c.spec.name} {c.bootstrap}" for c in clusters))  # fmt: skip
        with running_nodes(logs) as processes:
            wait_healthy(processes, logs)
            print(f"4 nodes healthy; logs in {logs}")
            schemas = load_schemas(packaged_schema_dir())
            results = asyncio.run(exchange(schemas))
            ok = report(results)
            counters()
            cascade_tree()
            if args.stay:
                stay()
        statistics()  # the nodes wrote their last statistics as they stopped
    finally:
        localkafka.stop_clusters(clusters)
    print("\nall records went where they should" if ok else "\nSOME RECORDS DID NOT ARRIVE")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
