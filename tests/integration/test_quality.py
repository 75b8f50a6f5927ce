"""Quality checks against real brokers: where a record enters, its verdict travels with it.

A county node 410102 (parent: the city cluster) checks the demo catalog's rules on records its
departments publish: valid ones go up marked ``v1 pass``, a Person with a wrong identity-number
check character is refused (accuracy refuses for Person), stale LegalEntity records (timeliness
only flags) go up marked ``v1 flag``. Topics have one partition and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from department_client import Published, Received, publish_to_outboxes, read_topic
from sample_records import LEGAL_ENTITY, PERSON, Flaw, sample
from structlog.testing import capture_logs

from node.cli import main
from node.codec import load_schemas, packaged_schema_dir
from node.config import NodeConfig, load_config
from node.kafka.topics import TopicNames
from tests.integration.conftest import RunningNode, node_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SCHEMAS = load_schemas(packaged_schema_dir())
WAIT_S = 60.0
PROVINCE, CITY, COUNTY = "410000", "410100", "410102"
PERSONS, COMPANIES = f"{COUNTY}-PSB-00001", f"{COUNTY}-SAMR-00001"
DIMENSIONS = ("accuracy", "completeness", "conformity", "consistency", "timeliness")
"""The record dimensions both resources have rules for, in report order."""
QUALITY = "exchange_quality_records_total"
STALE_S = 3 * 86_400
"""Age of a stale record's ``updated_at``: past the 48 h a daily resource allows."""
PASS, FLAG_TIMELINESS = "v1 pass", "v1 flag timeliness:$.updated_at"


def now_ms() -> int:
    """The wall clock in ms, as the envelope's ``cx-created-ms`` takes it."""
    return int(time.time() * 1000)


def person(seed: int, *, flaw: Flaw | None = None) -> Published:
    """A county Person record for the city, created now."""
    return sample(SCHEMAS, PERSON, COUNTY, f"region:{CITY}", seed=seed, created_ms=now_ms(),
                  flaw=flaw)  # fmt: skip


def company(seed: int, *, stale: bool = False, target: str = CITY) -> Published:
    """A county LegalEntity record for ``target``; ``stale``: its update time is 3 days old."""
    made = sample(SCHEMAS, LEGAL_ENTITY, COUNTY, f"region:{target}", seed=seed,
                  created_ms=now_ms())  # fmt: skip
    if not stale:
        return made
    _, datum = SCHEMAS.decode(made.value)
    old = dt.datetime.fromtimestamp(time.time() - STALE_S, dt.UTC)
    return Published(made.envelope, SCHEMAS.encode(LEGAL_ENTITY, {**datum, "updated_at": old}))


def ids(records: list[Published]) -> list[str]:
    """The records' ``cx-id`` values, in order."""
    return [r.envelope.record_id for r in records]


def has_ids(wanted: list[str]) -> Callable[[list[Received]], bool]:
    """A read_topic stop condition: every id in ``wanted`` was read."""
    return lambda got: set(wanted) <= {r.record_id for r in got}


def county_toml(path: Path, clusters: dict[str, str], prefix: str) -> NodeConfig:
    """Write the county's config (quality lines flushed every 0.5 s, 60 s buckets); load it."""
    path.write_text(
        f'[node]\nid = "{prefix}-{COUNTY}"\nlevel = "county"\nregion = "{COUNTY}"\n\n'
        f'[local]\nbootstrap = "{clusters["county"]}"\ntopic_prefix = "{prefix}"\n\n'
        f'[parent]\nbootstrap = "{clusters["city"]}"\nregion = "{CITY}"\n'
        f'topic_prefix = "{prefix}"\n\n'
        "[topics]\npartitions = 1\n\n"
        "[flow]\nfetch_timeout_ms = 100\nretry_backoff_s = 0.2\nshutdown_timeout_s = 20\n\n"
        "[admin]\nport = 0\n\n"
        '[log]\nformat = "json"\nlevel = "warning"\n\n'
        "[monitoring]\nstats_flush_s = 0.5\nstats_bucket_s = 60\n",
        encoding="utf-8",
    )
    return load_config(path)


