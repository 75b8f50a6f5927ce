"""The node on real brokers when things go wrong: poison, an unreachable parent, lost records.

Topics have one partition here, so arrival order is the order of the source partition.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import aiohttp
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from department_client import Published, read_topic
from department_client import publish as produce
from prometheus_client import CollectorRegistry
from sample_records import PERSON, sample

from node.app import Running, run_node
from node.codec import load_schemas, packaged_schema_dir
from node.kafka.topics import TopicNames, ensure_topics
from tests.integration.conftest import READY_TIMEOUT_S, free_port, node_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SCHEMAS = load_schemas(packaged_schema_dir())
WAIT_S = 60.0
CITY, COUNTY = "410100", "410102"
PSB = "PSB"
"""The department that publishes the county's person records (to its own outbox)."""


def person(target: str, seed: int, *, address: str | None = None) -> Published:
    """A person record published at the county, created now."""
    made = sample(SCHEMAS, PERSON, COUNTY, target, seed=seed, created_ms=int(time.time() * 1000))
    if address is None:
        return made
    _, datum = SCHEMAS.decode(made.value)
    return Published(made.envelope, SCHEMAS.encode(PERSON, {**datum, "address": address}))


async def get_json(port: int, path: str) -> tuple[int, Any]:
    """GET an admin endpoint; return the status and the JSON body."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.json()


async def test_a_too_large_record_among_many_batches_is_refused_and_the_rest_keep_order(
    clusters: dict[str, str], prefix: str, nodes: Any
) -> None:
    """One record over the parent's limit inside a run of batches is refused; the rest keep order."""
    names = TopicNames(prefix)
    await ensure_topics(clusters["city"], [names.up(COUNTY)], 1, 1, {"max.message.bytes": "50000"})
    node = await nodes(
        node_config(
            COUNTY, "county", clusters["county"], prefix,
            parent=(clusters["city"], CITY, prefix), flow={"batch_bytes": 16_384},
        )
    )  # fmt: skip
    good = [person(f"region:{CITY}", seed=s, address="x" * 3000) for s in range(60)]
    big = person(f"region:{CITY}", seed=1000, address="号" * 30_000)
    stream = [*good[:30], big, *good[30:]]
    await produce(clusters["county"], names.outbox(PSB), stream)
    wanted = [p.envelope.record_id for p in good]

    forwarded = await read_topic(
        clusters["city"],
        names.up(COUNTY),
        until=lambda got: len(got) >= len(good),
        timeout_s=WAIT_S,
    )
    refused = await read_topic(
        clusters["county"], names.refused, until=lambda got: len(got) >= 1, timeout_s=WAIT_S
    )

    assert [r.record_id for r in forwarded] == wanted
    assert [(r.record_id, r.headers["cx-refusal-reason"]) for r in refused] == [
        (big.envelope.record_id, "undeliverable")
    ]
    assert node.metric("exchange_delivery_retries_total", link="local") == 0


async def test_a_refusal_too_large_for_the_refusal_topic_is_written_as_a_stub(
    clusters: dict[str, str], prefix: str, nodes: Any
) -> None:
    """A refusal too large for the refusal topic leaves a stub with size and SHA-256; others go on."""
    names = TopicNames(prefix)
    await ensure_topics(clusters["county"], [names.refused], 1, 1, {"max.message.bytes": "20000"})
    await nodes(
        node_config(
            COUNTY, "county", clusters["county"], prefix, parent=(clusters["city"], CITY, prefix)
        )
    )
    garbage = bytes(range(256)) * 160
    after = person(f"region:{CITY}", seed=7)
    poison = Published(person(f"region:{CITY}", seed=8).envelope, garbage)
    await produce(clusters["county"], names.outbox(PSB), [poison, after])

    forwarded = await read_topic(
        clusters["city"], names.up(COUNTY), until=lambda got: len(got) >= 1, timeout_s=WAIT_S
    )
    refused = await read_topic(
        clusters["county"], names.refused, until=lambda got: len(got) >= 1, timeout_s=WAIT_S
    )

    assert [r.record_id for r in forwarded] == [after.envelope.record_id]
    [stub] = refused
    assert stub.value is None
    assert stub.record_id == poison.envelope.record_id
    assert stub.headers["cx-refusal-reason"] == "bad_payload"
    assert stub.headers["cx-refused-size"] == str(len(garbage))
    assert stub.headers["cx-refused-sha256"] == hashlib.sha256(garbage).hexdigest()


async def test_a_node_starts_and_delivers_locally_while_its_parent_is_unreachable(
    clusters: dict[str, str], prefix: str
) -> None:
    """With no parent listening: live, not ready (naming the parent), local delivery, timely stop."""
    names = TopicNames(prefix)
    nowhere = f"127.0.0.1:{free_port()}"
    config = node_config(
        COUNTY, "county", clusters["county"], prefix, parent=(nowhere, CITY, prefix),
        flow={"delivery_timeout_s": 2, "retry_backoff_s": 0.2, "max_backoff_s": 1,
              "shutdown_timeout_s": 8},
    )  # fmt: skip
    stop = asyncio.Event()
    running: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_node(config, stop, registry=CollectorRegistry(), on_running=running.set_result)
    )
    try:
        port = (await asyncio.wait_for(running, READY_TIMEOUT_S)).admin_port
        local = person(f"region:{COUNTY}", seed=21)
        await produce(clusters["county"], names.outbox(PSB), [local])
        delivered = await read_topic(
            clusters["county"], names.inbox, until=lambda got: len(got) >= 1, timeout_s=WAIT_S
        )
        live, _ = await get_json(port, "/livez")
        ready, body = await get_json(port, "/readyz")
    finally:
        began = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 30)
        stopped_in = time.monotonic() - began

    assert [r.record_id for r in delivered] == [local.envelope.record_id]
    assert live == 200
    assert ready == 503
    assert body["loops"]["local"]["up"] is True
    for loop in ("parent", "grants-down", "grants-up"):
        assert body["loops"][loop]["up"] is False
        assert nowhere in body["loops"][loop]["reason"]
    assert stopped_in <= 8


async def test_records_lost_to_retention_are_reported_with_their_offsets(
    clusters: dict[str, str], prefix: str, nodes: Any
) -> None:
    """Records deleted before the node read them are reported as a gap with the exact range."""
    names = TopicNames(prefix)
    config = node_config(
        COUNTY, "county", clusters["county"], prefix, parent=(clusters["city"], CITY, prefix)
    )
    first = await nodes(config)
    early = [person(f"region:{CITY}", seed=s) for s in range(5)]
    await produce(clusters["county"], names.outbox(PSB), early)
    await read_topic(
        clusters["city"], names.up(COUNTY), until=lambda g: len(g) >= 5, timeout_s=WAIT_S
    )
    await first.stop()

    late = [person(f"region:{CITY}", seed=s) for s in range(100, 110)]
    await produce(clusters["county"], names.outbox(PSB), late)
    admin = AIOKafkaAdminClient(bootstrap_servers=clusters["county"])
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(names.outbox(PSB), 0): RecordsToDelete(12)})
    finally:
        await admin.close()
    second = await nodes(config)

    forwarded = await read_topic(
        clusters["city"], names.up(COUNTY), until=lambda got: len(got) >= 8, timeout_s=WAIT_S
    )
    assert [r.record_id for r in forwarded] == [p.envelope.record_id for p in (*early, *late[7:])]
    assert second.metric("exchange_source_gaps_total", link="local") == 1
    assert second.metric("exchange_source_gap_records_total", link="local") == 7
