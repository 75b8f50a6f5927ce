"""Signed provenance on real brokers: county 410102 -> city 410100 -> province 410000, with keys.

Records published by a county department are signed once per batch at the county and verified at
the city and the province; records forged by writing straight to the topic the province reads
(from the city) are refused with reason ``provenance``; a county that restarts with a new key
keeps its records flowing, and its old key is refused once its grace has passed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from department_client import Published, publish_to_outboxes
from sample_records import LEGAL_ENTITY, LICENCE, PERSON, sample

from node.codec import load_schemas, packaged_schema_dir
from node.core.envelope import HOPS, RECORD_ID, REFUSAL_MESSAGE, REFUSAL_REASON
from node.core.provenance import PROVENANCE, Stamp, Stamper
from node.core.trust import TrustedKey
from node.kafka.topics import TopicNames
from node.signing import KeyPair, load_signer, write_new_key
from tests.integration.conftest import RunningNode, node_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SCHEMAS = load_schemas(packaged_schema_dir())
WAIT_S = 60.0
PROVINCE, CITY, COUNTY = "410000", "410100", "410102"
Raw = dict[str, list[tuple[str, bytes]] | bytes | None]


def records(count: int, seed: int) -> list[Published]:
    """``count`` county records for the province, of three resources, created now."""
    now = int(time.time() * 1000)
    schemas = (PERSON, LEGAL_ENTITY, LICENCE)
    return [
        sample(SCHEMAS, schemas[i % 3], COUNTY, f"region:{PROVINCE}", seed=seed + i, created_ms=now)
        for i in range(count)
    ]


async def read_raw(bootstrap: str, topic: str, ids: set[str], timeout_s: float) -> dict[str, Raw]:
    """Read ``topic`` from its beginning until every id in ``ids`` is seen (raw headers, value)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: dict[str, Raw] = {}
    try:
        deadline = time.monotonic() + timeout_s
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()  # aiokafka has no public refresh
            partitions = consumer.partitions_for_topic(topic)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions or ())]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        while not ids <= found.keys() and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                for record in batch:
                    headers = list(record.headers or ())
                    record_id = dict(headers).get(RECORD_ID, b"").decode()
                    if record_id in ids:
                        found[record_id] = {"headers": headers, "value": record.value}
    finally:
        await consumer.stop()
    return found


async def write_raw(bootstrap: str, topic: str, messages: list[tuple[list[Any], bytes]]) -> None:
    """Produce (headers, value) pairs to ``topic`` as an intruder would, bypassing every node."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for headers, value in messages:
            await producer.send_and_wait(topic, value, key=b"forged", headers=headers)
    finally:
        await producer.stop()


def forged(
    published: Published, signer: KeyPair | None, *, alter: bytes = b"", header: bytes | None = None
) -> tuple[list[Any], bytes]:
    """A record as the city would hand it up, signed by ``signer`` (value altered after)."""
    headers = [(n, v) for n, v in published.envelope.to_headers() if n != HOPS]
    if signer is not None:
        stamped = Stamper(signer).stamp([(dict(headers), published.value)], int(time.time() * 1000))
        headers.append((PROVENANCE, stamped[0]))
    if header is not None:
        headers.append((PROVENANCE, header))
    headers.append((HOPS, f"{COUNTY}^,{CITY}^".encode()))
    return headers, published.value + alter


def keys(tmp_path: Path) -> dict[str, Path]:
    """A new Ed25519 key file per node, and a second one for the county."""
    made = {}
    for name in (PROVINCE, CITY, COUNTY, "county-next"):
        made[name] = tmp_path / f"{name}.pem"
        write_new_key(made[name], "ed25519")
    return made


async def cascade(
    clusters: dict[str, str], prefix: str, nodes: Any, key_files: dict[str, Path]
) -> dict[str, RunningNode]:
    """Start province, city and county, each signing with its own key."""

    def signed(region: str) -> dict[str, Any]:
        return {"key_file": str(key_files[region])}

    return {
        PROVINCE: await nodes(node_config(
            PROVINCE, "province", clusters["province"], prefix, children=(CITY,),
            provenance=signed(PROVINCE),
        )),
        CITY: await nodes(node_config(
            CITY, "city", clusters["city"], prefix, children=(COUNTY,),
            parent=(clusters["province"], PROVINCE, prefix), provenance=signed(CITY),
        )),
        COUNTY: await nodes(node_config(
            COUNTY, "county", clusters["county"], prefix,
            parent=(clusters["city"], CITY, prefix), provenance=signed(COUNTY),
        )),
    }  # fmt: skip


async def refusals(
    clusters: dict[str, str], prefix: str, ids: set[str]
) -> dict[str, tuple[str, str]]:
    """The province's refusal reason and message of each id."""
    got = await read_raw(clusters["province"], TopicNames(prefix).refused, ids, WAIT_S)
    out = {}
    for record_id, raw in got.items():
        headers = dict(raw["headers"])  # type: ignore[arg-type]
        out[record_id] = (headers[REFUSAL_REASON].decode(), headers[REFUSAL_MESSAGE].decode())
    return out


