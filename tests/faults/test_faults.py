"""Fault scenarios on a county → city cascade of real brokers and real node processes.

Each scenario streams records of known ids into the county departments' outboxes, breaks something (kills the
node, stops a cluster, sends poison, stops the node while its parent is down) and counts what
reached the city inbox. Short outages run in the normal test command; ``make faults`` sets
FAULTS_FULL=1 for the full durations. The figures are tabled at the end of the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from department_client import Received
from sample_records import LEGAL_ENTITY, PERSON, person, sample

from node.codec import MAGIC
from node.config import FlowConfig
from node.core.envelope import (
    CREATED_MS,
    ENVELOPE_HEADERS,
    GRADE,
    HOPS,
    RECORD_ID,
    REFUSAL_MESSAGE,
    REFUSAL_REASON,
    REFUSED_BY,
    SOURCE_DEPT,
    TARGET,
)  # fmt: skip
from tests.faults.harness import (
    CITY,
    COUNTY,
    KEYS,
    POISON_HEADER,
    SCHEMAS,
    SHUTDOWN_TIMEOUT_S,
    Cascade,
    FaultTable,
    Monitor,
    NodeProcess,
    Outgoing,
    Stream,
    Tally,
    durations,
    flow_settings,
    good_record,
    identity,
    names_parent_down,
    row,
    seeded_random,
)

TIMING = durations()
pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(TIMING.test_timeout_s),
    # The harness's own aiokafka clients (not the node's: it runs in its own process) may leave a
    # socket for the garbage collector when their broker is restarted under them.
    pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning"),
]

RSS_LIMIT_MB = 200
SHUTDOWN_SLACK_S = 3.0
GOOD_BETWEEN_POISONS = 20
CITY_OUTBOX_MAX_MESSAGE_BYTES = 200_000

Header = tuple[str, bytes]


async def started(*nodes: NodeProcess) -> None:
    """Start the nodes and wait until each is ready; fail with its log tail if one is not."""
    for node in nodes:
        node.start()
    for node in nodes:
        if not await node.wait_ready():
            pytest.fail(f"node {node.name} not ready (exits {node.exit_codes}):\n{node.log_tail()}")


async def assert_counted_clean(cascade: Cascade, counted: Tally, *nodes: NodeProcess) -> None:
    """Nothing lost or refused, first arrivals in order per key, the nodes still run.

    And the county node committed every outbox record it delivered (none would come again).
    """
    exits = {node.name: node.exit_codes for node in nodes if node.exit_codes or not node.alive()}
    assert not exits, f"nodes exited (exit codes by node): {exits}"
    assert counted.lost == 0, f"{counted.lost} of {counted.sent} lost, e.g. {counted.lost_ids}"
    assert counted.refused == 0, f"{counted.refused} good records refused"
    assert counted.out_of_order == 0, f"out of order: {counted.out_of_order_ids}"
    assert not counted.split_keys, f"keys spread over several partitions: {counted.split_keys}"
    behind = await cascade.uncommitted()
    assert behind == 0, f"{behind} delivered records of the county outboxes not committed"


def assert_redelivery_bounded(counted: Tally, kills: int, processes: int = 1) -> None:
    """Each kill -9 delivered again at most what was under way: at-least-once, not from the start.

    Per process that may lose its partitions to the kill (the killed one; with several workers
    or instances, the others too, by the rebalance): ``max_in_flight`` batches delivered but not
    committed, and one more whose commit was on its way. A node that did not commit would
    deliver everything since its start again.
    """
    window = (FlowConfig().max_in_flight + 1) * flow_settings()["max_batch"]
    bound = kills * processes * window
    assert counted.duplicated <= bound, (
        f"{counted.duplicated} duplicates after {kills} kills, more than the {bound} under way "
        f"at most (e.g. {counted.duplicated_ids[:5]})"
    )


async def kill_at_random_moment(node: NodeProcess, rng: random.Random) -> dict[str, Any]:
    """SIGKILL the node during start-up (one time in four) or while it delivers; say when."""
    began = time.monotonic()
    if rng.random() < 0.25:
        moment = "start-up"
        await asyncio.sleep(rng.uniform(0.3, 2.0))
    else:
        delivering = await node.wait_delivering(30)
        moment = "delivering" if delivering else "no batch within 30 s"
        await asyncio.sleep(rng.uniform(0.0, 2.0))
    was_alive = node.alive()
    node.kill()
    return {"moment": moment, "after_s": round(time.monotonic() - began, 1), "alive": was_alive}


async def test_county_node_killed_again_and_again_loses_nothing(
    cascade: Cascade, fault_table: FaultTable
) -> None:
    """Kill -9 of the county node at random moments of one stream, restarted each time, loses no record."""
    rng, seed = seeded_random()
    await cascade.create_topics()
    city, county = cascade.city_node(), cascade.county_node()
    await started(city, county)
    moments = []
    async with Monitor([city, county]), cascade.stream(TIMING.rate_per_s) as stream:
        await asyncio.sleep(TIMING.lead_s)
        for _ in range(TIMING.kills):
            moments.append(await kill_at_random_moment(county, rng))
            county.start()
        await asyncio.sleep(TIMING.tail_s)
    counted = await cascade.count(stream.acked, delivering=county.alive, timing=TIMING)
    ready = await county.wait_ready()
    kills = [code for code in county.exit_codes if code == -9]
    fault_table.add(
        row(f"1 kill -9 county x{len(kills)}", cascade, counted, seed=seed, moments=moments)
    )

    assert ready, f"county node not ready after its last restart:\n{county.log_tail()}"
    assert county.exit_codes == [-9] * TIMING.kills, (
        f"county exits {county.exit_codes}, moments {moments}"
    )
    county.exit_codes.clear()  # the kills were ours
    await assert_counted_clean(cascade, counted, city, county)
    assert_redelivery_bounded(counted, len(kills))


async def a_new_worker(node: NodeProcess, killed: Sequence[int]) -> int | None:
    """Wait until ``node`` is ready with a worker not killed yet; its pid (None: not in time)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        fresh = [pid for pid in node.workers() if pid not in killed]
        if fresh and await node.wait_ready(timeout_s=max(0.1, deadline - time.monotonic())):
            return fresh[0]
        await asyncio.sleep(0.2)
    return None


