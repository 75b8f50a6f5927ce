"""Correction feedback across three real clusters: province 410000, city 410100, county 410102.

A county PSB record reaches the province; the province's HRSS reports a problem through the
gateway; the report travels down through the city to the county's ``feedback.PSB`` topic; PSB
publishes the correction (same id, version 2, ``cx-corrects``) and the province receives it and
sees the report corrected, as does the city it passed. A second report is rejected by PSB through
the county's gateway, and the province sees the reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from department_client import Received, publish, read_topic
from sample_records import PERSON, sample

from node.codec import load_schemas, packaged_schema_dir
from node.core.feedback import CORRECTS, VERSION
from node.kafka.topics import TopicNames
from tests.integration.conftest import RunningNode, node_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SCHEMAS = load_schemas(packaged_schema_dir())
WAIT_S = 60.0
PROVINCE, CITY, COUNTY = "410000", "410100", "410102"
RESOURCE = f"{COUNTY}-PSB-00001"
TOKENS = {"HRSS": "hrss-feedback-token", "PSB": "psb-feedback-token"}
EXE = str(Path(sys.executable).with_name("exchange-node"))


def gateway(*departments: str) -> dict[str, Any]:
    """A gateway section for ``departments``."""
    clients = [
        {"department": d, "token_sha256": hashlib.sha256(TOKENS[d].encode()).hexdigest()}
        for d in departments
    ]
    return {"enabled": True, "clients": clients}


async def call(
    node: RunningNode, path: str, body: Any = None, dept: str | None = None
) -> tuple[int, Any]:
    """GET (no body) or POST ``path`` on the node's admin port, as ``dept`` if given."""
    headers = {"Authorization": f"Bearer {TOKENS[dept]}"} if dept else {}
    method = "GET" if body is None else "POST"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        session.request(
            method, f"http://127.0.0.1:{node.admin_port}{path}", json=body, headers=headers
        ) as response,
    ):
        return response.status, await response.json()


async def status_of(node: RunningNode, report_id: str, want: str) -> dict[str, Any]:
    """Poll ``GET /feedback/ID`` until its status is ``want`` or WAIT_S passed; the last answer."""
    answer: dict[str, Any] = {}
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        code, answer = await call(node, f"/feedback/{report_id}")
        if code == 200 and answer["status"] == want:
            break
        await asyncio.sleep(0.2)
    return answer


def keyed(key: str) -> Any:
    """A read_topic stop condition: a record with ``key`` was read."""
    return lambda got: any(r.key == key.encode() for r in got)


