"""Grants against real brokers: requested at the consumer's county, decided at the providing city.

City 410100 provides a conditional person resource; department HRSS of county 410102 requests it.
The request climbs to the city through the grants relays, the approval comes back down, and the
county then delivers the city's records to HRSS projected to the granted items, also after a
restart. A revocation at the city stops delivery within the configured bound. The county hands
grant events up to its own ``grants.from.410102`` on the city's cluster; what it may not say there
(an approval in another region's name, an unrevocable version) is refused and never takes effect.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from department_client import Published, Received, publish_to_outboxes, read_topic
from fastavro import schemaless_reader
from sample_records import LEGAL_ENTITY, PERSON, sample

from node.codec import HEADER_SIZE, load_schemas, packaged_schema_dir
from node.config import NodeConfig
from node.kafka.topics import TopicNames
from tests.integration.conftest import RunningNode, node_config
from tests.integration.test_cli import EXE
from tests.unit.test_catalog import entry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SCHEMAS = load_schemas(packaged_schema_dir())
CITY, COUNTY = "410100", "410102"
ASKED = "410100-PSB-00001"
MAX_STALENESS_S = 5.0


async def call(node: RunningNode, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Call a node's admin API; (status, JSON)."""
    url = f"http://127.0.0.1:{node.admin_port}{path}"
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as r:
        return r.status, await r.json()


async def until_grant(node: RunningNode, grant_id: str, status: str, timeout_s: float = 30) -> None:
    """Wait until ``node`` knows the grant in ``status``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code, body = await call(node, "GET", f"/grants/{grant_id}")
        if code == 200 and body["status"] == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"grant {grant_id} never became {status} at {node.config.node_id}")


def from_city(seed: int) -> Published:
    """A conditional person record of the city's, for the county."""
    return sample(
        SCHEMAS, PERSON, CITY, f"region:{COUNTY}", seed=seed, created_ms=int(time.time() * 1000),
        resource=ASKED,
    )  # fmt: skip


async def provider_city(
    clusters: dict[str, str], prefix: str, nodes: Any, tmp_path: Path
) -> tuple[RunningNode, NodeConfig]:
    """Start the city that provides ``ASK`` (conditional); return it and the county's config."""
    (tmp_path / "catalog.toml").write_text(
        entry(ASKED, sharing='"conditional"', source='{ department = "PSB", region = "410100" }'),
        encoding="utf-8",
    )
    catalog = {"catalog_dir": str(tmp_path)}
    city = await nodes(
        node_config(CITY, "city", clusters["city"], prefix, children=(COUNTY,), node=catalog)
    )
    county_config = node_config(
        COUNTY, "county", clusters["county"], prefix, parent=(clusters["city"], CITY, prefix),
        node=catalog, grants={"max_staleness_s": MAX_STALENESS_S},
        departments=[{"code": "HRSS", "clearance": 3, "subscribe": [ASKED]}],
    )  # fmt: skip
    return city, county_config


