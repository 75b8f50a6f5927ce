"""The price of the audit trail, per record, on one core.

- Building and chaining entries alone: ``audit_facts`` over delivered batches' messages (one
  fact per copy: headers read, payload digested), then ``chain`` (the SHA-256 of each entry's
  canonical encoding) and the stored line's encoding. The records are the end-to-end bench's,
  as varied as a county's (``--size`` bytes, 1 KB), in batches of 2,000 with a time each.
- A real link over the in-memory transport (``tests/memory_transport.py``), the city 410100
  sending its records up, without the trail and with it (the facts, the queue and the writer
  loop chaining and writing them to the memory cluster), fail-open and fail-closed (each
  batch committed once its entries are written): process CPU per record. Rounds are
  interleaved; median with min and max.
- With ``--before``: the same, side by side, with the facts and the entries' encoding as they
  were first written (a dict per entry encoded by ``json``), to measure what changed.
- Unless ``--no-kafka`` (or ``--quick``): the writer alone against a real broker (one local KRaft
  cluster), chaining and writing the same varied entries one per Kafka record against 200 per
  record: process CPU per entry (the producer runs in this process), which is what ``[audit]
  entries_per_record`` trades.

Prints a table and writes ``results/audit.json``. About two minutes (under one with ``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import narrowed, table, write

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' memory transport

import structlog
from prometheus_client import CollectorRegistry
from sample_records import PERSON, sample
from workload import Workload

import node.core.audit
import node.kafka.accounting
from node.catalog_files import load_catalog, packaged_catalog_dir
from node.codec import load_schemas, packaged_schema_dir
from node.config import FlowConfig
from node.core.audit import Body, Entry, Fact, Outcome, chain, payload_digest
from node.core.decision import Facts
from node.core.envelope import RECORD_ID, REFUSAL_MESSAGE, RESOURCE, SOURCE_DEPT, SOURCE_REGION
from node.core.outcome import Direction
from node.core.peers import PeerWatch
from node.core.policy import Policy, PolicySnapshot
from node.core.routing import Arrival, Router
from node.core.topology import Topology
from node.kafka.accounting import Watch
from node.kafka.audit import DETAIL_CHARS, AuditQueue, AuditWriter, audit_facts
from node.kafka.bridge import Destinations, Link
from node.kafka.messages import NO_FACTS, REFUSED_COPY, Out
from node.kafka.topics import TopicNames, level_writers
from node.ops.metrics import Metrics
from node.supervisor import Health
from node.transport import Message
from tests.memory_transport import MemoryCluster, MemorySink, MemorySource

CITY, PROVINCE = "410100", "410000"
TOPICS = TopicNames("bench")
OUTBOX, AUDIT = TOPICS.outbox("PSB"), TOPICS.audit("city")
GROUP = "bench.local"
SCHEMAS = load_schemas(packaged_schema_dir())
CATALOG = load_catalog(packaged_catalog_dir(), SCHEMAS)
CREATED_MS = 1_780_000_000_000
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
LOG = structlog.get_logger("bench")


def samples(count: int) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """``count`` distinct valid city records for the province: (key, value, headers)."""
    made = []
    for seed in range(count):
        record = sample(SCHEMAS, PERSON, CITY, f"region:{PROVINCE}", seed=seed,
                        created_ms=CREATED_MS)  # fmt: skip
        made.append((f"k{seed % 50}".encode(), record.value, record.envelope.to_headers()))
    return made


def best_per_item(step: Callable[[], object], items: int, seconds: float) -> float:
    """Best CPU µs per item of ``step`` over repeated runs for ``seconds``."""
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.process_time()
        step()
        best = min(best, time.process_time() - started)
    return best / items * 1e6


def make_entry_before(seq: int, prev: str, body: Body) -> Entry:
    """Chain an entry as first written: its fields as a dict, encoded by ``json``, hashed."""
    core = node.core.audit
    canonical = core._IN_ORDER.encode(core._ordered(seq, prev, body)).encode()
    return Entry(seq, prev, body, core._digest(canonical), canonical)


def audit_facts_before(pending: list[Out], time_ms: int) -> list[Fact]:
    """The facts of a batch as first made (names decoded through a cache, keyword tuples)."""
    facts: list[Fact] = []
    digests: dict[int, str] = {}
    text: dict[bytes | None, str] = {}
    for out in pending:
        kind = out.kind
        if out.facts is NO_FACTS and kind.__class__ is Direction:
            continue
        headers = dict(out.message.headers)
        value = out.message.value
        digest = digests.get(id(value))
        if digest is None:
            digest = digests[id(value)] = payload_digest(value)
        names: list[str] = []
        for name in (RECORD_ID, RESOURCE, SOURCE_REGION, SOURCE_DEPT):
            raw = headers.get(name)
            said = text.get(raw)
            if said is None:
                said = text[raw] = (raw or b"").decode(errors="replace")
            names.append(said)
        if kind.__class__ is Direction:
            outcome = Outcome.DELIVERED if kind is Direction.LOCAL else Outcome.FORWARDED
            destination, reason, detail = f"{kind.value}:{out.destination}", "", ""
        else:
            outcome = Outcome.REFUSED
            destination = headers.get(REFUSED_COPY, b"").decode(errors="replace")
            reason = kind.value
            detail = headers.get(REFUSAL_MESSAGE, b"").decode(errors="replace")[:DETAIL_CHARS]
        facts.append(Fact._make((*names, destination, time_ms, outcome, reason, detail, digest)))
    return facts


@contextlib.contextmanager
def before() -> Iterator[None]:
    """Run the trail with the facts and encoding as first written (``--before``)."""
    core, accounting = vars(node.core.audit), vars(node.kafka.accounting)
    made, facts = core["make_entry"], accounting["audit_facts"]
    core["make_entry"] = make_entry_before  # what ``chain`` calls
    accounting["audit_facts"] = audit_facts_before  # what ``Accountant.summarize`` calls
    try:
        yield
    finally:
        core["make_entry"], accounting["audit_facts"] = made, facts


def decided_facts(headers: list[tuple[str, bytes]]) -> Facts:
    """A copy's facts as the decision reads them from its record's headers."""
    get = dict(headers).get
    return Facts(CREATED_MS, get(RESOURCE), get(SOURCE_DEPT), b"", None, get(RECORD_ID),
                 get(SOURCE_REGION))  # fmt: skip


BATCH = 2000
"""Records per delivered batch in ``core_costs``: the node's ``max_batch``."""
BATCH_EVERY_MS = 50
"""How far apart the batches' times are (each batch's entries share its commit time)."""