async def test_a_report_is_corrected_at_the_source_and_closed_at_the_province(
    clusters: dict[str, str], prefix: str, nodes: Any, tmp_path: Path
) -> None:
    """Report at the province, correction from the county, version 2 and closed at the province."""
    topics = TopicNames(prefix)
    province = await nodes(
        node_config(PROVINCE, "province", clusters["province"], prefix, children=(CITY,),
                    gateway=gateway("HRSS"))
    )  # fmt: skip
    city = await nodes(
        node_config(CITY, "city", clusters["city"], prefix,
                    parent=(clusters["province"], PROVINCE, prefix), children=(COUNTY,))
    )  # fmt: skip
    county = await nodes(
        node_config(COUNTY, "county", clusters["county"], prefix,
                    parent=(clusters["city"], CITY, prefix), gateway=gateway("PSB"))
    )  # fmt: skip
    created = int(time.time() * 1000)
    original = sample(SCHEMAS, PERSON, COUNTY, f"region:{PROVINCE}", seed=1, created_ms=created)
    record_id = original.envelope.record_id
    await publish(clusters["county"], topics.outbox("PSB"), [original])
    got = await read_topic(
        clusters["province"], topics.inbox, timeout_s=WAIT_S,
        until=lambda rs: any(r.record_id == record_id for r in rs),
    )  # fmt: skip
    assert [r.record_id for r in got] == [record_id]

    report = {
        "record_id": record_id,
        "resource": RESOURCE,
        "fields": ["name"],
        "problem": "姓名有误",
    }
    code, answer = await call(province, "/gateway/v1/feedback", report, dept="HRSS")
    assert code == 201, answer
    report_id = answer["report_id"]
    assert (answer["source_region"], answer["source_dept"]) == (COUNTY, "PSB")
    arrived = await read_topic(
        clusters["county"], topics.feedback_for("PSB"), until=keyed(report_id), timeout_s=WAIT_S
    )
    [delivered] = [r for r in arrived if r.key == report_id.encode()]
    assert delivered.headers["cx-feedback"] == "report"
    assert delivered.headers["cx-hops"] == f"{PROVINCE}v,{CITY}v,{COUNTY}."
    code, refused = await call(province, f"/gateway/v1/feedback/{report_id}/reject",
                               {"reason": "no"}, dept="HRSS")  # fmt: skip
    assert code == 403, refused
    assert (await status_of(county, report_id, "open"))["status"] == "open"

    fixed = sample(SCHEMAS, PERSON, COUNTY, f"region:{PROVINCE}", seed=2, created_ms=created + 1)
    envelope = dataclasses.replace(fixed.envelope, record_id=record_id)
    producer = AIOKafkaProducer(bootstrap_servers=clusters["county"], acks="all")
    await producer.start()
    try:
        headers = [*envelope.to_headers(), (VERSION, b"2"), (CORRECTS, report_id.encode())]
        await producer.send_and_wait(
            topics.outbox("PSB"), fixed.value, key=record_id.encode(), headers=headers
        )
    finally:
        await producer.stop()

    def corrected(got: list[Received]) -> bool:
        return any(r.headers.get(VERSION) == "2" for r in got)

    got = await read_topic(clusters["province"], topics.inbox, until=corrected, timeout_s=WAIT_S)
    [second] = [r for r in got if r.headers.get(VERSION) == "2"]
    assert (second.record_id, second.value) == (record_id, fixed.value)
    assert second.headers[CORRECTS] == report_id

    for node in (province, city):
        state = await status_of(node, report_id, "corrected")
        assert state["status"] == "corrected", state
        assert [c["version"] for c in state["history"]] == [2]
        assert state["report"]["fields"] == ["name"]
    back = await read_topic(
        clusters["province"], topics.feedback_for("HRSS"), timeout_s=WAIT_S,
        until=lambda rs: any(r.headers.get("cx-feedback") == "status" for r in rs),
    )  # fmt: skip
    assert [r.headers["cx-hops"] for r in back] == [f"{COUNTY}^,{CITY}^,{PROVINCE}."]

    # A second report, rejected by the source department through the county's gateway.
    report["fields"] = ["address"]
    code, answer = await call(province, "/gateway/v1/feedback", report, dept="HRSS")
    assert code == 201, answer
    second_id = answer["report_id"]
    await status_of(county, second_id, "open")
    code, answer = await call(county, f"/gateway/v1/feedback/{second_id}/reject",
                              {"reason": "地址以户籍登记为准"}, dept="PSB")  # fmt: skip
    assert code == 201, answer
    state = await status_of(province, second_id, "rejected")
    assert state["status"] == "rejected", state
    assert [(c["reason"], c["by_dept"]) for c in state["history"]] == [
        ("地址以户籍登记为准", "PSB")
    ]
    code, answer = await call(county, f"/gateway/v1/feedback/{second_id}/reject",
                              {"reason": "again"}, dept="PSB")  # fmt: skip
    assert code == 409, answer
    code, _ = await call(city, "/feedback/unknown-report")
    assert code == 404

    # The operator's view at the city: exchange-node feedback status, read from its topic.
    config = tmp_path / "city.toml"
    config.write_text(
        f'[node]\nid = "cli"\nlevel = "city"\nregion = "{CITY}"\n'
        f'[local]\nbootstrap = "{clusters["city"]}"\ntopic_prefix = "{prefix}"\n',
        encoding="utf-8",
    )
    answers = []
    for wanted in (second_id, "unknown-report"):
        process = await asyncio.create_subprocess_exec(
            EXE, "feedback", "status", "--config", str(config), wanted,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), WAIT_S)
        answers.append((process.returncode, out, err.decode()))
    (known, printed, _), (unknown, _, said) = answers
    assert (known, json.loads(printed)["status"]) == (0, "rejected")
    assert unknown == 3, said
    assert "never passed" in said