def quality_samples(node: RunningNode) -> dict[tuple[str, str, str, str], float]:
    """Every sample of the quality counter: (resource, dept, dimension, outcome) -> count."""
    return {
        (
            s.labels["resource"],
            s.labels["dept"],
            s.labels["dimension"],
            s.labels["outcome"],
        ): s.value
        for family in node.registry.collect()
        for s in family.samples
        if s.name == QUALITY
    }


def expected_counts(
    resource: str, dept: str, checked: int, failed: dict[str, int]
) -> dict[tuple[str, str, str, str], float]:
    """Pass and fail counts per dimension of ``checked`` records with ``failed`` per dimension."""
    counts: dict[tuple[str, str, str, str], float] = {}
    for dimension in DIMENSIONS:
        bad = failed.get(dimension, 0)
        counts[resource, dept, dimension, "pass"] = checked - bad
        counts[resource, dept, dimension, "fail"] = bad
    return counts


async def settled_counts(
    node: RunningNode, want: dict[tuple[str, str, str, str], float]
) -> dict[tuple[str, str, str, str], float]:
    """Wait (bounded) until each wanted sample settles, then return every sample there is."""
    for (resource, dept, dimension, outcome), value in want.items():
        await node.settled(
            QUALITY, value, resource=resource, dept=dept, dimension=dimension, outcome=outcome
        )
    return quality_samples(node)


async def report_rows(
    config: Path, want: list[tuple[Any, ...]], capsys: pytest.CaptureFixture[str]
) -> list[tuple[Any, ...]]:
    """Run ``quality report --since 1h`` until its rows are ``want`` or WAIT_S passed.

    The nodes run in this process and log to stdout unconfigured, so their lines are kept out of
    the command's output.
    """
    argv = ["quality", "report", "--config", str(config), "--since", "1h", "--format", "json"]
    rows: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        capsys.readouterr()  # the running nodes' log lines so far
        with capture_logs():  # and theirs while the command runs
            assert await asyncio.to_thread(main, [*argv, "--timeout", "20"]) == 0
        document = json.loads(capsys.readouterr().out)
        rows = [
            (r["dept"], r["resource"], r["dimension"], r["checked"], r["failed"],
             round(r["pass_rate"], 4), r["below"])
            for r in document["rows"]
        ]  # fmt: skip
        if rows == want:
            break
        await asyncio.sleep(0.5)
    return rows


