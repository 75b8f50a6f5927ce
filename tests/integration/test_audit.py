"""The audit trail on real brokers: every outcome chained, tampered copies named, fail-closed.

A county node 410102 (parent: the city cluster) carries records its departments publish: some
for the city (forwarded up), some for the county itself (delivered to its inbox), some with a
wrong identity-number check character (refused). Its chain on ``PREFIX.audit.NODE`` verifies
intact and holds exactly one entry per outcome, counted by record id. Copies of the chain with
one entry removed, one altered and two swapped are each named exactly by ``verify`` and by
``exchange-node audit verify``. A fail-closed node stops forwarding while its audit topic
refuses writes (a record delivered meanwhile is not committed: its link is down, holding) and
resumes, losing nothing and committing each record once, when the topic accepts them again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from department_client import Published, publish_to_outboxes, read_topic
from sample_records import PERSON, Flaw, sample
from structlog.testing import capture_logs

from node.cli import main
from node.codec import load_schemas, packaged_schema_dir
from node.config import NodeConfig, load_config
from node.core.audit import Fact, Located, ProblemKind, parse_entry, verify
from node.kafka.audit import read_chain
from node.kafka.sink import KafkaSink
from node.kafka.topics import TopicLimits, TopicNames, ensure_topics
from node.transport import Message
from tests.integration.conftest import RunningNode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SCHEMAS = load_schemas(packaged_schema_dir())
WAIT_S = 60.0
CITY, COUNTY = "410100", "410102"


def person(seed: int, target: str, *, flaw: Flaw | None = None) -> Published:
    """A county Person record for ``target``."""
    return sample(SCHEMAS, PERSON, COUNTY, f"region:{target}", seed=seed, created_ms=0,
                  flaw=flaw)  # fmt: skip


def ids(records: list[Published]) -> list[str]:
    """The records' ``cx-id`` values."""
    return [r.envelope.record_id for r in records]


def county_toml(path: Path, clusters: dict[str, str], prefix: str, audit: str = "") -> NodeConfig:
    """Write the county's config (audit flushed every 0.1 s, 4 entries a record); load it."""
    path.write_text(
        f'[node]\nid = "{prefix}-{COUNTY}"\nlevel = "county"\nregion = "{COUNTY}"\n\n'
        f'[local]\nbootstrap = "{clusters["county"]}"\ntopic_prefix = "{prefix}"\n\n'
        f'[parent]\nbootstrap = "{clusters["city"]}"\nregion = "{CITY}"\n'
        f'topic_prefix = "{prefix}"\n\n'
        "[topics]\npartitions = 1\n\n"
        "[flow]\nfetch_timeout_ms = 100\nretry_backoff_s = 0.2\nmax_backoff_s = 1.0\n"
        "delivery_timeout_s = 10\nshutdown_timeout_s = 20\n\n"
        "[admin]\nport = 0\n\n"
        '[log]\nformat = "json"\nlevel = "warning"\n\n'
        f"[audit]\nflush_s = 0.1\nentries_per_record = 4\n{audit}",
        encoding="utf-8",
    )
    return load_config(path)