async def test_county_worker_killed_again_and_again_loses_nothing(
    cascade: Cascade, fault_table: FaultTable
) -> None:
    """Kill -9 of the county node's worker process (two workers), again and again: the lead starts it again, no record is lost."""
    rng, seed = seeded_random()
    await cascade.create_topics()
    city, county = cascade.city_node(), cascade.county_node(workers=2)
    await started(city, county)
    killed: list[int] = []
    async with Monitor([city, county]), cascade.stream(TIMING.rate_per_s) as stream:
        await asyncio.sleep(TIMING.lead_s)
        for _ in range(TIMING.kills):
            worker = await a_new_worker(county, killed)
            if worker is None:
                break
            await asyncio.sleep(rng.uniform(0.0, 2.0))
            os.kill(worker, signal.SIGKILL)
            killed.append(worker)
        await asyncio.sleep(TIMING.tail_s)
    counted = await cascade.count(stream.acked, delivering=county.alive, timing=TIMING)
    ready = await county.wait_ready()
    fault_table.add(row(f"8 kill -9 county worker x{len(killed)}", cascade, counted, seed=seed))

    assert len(set(killed)) == TIMING.kills, f"killed {killed}:\n{county.log_tail()}"
    assert ready, f"county node not ready after its worker's last restart:\n{county.log_tail()}"
    await assert_counted_clean(cascade, counted, city, county)
    assert_redelivery_bounded(counted, len(killed), processes=2)


