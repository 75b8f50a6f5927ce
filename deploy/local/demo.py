"""The local cascade demo: three real Kafka clusters, five nodes, records moving every way.

Province 410000 (Henan) ← city 410100 (Zhengzhou) ← counties 410102 and 410103; and Jiyuan 419001,
a county-level city directly under the province (a branch that skips the city level). 410103 and
419001 are logical platforms sharing the county cluster under their own topic prefixes. The demo
starts the clusters and the nodes (``exchange-node run``), publishes generated records (valid ones
up, down to one county, to a subtree and across, and some the nodes must refuse) for
``--duration`` seconds while printing each node's rates and lag, then reads every destination back
and counts ids per route, shows the cascade as the province's live page sees it and the county's
exchange statistics, and stops everything it started, by process id (Ctrl-C ends early).

Run with the project's virtual environment: ``make demo`` (or ``.venv/bin/python deploy/local/demo.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import localkafka
from demo_traffic import ROUTES, Generator, Outcome, Sent, count
from department_client import Published, Publisher, Received, read_topic

from node.codec import SchemaSet, load_schemas, packaged_schema_dir
from node.compose import to_json
from node.signing import write_new_key

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CLUSTERS = {"province": 19092, "city": 20092, "county": 21092}
"""Broker ports (controllers on the next), as ``localkafka.py up`` gives them: below the ephemeral
range, so no client socket of an earlier run, lingering in TIME-WAIT, holds one."""
NODES = {  # config file → (admin port, cluster, topic prefix, region)
    "province": (9410, "province", "cascade", "410000"),
    "city": (9411, "city", "cascade", "410100"),
    "county": (9412, "county", "cascade", "410102"),
    "county-b": (9413, "county", "cascade-410103", "410103"),
    "jiyuan": (9414, "county", "cascade-419001", "419001"),
}
WAIT_S = 60.0


def topic(node: str, name: str) -> tuple[str, str]:
    """The bootstrap address and full topic name of ``name`` on ``node``'s cluster."""
    _, cluster, prefix, _ = NODES[node]
    return f"127.0.0.1:{CLUSTERS[cluster]}", f"{prefix}.{name}"


def signed_configs(work: Path) -> dict[str, Path]:
    """Give every demo node a new signing key; return its config with ``[provenance]`` added.

    The committed configs stay key-free (keys are made per run, never committed); the copies in
    the work folder name the key, so every record is signed where it enters and checked above.
    """
    keys, configs = work / "keys", work / "configs"
    shutil.rmtree(keys, ignore_errors=True)
    keys.mkdir(parents=True)
    configs.mkdir(parents=True, exist_ok=True)
    made = {}
    for name in NODES:
        key = write_new_key(keys / f"{name}.pem", "ed25519")
        text = (HERE / "demo" / f"{name}.toml").read_text()
        made[name] = configs / f"{name}.toml"
        made[name].write_text(
            f"{text}\n[provenance]                 # key {key.key_id}, made for this run\n"
            f'key_file = "{keys / f"{name}.pem"}"\n'
        )
    return made


@contextmanager
def running_nodes(logs: Path, configs: dict[str, Path]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start every demo node as ``exchange-node run``; SIGTERM them (by pid) on the way out."""
    exe = Path(sys.executable).with_name("exchange-node")
    processes = []
    try:
        for name in NODES:
            log = (logs / f"node-{name}.log").open("wb")
            config = configs[name]
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


async def traffic(schemas: SchemaSet, duration_s: float, rate: float) -> Sent:
    """Publish generated records at ``rate`` per second until ``duration_s`` or Ctrl-C.

    Prints each node's rates, refusals and lag every two seconds, read from its /cascade.json.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    generator, sent = Generator(schemas), Sent()
    try:
        async with contextlib.AsyncExitStack() as stack:
            publishers = {
                node: await stack.enter_async_context(Publisher(topic(node, "inbox")[0]))
                for node in NODES
            }
            session = await stack.enter_async_context(aiohttp.ClientSession())
            gateway = Gateway(session, schemas)
            await _generate(generator, sent, publishers, gateway, stop, duration_s, rate)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    return sent


class Gateway:
    """Posts records as JSON to the county's HTTP gateway, as a department without Kafka would."""

    URL = f"http://127.0.0.1:{NODES['county'][0]}/gateway/v1/resources/{{code}}/records"
    TOKEN = "demo-county-psb-token"  # noqa: S105 - a demo token; its SHA-256 is in county.toml

    def __init__(self, session: aiohttp.ClientSession, schemas: SchemaSet) -> None:
        self._session = session
        self._schemas = schemas

    async def post(self, records: list[Published]) -> None:
        """Post ``records`` (one resource and target) in one request; raise if not all taken."""
        if not records:
            return
        first = records[0].envelope
        body = {
            "target": str(first.target),
            "records": [
                {"id": r.envelope.record_id, "value": to_json(self._schemas.decode(r.value)[1])}
                for r in records
            ],
        }
        url = self.URL.format(code=first.resource)
        headers = {"Authorization": f"Bearer {self.TOKEN}"}
        async with self._session.post(url, json=body, headers=headers) as response:
            if response.status != 201:
                raise SystemExit(f"gateway answered {response.status}: {await response.text()}")


async def _generate(
    generator: Generator,
    sent: Sent,
    publishers: dict[str, Publisher],
    gateway: Gateway,
    stop: asyncio.Event,
    duration_s: float,
    rate: float,
) -> None:
    """Publish a tick's records every half second; print progress every two seconds."""
    print(f"\npublishing about {rate:g} records/s"
          + (f" for {duration_s:g} s" if duration_s else " until Ctrl-C") + ":")  # fmt: skip
    began = shown = next_tick = time.monotonic()
    while not stop.is_set() and (not duration_s or time.monotonic() - began < duration_s):
        batch: dict[str, list[Published]] = {}
        forged: dict[tuple[str, str], list[Published]] = {}
        posted: list[Published] = []
        for _ in range(max(1, int(rate / 2))):
            route, published = generator.make()
            if route.gateway:
                posted.append(published)
            elif route.writer:
                forged.setdefault((route.at_node, route.writer), []).append(published)
            else:
                batch.setdefault(route.at_node, []).append(published)
            sent.add(route, published.envelope.record_id)
        for node, records in batch.items():
            await publishers[node].send_to_outboxes(NODES[node][2], records)
        for (node, writer), records in forged.items():
            await publishers[node].send(f"{NODES[node][2]}.outbox.{writer}", records)
        await gateway.post(posted)
        if time.monotonic() - shown >= 2:
            shown = time.monotonic()
            await progress(time.monotonic() - began, sent.total())
        next_tick += 0.5
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_tick - time.monotonic()))