async def chain_with(bootstrap: str, topic: str, count: int) -> list[Located]:
    """Read the chain until it holds ``count`` entries (bounded by WAIT_S)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    lines: list[Located] = []
    while loop.time() < deadline:
        lines = await read_chain(bootstrap, topic, deadline_s=20)
        if len(lines) >= count:
            break
        await asyncio.sleep(0.2)
    return lines


def facts_of(lines: list[Located]) -> list[Fact]:
    """The record entries of a chain."""
    bodies = [parse_entry(located.line).body for located in lines]
    return [body for body in bodies if isinstance(body, Fact)]


async def copy_chain(bootstrap: str, topic: str, lines: list[bytes]) -> None:
    """Write ``lines`` to a new one-partition ``topic``, one entry per record."""
    await ensure_topics(bootstrap, [topic], 1, 1)
    sink = KafkaSink(bootstrap, "audit-copier", TopicLimits(bootstrap))
    try:
        results = await sink.deliver([Message(topic, b"copy", line, []) for line in lines])
        assert results == [None] * len(lines)
    finally:
        await sink.stop()


async def cli_verify(
    config: Path, node: str, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    """Run ``exchange-node audit verify --node NODE`` (text); return its exit code and output."""
    capsys.readouterr()
    with capture_logs():  # the running node's log lines stay out of the command's output
        argv = ["audit", "verify", "--config", str(config), "--node", node, "--timeout", "20"]
        code = await asyncio.to_thread(main, [*argv, *extra])
    return code, capsys.readouterr().out


async def test_every_outcome_is_chained_and_each_tampering_is_named(
    clusters: dict[str, str],
    prefix: str,
    nodes: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Forwarded, delivered and refused records each have their entry; tampered copies are named."""
    config_path = tmp_path / "county.toml"
    config = county_toml(config_path, clusters, prefix)
    county: RunningNode = await nodes(config)
    up = [person(seed, CITY) for seed in range(8)]
    here = [person(seed, COUNTY) for seed in range(8, 13)]
    bad = [person(seed, CITY, flaw=Flaw.ID_CHECK_CHAR) for seed in range(13, 16)]
    await publish_to_outboxes(clusters["county"], prefix, [*up, *here, *bad])

    names = TopicNames(prefix)
    topic = names.audit(config.node_id)
    lines = await chain_with(clusters["county"], topic, 16)
    verdict = verify(lines)
    assert verdict.describe() == "chain of 16 entries intact"
    facts = facts_of(lines)
    by_outcome = {
        outcome: sorted(f.record_id for f in facts if f.outcome == outcome)
        for outcome in ("forwarded", "delivered", "refused")
    }
    assert by_outcome == {
        "forwarded": sorted(ids(up)), "delivered": sorted(ids(here)), "refused": sorted(ids(bad)),
    }  # fmt: skip
    assert {f.destination for f in facts if f.outcome == "forwarded"} == {f"up:{CITY}"}
    assert {f.destination for f in facts if f.outcome == "delivered"} == {"local:inbox"}
    assert {f.reason for f in facts if f.outcome == "refused"} == {"quality"}
    payloads = {r.envelope.record_id: r.value for r in [*up, *here, *bad]}
    assert all(f.sha256 == hashlib.sha256(payloads[f.record_id]).hexdigest() for f in facts)
    assert not any(payloads[f.record_id] in located.line for f in facts for located in lines)
    at_city = await read_topic(
        clusters["city"], names.up(COUNTY), until=lambda got: len(got) >= 8, timeout_s=WAIT_S
    )
    assert sorted(r.record_id for r in at_city) == sorted(ids(up))
    assert county.metric("exchange_audit_entries_written_total") == 16
    async with aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{county.admin_port}/audit"
        async with session.get(f"{base}/verify") as answer:
            assert answer.status == 200
            body = await answer.json()
        async with session.get(f"{base}/entries", params={"from_seq": "14"}) as answer:
            page = await answer.json()
    assert (body["intact"], body["entries"], body["last_seq"]) == (True, 16, 15)
    assert [entry["seq"] for entry in page["entries"]] == [14, 15]
    code, out = await cli_verify(config_path, config.node_id, capsys)
    assert (code, out.strip()) == (0, f"{topic}: chain of 16 entries intact")

    stored = [located.line for located in lines]
    removed = stored[:5] + stored[6:]
    altered = list(stored)
    changed = json.loads(altered[9])
    changed["outcome"] = "delivered" if changed["outcome"] != "delivered" else "refused"
    altered[9] = json.dumps(changed, sort_keys=True, separators=(",", ":")).encode()
    swapped = list(stored)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    cases = {
        "removed": (removed, ProblemKind.REMOVED, 5, "entry 5 missing after 4"),
        "altered": (altered, ProblemKind.ALTERED, 9, "entry 9 altered at offset 9"),
        "swapped": (swapped, ProblemKind.REORDERED, 4, "entry 4 reordered: found at offset 3"),
    }
    for case, (copy, kind, seq, said) in cases.items():
        node = f"copy-{case}"
        await copy_chain(clusters["county"], names.audit(node), copy)
        problem = verify(
            await read_chain(clusters["county"], names.audit(node), deadline_s=20)
        ).problem
        assert problem is not None, case
        assert (problem.kind, problem.seq) == (kind, seq), case
        code, out = await cli_verify(config_path, node, capsys)
        assert code == 3, case
        assert f"chain broken: {said}" in out, (case, out)
    code, out = await cli_verify(config_path, "copy-altered", capsys, "--format", "json")
    assert code == 3
    answer = json.loads(out)
    assert answer["problem"]["kind"] == "altered"
    assert (answer["problem"]["seq"], answer["problem"]["offset"]) == (9, 9)


