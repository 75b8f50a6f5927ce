"""The sharing rules against real brokers: one county node, a catalog with one resource per rule.

Records are published in order on one partition and the last one is an allowed marker, so when
the marker reaches the city every earlier record has been decided.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from department_client import Published, publish_to_outboxes, read_topic
from sample_records import PERSON, sample

from node.codec import load_schemas, packaged_schema_dir
from node.kafka.topics import TopicNames
from tests.integration.conftest import node_config
from tests.unit.test_catalog import entry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SCHEMAS = load_schemas(packaged_schema_dir())
COUNTY, CITY = "410102", "410100"
OPEN, SECRET, ASK, TOP, BANNED = (f"410102-PSB-0000{n}" for n in range(1, 6))
CATALOG = "".join(
    (
        entry(OPEN),
        entry(SECRET, sharing='"not_shared"', legal_basis='"《个人信息保护法》第二十八条"'),
        entry(ASK, sharing='"conditional"'),
        entry(TOP, grade="4"),
        entry(BANNED),
    )
)


def person(resource: str, target: str, seed: int, dept: str = "PSB") -> Published:
    """A county person record of ``resource``."""
    return sample(
        SCHEMAS, PERSON, COUNTY, target, seed=seed, created_ms=int(time.time() * 1000),
        resource=resource, source_dept=dept,
    )  # fmt: skip


async def test_each_rule_allows_or_refuses_with_its_reason(
    clusters: dict[str, str], prefix: str, nodes: Any, tmp_path: Path
) -> None:
    """Allowed records go up unchanged; each refused one lands on the refusal topic with its reason."""
    (tmp_path / "catalog.toml").write_text(CATALOG, encoding="utf-8")
    config = node_config(
        COUNTY, "county", clusters["county"], prefix,
        parent=(clusters["city"], CITY, prefix),
        node={"catalog_dir": str(tmp_path)},
        negative_list={"resources": [BANNED], "departments": ["TAX"]},
        clearance={"parent": 3},
        # departments of the level publish to their own outboxes: TAX and HRSS must be known
        departments=[{"code": code, "clearance": 1} for code in ("HRSS", "TAX")],
    )  # fmt: skip
    node = await nodes(config)
    up = f"region:{CITY}"
    expected_refusals = {
        person("410102-PSB-09999", up, 1): "unknown_resource",
        person(SECRET, f"region:{COUNTY}", 2): "not_shared",
        person(SECRET, up, 3): "not_shared",
        person(ASK, f"region:{COUNTY}", 4): "no_grant",
        person(BANNED, up, 5): "negative_list",
        person(OPEN, up, 6, dept="TAX"): "negative_list",
        person(OPEN, up, 7, dept="HRSS"): "not_authoritative",
        person(TOP, up, 8): "grade",
    }
    allowed = [person(OPEN, up, 10), person(ASK, up, 11), person(OPEN, up, 12)]
    await publish_to_outboxes(clusters["county"], prefix, [*expected_refusals, *allowed])

    forwarded = await read_topic(
        clusters["city"], TopicNames(prefix).up(COUNTY),
        until=lambda got: allowed[-1].envelope.record_id in {r.record_id for r in got}, timeout_s=60,
    )  # fmt: skip
    refused = await read_topic(
        clusters["county"], TopicNames(prefix).refused,
        until=lambda got: len(got) >= len(expected_refusals), timeout_s=60,
    )  # fmt: skip

    assert [r.record_id for r in forwarded] == [p.envelope.record_id for p in allowed]
    assert [r.value for r in forwarded] == [p.value for p in allowed]
    reasons = {r.record_id: r.headers["cx-refusal-reason"] for r in refused}
    assert reasons == {p.envelope.record_id: why for p, why in expected_refusals.items()}
    by_id = {r.record_id: r for r in refused}
    secret = by_id[
        next(p for p, why in expected_refusals.items() if why == "not_shared").envelope.record_id
    ]
    assert "个人信息保护法" in secret.headers["cx-refusal-message"]
    grade = by_id[
        next(p for p, why in expected_refusals.items() if why == "grade").envelope.record_id
    ]
    assert grade.headers["cx-refusal-message"] == f"grade 4 exceeds clearance 3 of up {CITY}"
    # counted once the batch is settled, which may be a moment after the records are readable
    counts = (
        ("exchange_records_refused_total", {"reason": "negative_list"}, 2),
        ("exchange_records_refused_total", {"reason": "not_shared"}, 2),
        ("exchange_records_out_total", {"direction": "up"}, 3),
    )
    got = [await node.settled(name, want, link="local", **labels) for name, labels, want in counts]
    assert got == [2, 2, 3]