def delivered_batches(count: int, size: int) -> list[tuple[int, list[Out]]]:
    """``count`` varied records sent up by the city, in batches of ``BATCH``, each with its time.

    The records are the end-to-end bench's (``workload.Workload``: 2,000 resources, a skewed
    mix, distinct ids), so every batch has its own few hundred kinds of copy, as on a real link.
    """
    batches = []
    rows = Workload(size, fresh=False).rows(count)
    for start in range(0, count, BATCH):
        batch = [
            Out(Message(TOPICS.up(CITY), key, value, headers), None, Direction.UP,  # type: ignore[arg-type]
                decided_facts(headers), PROVINCE)
            for key, value, headers in itertools.islice(rows, BATCH)
        ]  # fmt: skip
        batches.append((CREATED_MS + start // BATCH * BATCH_EVERY_MS, batch))
    return batches


def core_costs(count: int, size: int, *, compare: bool) -> dict[str, float]:
    """µs per entry: facts from delivered batches' messages, chaining (hashing), encoding.

    Over ``delivered_batches``. Chaining starts each run with no pieces kept (``_PIECES``),
    since a real batch's time is new.
    """
    batches = delivered_batches(count, size)
    facts = [audit_facts(pending, time_ms) for time_ms, pending in batches]
    entries = [chain(batch_facts, None) for batch_facts in facts]
    values = [out.message.value for _, pending in batches for out in pending]

    def made(make: Callable[[list[Out], int], list[Fact]]) -> Callable[[], object]:
        return lambda: [make(pending, time_ms) for time_ms, pending in batches]

    def chained() -> None:
        node.core.audit._PIECES.clear()
        for batch_facts in facts:
            chain(batch_facts, None)

    costs = {
        "facts_us": best_per_item(made(audit_facts), count, 2.0),
        "chain_us": best_per_item(chained, count, 2.0),
        "encode_us": best_per_item(lambda: [e.encode() for b in entries for e in b], count, 2.0),
        "digest_us": best_per_item(lambda: [payload_digest(v) for v in values], count, 1.0),
    }
    if compare:
        assert made(audit_facts_before)() == facts
        with before():
            assert [chain(f, None) for f in facts] == entries  # the same bytes, the same hashes
            costs["facts_before_us"] = best_per_item(made(audit_facts_before), count, 2.0)
            costs["chain_before_us"] = best_per_item(chained, count, 2.0)
    return costs


async def link_round(
    records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]],
    *,
    audited: bool,
    per_record: int,
    fail_closed: bool = False,
) -> float:
    """Process CPU µs per record of the city's link carrying ``records`` up (and auditing them)."""
    local, parent = MemoryCluster(), MemoryCluster()
    parent.watchers.append(local.notify)
    for key, value, headers in records:
        local.produce(OUTBOX, key, value, headers)
    topology = Topology(CITY, "city", PROVINCE, ())
    audit = AuditQueue(len(records) + 1, fail_closed=fail_closed, log=LOG)
    watch = Watch(
        PeerWatch(topology, 0, 5.0, bucket_s=60, keep=30, settle_s=120),
        on_audit=audit.add if audited else None, gate=audit if fail_closed else None,
    )  # fmt: skip
    link = Link(
        "local", MemorySource(local, OUTBOX, GROUP, 2000), Arrival.FROM_BELOW, Router(topology),
        Policy(PolicySnapshot(CATALOG)),
        Destinations(MemorySink(local), TOPICS, MemorySink(parent), TOPICS, CITY),
        Metrics(CollectorRegistry(), ["local"]), Health(), schemas=SCHEMAS,
        settings=FlowConfig(fetch_timeout_ms=5), peer=CITY, log=LOG, watch=watch,
        writers=level_writers(TOPICS, CITY, ["PSB"], ()),
    )  # fmt: skip
    writer = AuditWriter(
        audit, MemorySink(local), AUDIT, _no_tip, Health(), node_id="city",
        entries_per_record=per_record, flush_s=0.05, deadline_s=30,
    )  # fmt: skip
    started = time.process_time()
    running = asyncio.ensure_future(link.run())
    writing = asyncio.ensure_future(writer.run()) if audited else None
    await local.wait_until(lambda: local.committed_total(GROUP, OUTBOX) == len(records), 120)
    link.request_stop()
    await running
    if writing is not None:
        writer.request_stop()
        await writing
        assert local.count(AUDIT) == -(-len(records) // per_record) or per_record > 1
    spent = time.process_time() - started
    return spent / len(records) * 1e6


async def _no_tip() -> None:
    return None


async def kafka_rounds(entries: int, rounds: int, size: int) -> dict[str, dict[str, float]]:
    """Writer CPU µs per entry to a real broker, 1 and 200 entries per Kafka record.

    The entries are those of ``delivered_batches``; each run starts with no pieces kept.
    """
    from bench_e2e import bench_clusters  # noqa: PLC0415 - only when measuring the broker

    from node.kafka.sink import KafkaSink  # noqa: PLC0415
    from node.kafka.topics import TopicLimits, ensure_topics  # noqa: PLC0415

    with bench_clusters("bench-audit", ("county",)) as (_, [cluster]):
        bootstrap = cluster.bootstrap
        facts = [fact for time_ms, pending in delivered_batches(entries, size)
                 for fact in audit_facts(pending, time_ms)]  # fmt: skip
        figures: dict[str, list[float]] = {"1": [], "200": []}
        for round_ in range(rounds):
            for per_record in (1, 200):
                topic = f"bench.audit.r{round_}.p{per_record}"
                await ensure_topics(bootstrap, [topic], 1, 1)
                sink = KafkaSink(bootstrap, "bench-audit", TopicLimits(bootstrap))
                audit = AuditQueue(entries + 1, fail_closed=False, log=LOG)
                audit.add(facts)
                writer = AuditWriter(
                    audit, sink, topic, _no_tip, Health(), node_id="bench",
                    entries_per_record=per_record, flush_s=0.05, deadline_s=60,
                )  # fmt: skip
                writer.request_stop()
                node.core.audit._PIECES.clear()
                started = time.process_time()
                await writer.run()
                figures[str(per_record)].append((time.process_time() - started) / entries * 1e6)
                await sink.stop()
        return {k: _spread(v) for k, v in figures.items()}


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement; print the tables; return the results."""
    records = samples(args.records)
    core = core_costs(args.records, args.size, compare=args.before)
    print(table(["what", "µs per entry"], [[k, v] for k, v in core.items()]))
    figures: dict[str, list[float]] = {"without": [], "with": [], "with, fail-closed": []}
    if args.before:
        figures["with, before"] = []
    for _ in range(args.rounds):  # interleaved
        figures["without"].append(await link_round(records, audited=False, per_record=200))
        if args.before:
            with before():
                figures["with, before"].append(
                    await link_round(records, audited=True, per_record=200)
                )
        figures["with"].append(await link_round(records, audited=True, per_record=200))
        figures["with, fail-closed"].append(
            await link_round(records, audited=True, per_record=200, fail_closed=True)
        )
    link = {k: _spread(v) for k, v in figures.items()}
    added = link["with"]["median"] - link["without"]["median"]
    print()
    print(table(
        ["link over memory", "median µs/rec", "min", "max"],
        [[k, v["median"], v["min"], v["max"]] for k, v in link.items()],
    ))  # fmt: skip
    print(f"audit trail adds {added:.1f} µs per record "
          f"({added / link['without']['median']:.0%} of the link without it)")  # fmt: skip
    if args.before:
        was = link["with, before"]["median"] - link["without"]["median"]
        print(f"(it added {was:.1f} µs per record before)")
    results: dict[str, Any] = {
        "records": args.records, "rounds": args.rounds, "core_us_per_entry": core,
        "link_cpu_us_per_record": link, "audit_adds_us_per_record": round(added, 2),
    }  # fmt: skip
    if args.before:
        results["audit_added_before_us_per_record"] = round(was, 2)
    if args.kafka:
        kafka = await kafka_rounds(args.kafka_entries, args.rounds, args.size)
        print()
        print(table(
            ["writer to Kafka, entries/record", "median µs/entry", "min", "max"],
            [[k, v["median"], v["min"], v["max"]] for k, v in kafka.items()],
        ))  # fmt: skip
        results["kafka_writer_cpu_us_per_entry"] = kafka
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--size", type=int, default=1024, help="payload bytes of the entries' records (1 KB)"
    )
    parser.add_argument(
        "--no-kafka", dest="kafka", action="store_false",
        help="skip the writer against a real broker (measured by default)",
    )  # fmt: skip
    parser.add_argument("--kafka-entries", type=int, default=20_000)
    parser.add_argument(
        "--before", action="store_true", help="also run the trail as first written, side by side"
    )
    parser.add_argument("--quick", action="store_true", help="4,000 records, no broker")
    arguments = parser.parse_args()
    partial = narrowed(parser, arguments)
    if arguments.quick:
        arguments.records, arguments.kafka = 4_000, False
    marks = {"quick": arguments.quick, "partial": partial}
    print(f"wrote {write('audit', asyncio.run(main(arguments)) | marks)}")