async def test_parent_cluster_outage_is_reported_and_recovered(
    cascade: Cascade, fault_table: FaultTable
) -> None:
    """With the city cluster stopped mid-stream the county node stays up and small, reports the parent link down, and delivers everything after."""
    await cascade.create_topics()
    city, county = cascade.city_node(), cascade.county_node()
    await started(city, county)
    async with Monitor([city, county]) as monitor, cascade.stream(TIMING.rate_per_s) as stream:
        await asyncio.sleep(TIMING.lead_s)
        await cascade.stop_cluster("city")
        outage = (monitor.now(), monitor.now() + TIMING.parent_outage_s)
        await asyncio.sleep(TIMING.parent_outage_s)
        await cascade.restart_cluster("city")
        await asyncio.sleep(TIMING.tail_s)
    counted = await cascade.count(stream.acked, delivering=county.alive, timing=TIMING)
    ready_again = await county.wait_ready()
    during = monitor.of("county", *outage)
    named = [s for s in during if s.status == 503 and names_parent_down(s.body)]
    statuses = Counter(s.status for s in during)
    example = named[0].body if named else during[-1].body if during else None
    details = {
        "readiness_during_outage": {str(k): v for k, v in statuses.items()},
        "first_503_naming_parent_at_s": round(named[0].at_s - outage[0], 1) if named else None,
        "readiness_body_during_outage": example,
        "county_readiness_changes": monitor.changes("county"),
        "stream_failures": stream.failures,
    }
    fault_table.add(
        row(f"2 city cluster down {TIMING.parent_outage_s:.0f} s", cascade, counted, **details)
    )

    assert county.alive(), f"county node exited: {county.exit_codes}"
    assert not county.exit_codes, f"county node exited and was restarted: {county.exit_codes}"
    assert named, (
        f"no 503 naming the parent link during the outage; statuses {dict(statuses)}, body {example}"
    )
    assert county.peak_rss_kb / 1024 < RSS_LIMIT_MB, (
        f"county peak RSS {county.peak_rss_kb / 1024:.0f} MB"
    )
    assert ready_again, f"county node not ready again after the outage:\n{county.log_tail()}"
    await assert_counted_clean(cascade, counted, city, county)


async def test_county_node_started_while_parent_cluster_is_down(
    cascade: Cascade, fault_table: FaultTable
) -> None:
    """A county node started while the city cluster is down stays up and delivers everything once the cluster appears."""
    await cascade.create_topics()
    await cascade.stop_cluster("city")
    county = cascade.county_node()
    county.start()
    async with Monitor([county]) as monitor:
        async with cascade.stream(TIMING.rate_per_s) as stream:
            await asyncio.sleep(TIMING.parent_late_s)
            alive_through_outage = county.alive()
            await cascade.restart_cluster("city")
            city = cascade.city_node()
            city.start()
            monitor.nodes.append(city)
            await asyncio.sleep(TIMING.tail_s)
        counted = await cascade.count(stream.acked, delivering=county.alive, timing=TIMING)
    city_ready = await city.wait_ready()
    county_ready = await county.wait_ready()
    fault_table.add(
        row(f"3 county node starts, city cluster {TIMING.parent_late_s:.0f} s late", cascade, counted,
            county_readiness_changes=monitor.changes("county"))
    )  # fmt: skip

    assert alive_through_outage, (
        f"county node exited {county.exit_codes} while its parent was down:\n{county.log_tail()}"
    )
    assert city_ready, f"city node not ready:\n{city.log_tail()}"
    assert county_ready, f"county node not ready once its parent appeared:\n{county.log_tail()}"
    await assert_counted_clean(cascade, counted, city, county)


async def test_local_cluster_restart_under_load_loses_nothing(
    cascade: Cascade, fault_table: FaultTable
) -> None:
    """Restarting the county cluster under load loses no record and the county node rides it out."""
    await cascade.create_topics()
    city, county = cascade.city_node(), cascade.county_node()
    await started(city, county)
    async with Monitor([city, county]), cascade.stream(TIMING.rate_per_s) as stream:
        await asyncio.sleep(TIMING.lead_s)
        await cascade.stop_cluster("county")
        await asyncio.sleep(TIMING.local_outage_s)
        await cascade.restart_cluster("county")
        await asyncio.sleep(TIMING.tail_s)
    counted = await cascade.count(stream.acked, delivering=county.alive, timing=TIMING)
    ready_again = await county.wait_ready()
    fault_table.add(
        row(f"4 county cluster restarted ({TIMING.local_outage_s:.0f} s down)", cascade, counted,
            stream_failures=stream.failures)
    )  # fmt: skip

    assert ready_again, f"county node not ready after its cluster came back:\n{county.log_tail()}"
    await assert_counted_clean(cascade, counted, city, county)