async def test_grant_flows_through_the_cascade_and_revocation_takes_effect_in_bound(
    clusters: dict[str, str], prefix: str, nodes: Any, tmp_path: Path
) -> None:
    """Request, approval, projected delivery, restart, and a revocation honoured within 5 s."""
    city, county_config = await provider_city(clusters, prefix, nodes, tmp_path)
    county = await nodes(county_config)
    deliver = TopicNames(prefix).deliver("HRSS")

    code, error = await call(
        county, "POST", "/grants", {"resource": "NOPE", "consumer_dept": "HRSS"}
    )
    assert (code, error["error"]) == (404, "unknown resource 'NOPE'")
    code, error = await call(county, "POST", "/grants", {"resource": ASKED, "consumer_dept": "EDU"})
    assert code == 404
    assert "unknown consumer department 'EDU'" in error["error"]
    code, asked = await call(
        county,
        "POST",
        "/grants",
        {"resource": ASKED, "consumer_dept": "HRSS", "items": ["name", "id_number"]},
    )
    assert code == 201
    grant_id = asked["grant_id"]
    await until_grant(city, grant_id, "requested")
    code, error = await call(county, "POST", f"/grants/{grant_id}/approve", {})
    assert code == 403
    assert "decide there" in error["error"]
    assert (await call(city, "POST", f"/grants/{grant_id}/approve", {"validity_days": 30}))[
        0
    ] == 200
    await until_grant(county, grant_id, "approved")

    first = from_city(1)
    await publish_to_outboxes(clusters["city"], prefix, [first])
    got = await read_topic(clusters["county"], deliver, until=lambda rs: len(rs) >= 1, timeout_s=60)
    assert [r.record_id for r in got] == [first.envelope.record_id]
    assert got[0].headers["cx-projection"] == "id_number,name"
    projected = SCHEMAS.projection(PERSON, ("id_number", "name"))
    assert got[0].value is not None
    assert got[0].value[2:HEADER_SIZE] == projected.fingerprint
    datum = schemaless_reader(io.BytesIO(got[0].value[HEADER_SIZE:]), projected.parsed, None)
    _, original = SCHEMAS.decode(first.value)
    assert datum == {"id_number": original["id_number"], "name": original["name"]}

    await county.stop()
    county = await nodes(county_config)
    after_restart = from_city(2)
    await publish_to_outboxes(clusters["city"], prefix, [after_restart])
    got = await read_topic(clusters["county"], deliver, until=lambda rs: len(rs) >= 2, timeout_s=60)
    assert got[-1].record_id == after_restart.envelope.record_id

    revoked_at_ms = time.time() * 1000
    assert (await call(city, "POST", f"/grants/{grant_id}/revoke", {"note": "audit"}))[0] == 200
    stream = []
    for seed in range(100, 140):  # 8 s of records, one every 200 ms
        record = from_city(seed)
        stream.append(record)
        await publish_to_outboxes(clusters["city"], prefix, [record])
        await asyncio.sleep(0.2)
    ids = {p.envelope.record_id for p in stream}
    delivered = await read_topic(clusters["county"], deliver, until=lambda rs: False, timeout_s=3)
    refused = await read_topic(
        clusters["county"], TopicNames(prefix).refused,
        until=lambda rs: len(ids & {r.record_id for r in rs}) + len(ids & {r.record_id for r in delivered}) >= len(ids),
        timeout_s=60,
    )  # fmt: skip
    delivered_ids = {r.record_id for r in delivered} & ids
    refused_ids = {r.record_id for r in refused} & ids
    assert delivered_ids | refused_ids == ids, "a record was neither delivered nor refused"
    late = {
        p.envelope.record_id
        for p in stream
        if p.envelope.created_ms > revoked_at_ms + MAX_STALENESS_S * 1000
    }
    assert late
    assert late <= refused_ids, "a record was delivered more than 5 s after the revocation"
    reasons = {r.headers["cx-refusal-reason"] for r in refused if r.record_id in refused_ids}
    assert reasons == {"no_grant"}


async def test_departments_receive_subscribed_resources_on_their_own_topics(
    clusters: dict[str, str], prefix: str, nodes: Any
) -> None:
    """Across: a county record reaches a subscribed department unchanged; an under-cleared one is refused its copy."""
    resource = f"{COUNTY}-SAMR-00001"  # grade 1 in the shipped catalog
    node = await nodes(
        node_config(
            COUNTY, "county", clusters["county"], prefix, parent=(clusters["city"], CITY, prefix),
            departments=[
                {"code": "HRSS", "clearance": 3, "subscribe": [resource]},
                {"code": "TAXB", "clearance": 1, "subscribe": [resource]},
            ],
        )
    )  # fmt: skip
    record = sample(
        SCHEMAS, LEGAL_ENTITY, COUNTY, f"region:{COUNTY}", seed=5, created_ms=0, grade=2
    )
    await publish_to_outboxes(clusters["county"], prefix, [record])
    names = TopicNames(prefix)
    hrss = await read_topic(
        clusters["county"], names.deliver("HRSS"), until=lambda rs: len(rs) >= 1, timeout_s=60
    )
    inbox = await read_topic(
        clusters["county"], names.inbox, until=lambda rs: len(rs) >= 1, timeout_s=60
    )
    refused = await read_topic(
        clusters["county"], names.refused, until=lambda rs: len(rs) >= 1, timeout_s=60
    )
    assert [r.value for r in hrss] == [record.value]
    assert [r.record_id for r in inbox] == [record.envelope.record_id]
    assert [r.headers["cx-refused-copy"] for r in refused] == [f"local:{COUNTY}/TAXB"]
    assert refused[0].headers["cx-refusal-reason"] == "grade"
    assert await node.settled("exchange_records_out_total", 2, link="local", direction="local") == 2