async def cut_at_province(bootstrap: str, prefix: str, key_id: str) -> int:
    """Wait until the province trusts ``key_id`` only up to some time; return that time (ms)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        topic = TopicNames(prefix).trust
        await consumer._client.force_metadata_update()  # aiokafka has no public refresh
        assigned = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                for record in batch:
                    key = TrustedKey.from_json(record.value or b"{}")
                    if key.key_id == key_id and key.valid_until_ms is not None:
                        return key.valid_until_ms
    finally:
        await consumer.stop()
    raise AssertionError(f"the province never learnt that key {key_id} ends")


async def test_county_records_arrive_verified_and_forgeries_are_refused(
    clusters: dict[str, str], prefix: str, nodes: Any, tmp_path: Path
) -> None:
    """Every county record reaches the province signed; each kind of forgery is refused."""
    key_files = keys(tmp_path)
    await cascade(clusters, prefix, nodes, key_files)
    sent = records(30, seed=100)
    await publish_to_outboxes(clusters["county"], prefix, sent)
    ids = {p.envelope.record_id for p in sent}
    got = await read_raw(clusters["province"], TopicNames(prefix).inbox, ids, WAIT_S)
    assert set(got) == ids, f"{len(ids - set(got))} of {len(ids)} missing at the province"
    county_key = load_signer(key_files[COUNTY], "ed25519")
    for raw in got.values():
        stamp = Stamp.decode(dict(raw["headers"])[PROVENANCE])  # type: ignore[arg-type]
        assert stamp.key_id == county_key.key_id

    city_key = load_signer(key_files[CITY], "ed25519")
    unsigned, altered, garbage, wrong_region = records(4, seed=200)
    attempts = {
        unsigned.envelope.record_id: forged(unsigned, None),
        altered.envelope.record_id: forged(altered, county_key, alter=b"\x00"),
        garbage.envelope.record_id: forged(garbage, None, header=b"\x01\x05junk"),
        wrong_region.envelope.record_id: forged(wrong_region, city_key),
    }
    await write_raw(clusters["province"], TopicNames(prefix).up(CITY), list(attempts.values()))
    refused = await refusals(clusters, prefix, set(attempts))
    assert set(refused) == set(attempts)
    assert {reason for reason, _ in refused.values()} == {"provenance"}
    assert "no cx-prov" in refused[unsigned.envelope.record_id][1]
    assert "does not match" in refused[altered.envelope.record_id][1]
    assert "malformed" in refused[garbage.envelope.record_id][1]
    assert "not for source region 410102" in refused[wrong_region.envelope.record_id][1]
    inbox = await read_raw(clusters["province"], TopicNames(prefix).inbox, set(attempts), 2.0)
    assert not inbox, "a forged record was delivered"


async def test_a_key_rotation_keeps_records_flowing_and_the_old_key_expires(
    clusters: dict[str, str], prefix: str, nodes: Any, tmp_path: Path
) -> None:
    """The county restarts with a new key: records pass; past the grace the old key is refused."""
    key_files = keys(tmp_path)
    running = await cascade(clusters, prefix, nodes, key_files)
    before = records(10, seed=300)
    await publish_to_outboxes(clusters["county"], prefix, before)
    ids = {p.envelope.record_id for p in before}
    got = await read_raw(clusters["province"], TopicNames(prefix).inbox, ids, WAIT_S)
    assert set(got) == ids

    await running[COUNTY].stop()
    grace_s = 3.0
    rotated_at = time.time()  # the county cuts its old key to end at its start + grace
    await nodes(node_config(
        COUNTY, "county", clusters["county"], prefix, parent=(clusters["city"], CITY, prefix),
        provenance={"key_file": str(key_files["county-next"]), "rotation_grace_s": grace_s},
    ))  # fmt: skip
    started_at = time.time()  # the links start once the keys are published
    after = records(10, seed=400)
    await publish_to_outboxes(clusters["county"], prefix, after)
    ids = {p.envelope.record_id for p in after}
    got = await read_raw(clusters["province"], TopicNames(prefix).inbox, ids, WAIT_S)
    assert set(got) == ids, f"{len(ids - set(got))} of {len(ids)} lost after the rotation"
    new_key = load_signer(key_files["county-next"], "ed25519")
    assert {Stamp.decode(dict(r["headers"])[PROVENANCE]).key_id for r in got.values()} == {  # type: ignore[arg-type]
        new_key.key_id
    }

    old_key = load_signer(key_files[COUNTY], "ed25519")
    cut_at = await cut_at_province(clusters["province"], prefix, old_key.key_id)
    assert (rotated_at + grace_s) * 1000 <= cut_at <= (started_at + grace_s) * 1000
    await asyncio.sleep(max(0.0, cut_at / 1000 + 0.5 - time.time()))
    late = records(1, seed=500)[0]
    await write_raw(clusters["province"], TopicNames(prefix).up(CITY), [forged(late, old_key)])
    refused = await refusals(clusters, prefix, {late.envelope.record_id})
    reason, message = refused[late.envelope.record_id]
    assert reason == "provenance"
    assert "not at the signing time" in message