# --- poison ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Poison:
    """A record that must be refused, with the reason and the region of the node that refuses it."""

    name: str
    reason: str
    refused_at: str
    value: bytes | None
    headers: list[Header]


def _without(headers: list[Header], name: str) -> list[Header]:
    return [(n, v) for n, v in headers if n != name]


def _replaced(headers: list[Header], name: str, value: bytes) -> list[Header]:
    return [(n, value if n == name else v) for n, v in headers]


def poisons() -> list[Poison]:
    """Every kind of poison, each built from a valid county person record.

    Expectations, from node/core/envelope.py, ingress.py and routing.py: a freshly published
    record (empty hop path) has its envelope checked at the county (bad_envelope) and its value
    decoded (bad_payload); a header that disagrees with PSB's outbox, where every poison is
    published (another department, a hop path), is forged; a record the city's ``up.410102``
    rejects for size is undeliverable; a target
    outside the tree goes up to the root, the city, which cannot route it (unroutable). Missing
    cx-hops, two cx-target values and a value of another resource's schema are expected refused
    too, though the node lets them through today (envelope.avsc makes cx-hops required; a
    duplicate header is ambiguous; cx-resource names the schema the value must have).
    """
    base = sample(
        SCHEMAS, PERSON, COUNTY, f"region:{CITY}", seed=7, created_ms=int(time.time() * 1000)
    )
    value = base.value
    other_schema = sample(
        SCHEMAS, LEGAL_ENTITY, COUNTY, f"region:{CITY}", seed=3, created_ms=0
    ).value
    oversized = SCHEMAS.encode(
        PERSON, {**person(random.Random(1), COUNTY), "address": "x" * 300_000}
    )
    noise = b"\x00" + random.Random(5).randbytes(299)  # not C3 01 framed
    truncated = value[: 10 + (len(value) - 10) // 2]

    ids = itertools.count()

    def envelope() -> list[Header]:
        record_id = f"poison-{next(ids):02d}"
        return dataclasses.replace(base.envelope, record_id=record_id).to_headers()

    def bad_envelope(name: str, headers: list[Header]) -> Poison:
        return Poison(name, "bad_envelope", COUNTY, value, headers)

    def forged(name: str, headers: list[Header]) -> Poison:  # in PSB's outbox, not PSB's or fresh
        return Poison(name, "forged", COUNTY, value, headers)

    def bad_payload(name: str, payload: bytes | None) -> Poison:
        return Poison(name, "bad_payload", COUNTY, payload, envelope())

    def outside(name: str, target: bytes) -> Poison:
        return Poison(name, "unroutable", CITY, value, _replaced(envelope(), TARGET, target))

    return [
        *(bad_envelope(f"missing {h}", _without(envelope(), h)) for h in ENVELOPE_HEADERS),
        forged("non-ASCII cx-source-dept", _replaced(envelope(), SOURCE_DEPT, "公安局".encode())),
        bad_envelope("oversized cx-id (64 KiB)", _replaced(envelope(), RECORD_ID, b"x" * 65536)),
        bad_envelope("two cx-target values", [*envelope(), (TARGET, b"level:city")]),
        forged("malformed cx-hops", _replaced(envelope(), HOPS, b"410102^^,x")),
        bad_envelope("grade 0", _replaced(envelope(), GRADE, b"0")),
        bad_envelope("grade 5", _replaced(envelope(), GRADE, b"5")),
        bad_envelope("negative cx-created-ms", _replaced(envelope(), CREATED_MS, b"-1000")),
        bad_payload("empty value", b""),
        bad_payload("null value", None),
        bad_payload("random bytes", noise),
        bad_payload("unknown schema fingerprint", MAGIC + b"\xff" * 8 + value[10:]),
        bad_payload("truncated body", truncated),
        bad_payload("value of another resource's schema", other_schema),
        Poison("value over the city up topic's max.message.bytes", "undeliverable", COUNTY, oversized, envelope()),
        outside("target region:999999 outside the tree", b"region:999999"),
        outside("target subtree:420000 outside the tree", b"subtree:420000"),
    ]  # fmt: skip


def poison_plan(kinds: Sequence[Poison]) -> list[Outgoing]:
    """Good records with one poison after every twenty, each poison keyed like its neighbours."""
    plan: list[Outgoing] = []
    index = 0
    for poison in kinds:
        plan.extend(good_record(i) for i in range(index, index + GOOD_BETWEEN_POISONS))
        index += GOOD_BETWEEN_POISONS
        key = f"k{index % KEYS:02d}".encode()
        headers = [*poison.headers, (POISON_HEADER, poison.name.encode())]
        plan.append(Outgoing(poison.name, key, poison.value, headers))
    plan.extend(good_record(i) for i in range(index, index + GOOD_BETWEEN_POISONS))
    return plan


def chunks(records: list[Outgoing], size: int) -> Iterator[list[Outgoing]]:
    """``records`` in chunks of ``size``."""
    for start in range(0, len(records), size):
        yield records[start : start + size]


def fates(kinds: Sequence[Poison], counted: Tally) -> dict[str, list[str]]:
    """Where each poison ended: ``refused REASON at REGION``, ``delivered``, or nothing (lost)."""
    found: dict[str, list[str]] = {poison.name: [] for poison in kinds}
    for record in counted.refusals:
        if identity(record) in found:
            region = record.headers.get(REFUSED_BY, "?").split("/")[0]
            found[identity(record)].append(
                f"refused {record.headers.get(REFUSAL_REASON)} at {region}"
            )
    for record in counted.inbox:
        if identity(record) in found:
            found[identity(record)].append("delivered")
    return found


def refusal_messages(refusals: Sequence[Received]) -> dict[str, str]:
    """The refusal message of each poison, for the report."""
    return {
        identity(r): r.headers.get(REFUSAL_MESSAGE, "")[:160]
        for r in refusals if r.headers.get(POISON_HEADER)
    }  # fmt: skip


async def test_poison_is_refused_with_its_reason_and_never_blocks(
    cascade: Cascade, fault_table: FaultTable
) -> None:
    """Every kind of poison between good records is refused with its reason while good records flow in order and the nodes stay ready."""
    kinds = poisons()
    await cascade.create_topics({"max.message.bytes": str(CITY_OUTBOX_MAX_MESSAGE_BYTES)})
    city, county = cascade.city_node(), cascade.county_node()
    await started(city, county)
    county_bootstrap = cascade.clusters.bootstrap("county")
    plan = chunks(poison_plan(kinds), 50)
    async with Monitor([city, county]) as monitor:
        async with Stream(county_bootstrap, cascade.topics, plan, pace_s=0.05) as stream:
            await asyncio.wait_for(stream.finished.wait(), 60)
        counted = await cascade.count(
            stream.acked, delivering=lambda: county.alive() and city.alive(), timing=TIMING
        )
    ended = fates(kinds, counted)
    expected = {p.name: [f"refused {p.reason} at {p.refused_at}"] for p in kinds}
    wrong = {
        name: {"expected": expected[name][0], "got": got}
        for name, got in ended.items()
        if got != expected[name]
    }
    not_ready = [
        (s.node, round(s.at_s, 1), s.status, s.body) for s in monitor.samples if s.status != 200
    ]
    fault_table.add(
        row(f"5 poison ({len(kinds)} kinds)", cascade, counted, poison_fates=ended,
            wrong_fates=wrong, refusal_messages=refusal_messages(counted.refusals),
            not_ready_samples=not_ready[:20])
    )  # fmt: skip

    assert not wrong, f"{len(wrong)} of {len(kinds)} poisons ended wrongly: {wrong}"
    assert not not_ready, f"readiness not 200 while poison flowed: {not_ready[:10]}"
    assert counted.lost == 0, f"lost: {counted.lost_ids}"
    assert counted.out_of_order == 0, f"out of order: {counted.out_of_order_ids}"
    assert not counted.split_keys, f"keys spread over several partitions: {counted.split_keys}"
    assert counted.duplicated == 0, f"{counted.duplicated} duplicates without any fault"
    assert city.alive(), f"city node exited: {city.exit_codes}"
    assert county.alive(), f"county node exited: {county.exit_codes}"


# --- stopping ----------------------------------------------------------------------------------


async def test_sigterm_while_parent_is_down_stops_in_time_and_commits_nothing_undelivered(
    cascade: Cascade, fault_table: FaultTable
) -> None:
    """SIGTERM to the county node under load while the city cluster is down exits 0 within its shutdown timeout, and after restarts nothing is lost."""
    await cascade.create_topics()
    city, county = cascade.city_node(), cascade.county_node()
    await started(city, county)
    limit_s = SHUTDOWN_TIMEOUT_S + SHUTDOWN_SLACK_S
    async with Monitor([city, county]), cascade.stream(TIMING.rate_per_s) as stream:
        await asyncio.sleep(TIMING.lead_s)
        await cascade.stop_cluster("city")
        await asyncio.sleep(TIMING.pending_s)
        exited_before = list(county.exit_codes) if not county.alive() else None
        code, seconds = await county.terminate(patience_s=limit_s + 20)
        await asyncio.sleep(1.0)  # a little more load into the outboxes after the stop
    await cascade.restart_cluster("city")
    if not city.alive():
        cascade.notes.append(
            f"city node exited {city.exit_codes} while its cluster was down; restarted"
        )
        city.exit_codes.clear()
        city.start()
    county.exit_codes.clear()  # the SIGTERM was ours; its code is asserted below
    county.start()
    counted = await cascade.count(stream.acked, delivering=county.alive, timing=TIMING)
    ready = await county.wait_ready() and await city.wait_ready()
    fault_table.add(
        row("6 SIGTERM county while city cluster down", cascade, counted,
            exit_code=code, exit_s=round(seconds, 1), limit_s=limit_s,
            exited_before_sigterm=exited_before)
    )  # fmt: skip

    assert exited_before is None, f"county node exited {exited_before} before the SIGTERM"
    assert code == 0, f"exit code {code} after SIGTERM (None: killed after {seconds:.0f} s)"
    assert seconds <= limit_s, f"took {seconds:.1f} s to exit, limit {limit_s} s"
    assert ready, f"nodes not ready after restart:\n{county.log_tail()}"
    await assert_counted_clean(cascade, counted, city, county)


async def test_second_instance_takes_over_from_a_killed_one(
    cascade: Cascade, fault_table: FaultTable
) -> None:
    """Of two county instances in one consumer group, the survivor of a kill -9 takes over and nothing is lost."""
    rng, seed = seeded_random()
    await cascade.create_topics()
    city = cascade.city_node()
    instances = [cascade.county_node("county-a"), cascade.county_node("county-b")]
    await started(city, *instances)
    victim, survivor = rng.sample(instances, 2)
    async with Monitor([city, *instances]), cascade.stream(TIMING.rate_per_s) as stream:
        await asyncio.sleep(TIMING.lead_s)
        both = [await node.wait_delivering(30) for node in instances]
        await asyncio.sleep(rng.uniform(0.0, 2.0))
        victim.kill()
        await asyncio.sleep(TIMING.takeover_s)
    counted = await cascade.count(stream.acked, delivering=survivor.alive, timing=TIMING)
    fault_table.add(
        row("7 two county instances, kill -9 one", cascade, counted, seed=seed,
            killed=victim.name, both_delivering_before_kill=both)
    )  # fmt: skip

    await assert_counted_clean(cascade, counted, city, survivor)
    assert_redelivery_bounded(counted, 1, processes=len(instances))
