"""Worker processes on real brokers: partitions shared out, one audit chain, a killed worker.

A county node 410102 runs with ``flow.workers = 2`` over outboxes of 4 partitions: the lead
and one worker process join the link's consumer group and each owns some partitions. Records
published for the city arrive there once each, in order per key; the lead counts and audits
every one of them, those its worker carried too. A worker killed with SIGKILL in mid-stream
makes ``worker-1`` down with its exit code; the lead starts it again and nothing is lost or
reordered (a batch the dead worker had not committed comes again: at least once).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from typing import Any

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from department_client import Published, Received, publish_to_outboxes, read_topic
from sample_records import PERSON, sample

from node.codec import load_schemas, packaged_schema_dir
from node.core.audit import Fact, parse_entry, verify
from node.kafka.audit import read_chain
from node.kafka.topics import TopicNames
from tests.integration.conftest import RunningNode, node_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SCHEMAS = load_schemas(packaged_schema_dir())
WAIT_S = 90.0
CITY, COUNTY = "410100", "410102"
PARTITIONS = 4
KEYS = 8


def records(count: int, first_seed: int = 0) -> list[Published]:
    """``count`` county person records for the city, on ``KEYS`` keys, spread over partitions."""
    made = []
    for seed in range(first_seed, first_seed + count):
        record = sample(SCHEMAS, PERSON, COUNTY, f"region:{CITY}", seed=seed, created_ms=0)
        key = f"person-{seed % KEYS}".encode()
        made.append(Published(record.envelope, record.value, key, seed % PARTITIONS))
    return made


def county(clusters: dict[str, str], prefix: str) -> Any:
    """The county's config: two workers, 4 partitions, an audit trail flushed every 0.1 s."""
    return node_config(
        COUNTY, "county", clusters["county"], prefix, parent=(clusters["city"], CITY, prefix),
        topics={"partitions": PARTITIONS},
        flow={"workers": 2, "max_batch": 50, "max_backoff_s": 2.0, "delivery_timeout_s": 10},
        audit={"flush_s": 0.1},
    )  # fmt: skip


async def group_assignments(bootstrap: str, group: str) -> tuple[str, list[set[int]]]:
    """Return a consumer group's state and each member's assigned partition numbers."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    [described] = response.groups
    state, members = described[2], described[5]
    owned = []
    for member in members:
        assignment = ConsumerProtocolMemberAssignment.decode(member[4]).assignment
        owned.append({p for _, partitions in assignment for p in partitions})
    return state, owned


async def shared_out(bootstrap: str, group: str) -> list[set[int]]:
    """Wait until the group is stable with two members owning partitions; return what each owns."""
    deadline = time.monotonic() + WAIT_S
    owned: list[set[int]] = []
    while time.monotonic() < deadline:
        state, owned = await group_assignments(bootstrap, group)
        if state == "Stable" and len(owned) == 2 and all(owned):
            return owned
        await asyncio.sleep(0.5)
    return owned


def per_key_in_order(got: list[Received], sent: list[Published]) -> bool:
    """Tell whether each key's records arrived in the order they were sent (first arrivals)."""
    rank = {r.envelope.record_id: index for index, r in enumerate(sent)}
    last: dict[bytes | None, int] = {}
    seen: set[str] = set()
    for record in got:
        if record.record_id in seen:
            continue  # a redelivery after a crash: its first arrival already counted
        seen.add(record.record_id)
        if rank[record.record_id] < last.get(record.key, -1):
            return False
        last[record.key] = rank[record.record_id]
    return True


async def health(port: int) -> dict[str, Any]:
    """The node's /healthz document."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        document: dict[str, Any] = await response.json()
        return document


async def loop_state(port: int, loop: str, *, up: bool) -> dict[str, Any]:
    """Poll /healthz until ``loop`` is up (or down); return its state as last seen."""
    deadline = time.monotonic() + WAIT_S
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = (await health(port))["loops"].get(loop, {})
        if state.get("up") is up:
            return state
        await asyncio.sleep(0.1)
    return state


async def test_two_processes_share_the_partitions_and_the_lead_audits_every_record(
    clusters: dict[str, str], prefix: str, nodes: Any
) -> None:
    """Each record arrives once and in key order; the lead counts and audits all of them."""
    node: RunningNode = await nodes(county(clusters, prefix))
    owned = await shared_out(clusters["county"], f"exchange-node.{node.config.node_id}.local")
    assert len(owned) == 2, owned
    assert all(owned), owned
    assert not owned[0] & owned[1], owned
    assert owned[0] | owned[1] == set(range(PARTITIONS))

    sent = records(400)
    await publish_to_outboxes(clusters["county"], prefix, sent)
    names = TopicNames(prefix)
    got = await read_topic(
        clusters["city"], names.up(COUNTY), until=lambda r: len(r) >= len(sent), timeout_s=WAIT_S
    )
    assert sorted(r.record_id for r in got) == sorted(r.envelope.record_id for r in sent)
    assert per_key_in_order(got, sent)
    assert await node.settled("exchange_records_in_total", len(sent), link="local") == len(sent)
    up = await node.settled("exchange_records_out_total", len(sent), link="local", direction="up")
    assert up == len(sent)

    topic = names.audit(node.config.node_id)
    lines: list[Any] = []
    for _ in range(int(WAIT_S / 0.5)):
        lines = await read_chain(clusters["county"], topic, deadline_s=20)
        if len(lines) >= len(sent):
            break
        await asyncio.sleep(0.5)
    assert verify(lines).describe() == f"chain of {len(sent)} entries intact"
    bodies = [parse_entry(line.line).body for line in lines]
    audited = sorted(b.record_id for b in bodies if isinstance(b, Fact))
    assert audited == sorted(r.envelope.record_id for r in sent)


async def test_a_killed_worker_is_started_again_and_nothing_is_lost_or_reordered(
    clusters: dict[str, str], prefix: str, nodes: Any
) -> None:
    """SIGKILL to the worker mid-stream: down with its exit code, back up, every id arrives."""
    node: RunningNode = await nodes(county(clusters, prefix))
    await shared_out(clusters["county"], f"exchange-node.{node.config.node_id}.local")
    [worker] = multiprocessing.active_children()
    assert worker.pid is not None

    sent = records(1500)
    names = TopicNames(prefix)
    publishing = asyncio.ensure_future(publish_to_outboxes(clusters["county"], prefix, sent[:750]))
    await read_topic(
        clusters["city"], names.up(COUNTY), until=lambda r: len(r) >= 100, timeout_s=WAIT_S
    )
    os.kill(worker.pid, signal.SIGKILL)
    await publishing
    down = await loop_state(node.admin_port, "worker-1", up=False)
    assert f"exited with {-signal.SIGKILL}" in down.get("reason", ""), down
    await publish_to_outboxes(clusters["county"], prefix, sent[750:])
    assert (await loop_state(node.admin_port, "worker-1", up=True)).get("up") is True
    [again] = multiprocessing.active_children()
    assert again.pid != worker.pid

    got = await read_topic(
        clusters["city"], names.up(COUNTY),
        until=lambda r: {x.record_id for x in r} >= {p.envelope.record_id for p in sent},
        timeout_s=WAIT_S,
    )  # fmt: skip
    assert {r.record_id for r in got} == {p.envelope.record_id for p in sent}
    assert per_key_in_order(got, sent)
    await node.stop()
    assert not multiprocessing.active_children()