async def progress(elapsed: float, published: int) -> None:
    """Print one line per node: records in/out per second, refusals and lag per link."""
    print(f"  [{elapsed:5.1f} s] {published} published")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for name, (port, *_) in NODES.items():
            try:
                async with session.get(f"http://127.0.0.1:{port}/cascade.json") as response:
                    document = await response.json()
            except (aiohttp.ClientError, TimeoutError) as error:
                print(f"    {name:9} cannot read /cascade.json: {error!r}")
                continue
            links = "  ".join(
                f"{link} {'up' if v['up'] else 'DOWN'} in {v['records_in_per_s']:6.1f}/s "
                f"out {v['copies_out_per_s']:6.1f}/s refused {v['refused_per_s']:4.1f}/s "
                f"lag {v['lag'] if v['lag'] is not None else '?'}"
                for link, v in document["links"].items()
            )
            print(f"    {name:9} {links}")


async def read_back(sent: Sent) -> list[Outcome]:
    """Read every inbox and refusal topic until each route's records are there (or 60 s)."""
    wanted: dict[str, set[str]] = {}
    for route, ids in sent.ids.items():
        for place in [f"{n}.inbox" for n in route.expect] or [f"{route.at_node}.refused"]:
            wanted.setdefault(place, set()).update(ids)
    found: dict[str, list[Received]] = {}
    for place, expected in sorted(wanted.items()):
        node, name = place.split(".")
        found[place] = await read_topic(
            *topic(node, name),
            until=lambda rs, e=expected: e <= {r.record_id for r in rs},  # type: ignore[misc]
            timeout_s=WAIT_S,
        )
    inboxes = [r for place, records in found.items() if place.endswith(".inbox") for r in records]
    signed = sum("cx-prov" in r.headers for r in inboxes)
    print(f"{signed} of {len(inboxes)} records read from the inboxes carry the signature of the "
          "node where they entered (cx-prov), checked at every node they reached after it")  # fmt: skip
    return [count(route, ids, found) for route, ids in sent.ids.items()]


def report(outcomes: list[Outcome]) -> bool:
    """Print what went where per route; return whether every record arrived as it should."""
    ok = True
    print(f"\n{'route':38} {'where':28} {'sent':>6} {'arrived':>8} {'missing':>8} {'dup':>5}")
    print("-" * 100)
    for outcome in sorted(outcomes, key=lambda o: ROUTES.index(o.route)):
        route = outcome.route
        where = ", ".join(route.expect) if route.expect else f"{route.at_node}.refused"
        ok &= outcome.missing == 0
        print(f"{route.title:38} {where:28} {outcome.sent:6} {outcome.delivered:8} "
              f"{outcome.missing:8} {outcome.duplicated:5}")  # fmt: skip
        if outcome.reasons:
            ok &= set(outcome.reasons) == {route.refusal.replace("undecodable", "bad_payload")}
            print(f"{'':38} reasons: {dict(outcome.reasons)}")
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
        if len(nested) == 2 or time.monotonic() > deadline:  # the city's two counties
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
        "--duration", type=float, default=20.0,
        help="seconds of generated traffic (0: until Ctrl-C); Ctrl-C ends it early either way",
    )  # fmt: skip
    parser.add_argument("--rate", type=float, default=100.0, help="records published per second")
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
        with running_nodes(logs, signed_configs(work)) as processes:
            wait_healthy(processes, logs)
            print(f"{len(NODES)} nodes healthy; logs in {logs}; live pages:")
            for name, (port, *_) in NODES.items():
                print(f"  {name:9} http://127.0.0.1:{port}/cascade")
            schemas = load_schemas(packaged_schema_dir())
            sent = asyncio.run(traffic(schemas, args.duration, args.rate))
            print(f"\n{sent.total()} records published; reading every destination back")
            ok = report(asyncio.run(read_back(sent)))
            counters()
            cascade_tree()
        statistics()  # the nodes wrote their last statistics as they stopped
    finally:
        localkafka.stop_clusters(clusters)
    print("\nall records went where they should" if ok else "\nSOME RECORDS DID NOT ARRIVE")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