async def test_grants_cli_reports_unknown_resource_and_grant(
    clusters: dict[str, str], prefix: str, nodes: Any
) -> None:
    """``exchange-node grants`` exits 2 with the node's reason for an unknown resource or grant."""
    node = await nodes(
        node_config(
            COUNTY, "county", clusters["county"], prefix,
            departments=[{"code": "HRSS", "clearance": 3, "subscribe": []}],
        )
    )  # fmt: skip
    admin = f"http://127.0.0.1:{node.admin_port}"
    for args, needle in (
        (["request", "NOPE", "HRSS"], "unknown resource 'NOPE'"),
        (["show", "no-such-grant"], "unknown grant 'no-such-grant'"),
        (["request", f"{COUNTY}-PSB-00001", "EDU"], "only conditional resources are granted"),
    ):
        process = await asyncio.create_subprocess_exec(
            EXE, "grants", "--admin", admin, *args, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 2, args
        assert needle in stderr.decode(), stderr.decode()
    process = await asyncio.create_subprocess_exec(
        EXE, "grants", "--admin", admin, "list", stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0
    assert stdout.decode().strip() == "[]"


async def test_a_revocation_while_the_relay_to_the_county_is_stalled_is_honoured_in_bound(
    clusters: dict[str, str], prefix: str, nodes: Any, tmp_path: Path
) -> None:
    """A revocation the stalled relay never brings down is still honoured at the county in bound.

    A rogue member of the relay's group holds its partition, so the county cannot confirm the
    relay current and fails closed within 5 s.
    """
    city, county_config = await provider_city(clusters, prefix, nodes, tmp_path)
    county = await nodes(county_config)
    names = TopicNames(prefix)
    code, asked = await call(
        county, "POST", "/grants", {"resource": ASKED, "consumer_dept": "HRSS"}
    )
    assert code == 201
    grant_id = asked["grant_id"]
    await until_grant(city, grant_id, "requested")
    assert (await call(city, "POST", f"/grants/{grant_id}/approve", {}))[0] == 200
    await until_grant(county, grant_id, "approved")
    before = from_city(1)
    await publish_to_outboxes(clusters["city"], prefix, [before])
    got = await read_topic(
        clusters["county"], names.deliver("HRSS"), until=lambda rs: len(rs) >= 1, timeout_s=60
    )
    assert [r.record_id for r in got] == [before.envelope.record_id]

    rogue = AIOKafkaConsumer(
        names.grants, bootstrap_servers=clusters["city"], client_id="a-rogue",
        group_id=f"exchange-node.{county.config.node_id}.grants-down", enable_auto_commit=False,
    )  # fmt: skip
    await rogue.start()
    try:
        deadline = time.monotonic() + 60
        while not rogue.assignment() and time.monotonic() < deadline:
            await rogue.getmany(timeout_ms=200)
        assert rogue.assignment(), "the rogue member never took the relay's partition"
        assert (await call(city, "POST", f"/grants/{grant_id}/revoke", {}))[0] == 200
        revoked_at_ms = time.time() * 1000  # written and acked at the city
        stream = []
        for seed in range(200, 240):  # 8 s of records, one every 200 ms
            record = from_city(seed)
            stream.append(record)
            await publish_to_outboxes(clusters["city"], prefix, [record])
            await asyncio.sleep(0.2)
        late = {
            p.envelope.record_id
            for p in stream
            if p.envelope.created_ms > revoked_at_ms + MAX_STALENESS_S * 1000
        }
        refused = await read_topic(
            clusters["county"], names.refused,
            until=lambda rs: late <= {r.record_id for r in rs}, timeout_s=60,
        )  # fmt: skip
        _, known = await call(county, "GET", f"/grants/{grant_id}")
    finally:
        await rogue.stop()

    assert known["status"] == "approved", "the revocation reached the county: nothing was stalled"
    assert late
    reasons = {r.headers["cx-refusal-reason"] for r in refused if r.record_id in late}
    assert late <= {r.record_id for r in refused}
    assert reasons == {"no_grant"}


async def test_a_forged_approval_handed_up_by_the_county_is_refused_and_never_takes_effect(
    clusters: dict[str, str], prefix: str, nodes: Any, tmp_path: Path
) -> None:
    """Approvals of a real request written into the county's hand-up topic are refused as forged.

    One in the city's name with an unrevocable version, one in another county's name, one in the
    county's own name (it does not provide the resource). None reaches either node's grants; the
    city's own approval afterwards still takes effect at the county.
    """
    city, county_config = await provider_city(clusters, prefix, nodes, tmp_path)
    county = await nodes(county_config)
    names = TopicNames(prefix)
    code, asked = await call(
        county, "POST", "/grants", {"resource": ASKED, "consumer_dept": "HRSS"}
    )
    assert code == 201
    grant_id = asked["grant_id"]
    await until_grant(city, grant_id, "requested")

    approved = {**asked, "status": "approved", "expires_ms": int(time.time() * 1000) + 86_400_000}
    forgeries = [
        {**approved, "origin": CITY, "version": 2**62},
        {**approved, "origin": "410103", "version": asked["version"] + 1},
        {**approved, "origin": COUNTY, "version": asked["version"] + 2},
    ]
    producer = AIOKafkaProducer(bootstrap_servers=clusters["city"], acks="all")
    await producer.start()
    try:
        for forged in forgeries:
            value = json.dumps(forged).encode()
            await producer.send_and_wait(names.grants_from(COUNTY), value, key=grant_id.encode())
    finally:
        await producer.stop()

    def forged_refusals(records: list[Received]) -> list[Received]:
        return [r for r in records if r.key == grant_id.encode()]

    refused = await read_topic(
        clusters["city"], names.refused, until=lambda rs: len(forged_refusals(rs)) >= 3,
        timeout_s=60,
    )  # fmt: skip
    refusals = forged_refusals(refused)
    assert [r.headers["cx-refusal-reason"] for r in refusals] == ["forged"] * 3
    messages = [r.headers["cx-refusal-message"] for r in refusals]
    assert f"origin {CITY} lies outside the subtree of {COUNTY}" in messages[0]
    assert f"origin 410103 lies outside the subtree of {COUNTY}" in messages[1]
    assert f"only {CITY}'s node records that step" in messages[2]
    assert [json.loads(r.value or b"")["origin"] for r in refusals] == [CITY, "410103", COUNTY]
    in_city = await read_topic(clusters["city"], names.grants, until=lambda rs: False, timeout_s=2)
    statuses = [json.loads(r.value or b"")["status"] for r in in_city if r.key == grant_id.encode()]
    assert statuses == ["requested"], "a forged event reached the city's grants topic"
    for node in (city, county):
        _, known = await call(node, "GET", f"/grants/{grant_id}")
        assert (known["status"], known["version"]) == ("requested", asked["version"])

    assert (await call(city, "POST", f"/grants/{grant_id}/approve", {}))[0] == 200
    await until_grant(county, grant_id, "approved")