async def test_entry_node_passes_refuses_flags_and_counts_each_dimension(
    clusters: dict[str, str],
    prefix: str,
    nodes: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Pass goes up, a bad check character is refused, stale goes up flagged: counted, reported."""
    config_path = tmp_path / "county.toml"
    county = await nodes(county_toml(config_path, clusters, prefix))
    valid = [person(1), person(2), company(3), company(4)]
    bad_check = person(5, flaw=Flaw.ID_CHECK_CHAR)
    stale = [company(6, stale=True), company(7, stale=True), company(8, stale=True)]
    await publish_to_outboxes(clusters["county"], prefix, [*valid, bad_check, *stale])

    delivered = [*valid, *stale]
    at_city = await read_topic(
        clusters["city"], TopicNames(prefix).up(COUNTY),
        until=has_ids(ids(delivered)), timeout_s=WAIT_S,
    )  # fmt: skip
    refused = await read_topic(
        clusters["county"], TopicNames(prefix).refused,
        until=has_ids(ids([bad_check])), timeout_s=WAIT_S,
    )  # fmt: skip

    assert sorted(r.record_id for r in at_city) == sorted(ids(delivered))
    marks = {r.record_id: r.headers.get("cx-quality") for r in at_city}
    assert marks == {
        **dict.fromkeys(ids(valid), PASS),
        **dict.fromkeys(ids(stale), FLAG_TIMELINESS),
    }
    assert {r.record_id: r.value for r in at_city} == {
        p.envelope.record_id: p.value for p in delivered
    }

    assert [r.record_id for r in refused] == ids([bad_check])
    [refusal] = refused
    assert refusal.headers["cx-refusal-reason"] == "quality"
    _, flawed = SCHEMAS.decode(bad_check.value)
    _, intact = SCHEMAS.decode(person(5).value)
    written, expected = flawed["id_number"][-1], intact["id_number"][-1]
    assert written != expected
    assert refusal.headers["cx-refusal-message"] == (
        f"accuracy id_number_check $.id_number: check character {written}, expected {expected}"
    )

    want = {
        **expected_counts(PERSONS, "PSB", 3, {"accuracy": 1}),
        **expected_counts(COMPANIES, "SAMR", 5, {"timeliness": 3}),
    }
    assert await settled_counts(county, want) == want
    refusals = await county.settled(
        "exchange_records_refused_total", 1, link="local", reason="quality"
    )
    assert refusals == 1

    want_rows = [
        ("PSB", PERSONS, "accuracy", 3, 1, 0.6667, True),
        ("PSB", PERSONS, "completeness", 3, 0, 1.0, False),
        ("PSB", PERSONS, "conformity", 3, 0, 1.0, False),
        ("PSB", PERSONS, "consistency", 3, 0, 1.0, False),
        ("PSB", PERSONS, "timeliness", 3, 0, 1.0, False),
        ("PSB", None, None, 15, 1, 0.9333, False),
        ("SAMR", COMPANIES, "accuracy", 5, 0, 1.0, False),
        ("SAMR", COMPANIES, "completeness", 5, 0, 1.0, False),
        ("SAMR", COMPANIES, "conformity", 5, 0, 1.0, False),
        ("SAMR", COMPANIES, "consistency", 5, 0, 1.0, False),
        ("SAMR", COMPANIES, "timeliness", 5, 3, 0.4, True),
        ("SAMR", None, None, 25, 3, 0.88, False),
    ]
    assert await report_rows(config_path, want_rows, capsys) == want_rows


async def test_a_later_hop_forwards_the_verdict_without_checking_again(
    clusters: dict[str, str], prefix: str, nodes: Any, tmp_path: Path
) -> None:
    """The city forwards county verdicts to the province unchanged and checks nothing itself."""
    city = await nodes(
        node_config(
            CITY, "city", clusters["city"], prefix,
            parent=(clusters["province"], PROVINCE, prefix), children=(COUNTY,),
        )
    )  # fmt: skip
    county = await nodes(county_toml(tmp_path / "county.toml", clusters, prefix))
    flagged, passed = company(11, stale=True, target=PROVINCE), company(12, target=PROVINCE)
    await publish_to_outboxes(clusters["county"], prefix, [flagged, passed])

    sent = ids([flagged, passed])
    at_city = await read_topic(
        clusters["city"], TopicNames(prefix).up(COUNTY), until=has_ids(sent), timeout_s=WAIT_S
    )
    at_province = await read_topic(
        clusters["province"], TopicNames(prefix).up(CITY), until=has_ids(sent), timeout_s=WAIT_S
    )

    assert [r.record_id for r in at_city] == sent
    assert [r.record_id for r in at_province] == sent
    assert [r.headers.get("cx-quality") for r in at_province] == [FLAG_TIMELINESS, PASS]
    assert [r.headers["cx-quality"] for r in at_province] == [
        r.headers["cx-quality"] for r in at_city
    ]
    assert [r.value for r in at_province] == [flagged.value, passed.value]
    assert [r.headers["cx-hops"] for r in at_province] != [r.headers["cx-hops"] for r in at_city]

    want = expected_counts(COMPANIES, "SAMR", 2, {"timeliness": 1})
    assert await settled_counts(county, want) == want
    # the city's counters move in the same step as its quality counts, once the batch is committed
    assert await city.settled("exchange_records_out_total", 2, link="local", direction="up") == 2
    assert quality_samples(city) == {}