async def set_max_message_bytes(bootstrap: str, topic: str, limit: int) -> None:
    """Change a topic's max.message.bytes on the broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="audit-test")
    await admin.start()
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(limit)}
        )
        await admin.alter_configs([resource])
    finally:
        await admin.close()


async def test_fail_closed_stops_forwarding_while_the_audit_topic_refuses_and_resumes(
    clusters: dict[str, str], prefix: str, nodes: Any, tmp_path: Path
) -> None:
    """Writes to the audit topic refused: the node holds; accepted again: everything goes, chained."""
    config = county_toml(tmp_path / "county.toml", clusters, prefix, "fail_closed = true\n")
    county: RunningNode = await nodes(config)
    names = TopicNames(prefix)
    audit_topic = names.audit(config.node_id)
    up_topic = names.up(COUNTY)

    first = [person(seed, CITY) for seed in range(4)]
    await publish_to_outboxes(clusters["county"], prefix, first)
    assert len(await chain_with(clusters["county"], audit_topic, 4)) == 4

    await set_max_message_bytes(clusters["county"], audit_topic, 200)
    trigger = [person(10, CITY)]
    await publish_to_outboxes(clusters["county"], prefix, trigger)
    assert await county.settled("exchange_audit_holding", 1, timeout_s=WAIT_S) == 1
    await read_topic(  # delivered, but not committed while its entry cannot be written
        clusters["city"], up_topic, until=lambda got: len(got) >= 5, timeout_s=WAIT_S
    )
    assert await county.settled("exchange_link_up", 0, timeout_s=WAIT_S, link="local") == 0
    assert county.metric("exchange_records_in_total", link="local") == 4
    held = [person(seed, CITY) for seed in range(20, 26)]
    await publish_to_outboxes(clusters["county"], prefix, held)
    seen = await read_topic(
        clusters["city"], up_topic, until=lambda got: len(got) > 5, timeout_s=3
    )  # bounded: while held nothing more may arrive
    assert sorted(r.record_id for r in seen) == sorted(ids([*first, *trigger]))

    await set_max_message_bytes(clusters["county"], audit_topic, 1_048_588)
    everything = [*first, *trigger, *held]
    at_city = await read_topic(
        clusters["city"], up_topic, until=lambda got: len(got) >= 11, timeout_s=WAIT_S
    )
    assert sorted(r.record_id for r in at_city) == sorted(ids(everything))
    assert await county.settled("exchange_audit_holding", 0, timeout_s=WAIT_S) == 0
    assert await county.settled("exchange_records_in_total", 11, WAIT_S, link="local") == 11
    assert await county.settled("exchange_link_up", 1, timeout_s=WAIT_S, link="local") == 1
    lines = await chain_with(clusters["county"], audit_topic, 11)
    assert verify(lines).describe() == "chain of 11 entries intact"
    assert Counter(f.record_id for f in facts_of(lines)) == Counter(ids(everything))
