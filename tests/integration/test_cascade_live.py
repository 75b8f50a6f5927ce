"""The cascade page in a real headless Chromium, against a live province → city → county cascade.

The three nodes run in the test's event loop and beat every 0.5 s. Selenium's calls block, and the
page is served by that same loop, so every browser step runs in a worker thread
(``asyncio.to_thread``); the loop keeps serving the page and the heartbeats meanwhile. The browser
helpers are in browser.py. Screenshots go to .local/artifacts/.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from department_client import Published, publish_to_outboxes, read_topic
from sample_records import LEGAL_ENTITY, LICENCE, PERSON, sample
from selenium import webdriver

from node.codec import load_schemas, packaged_schema_dir
from node.kafka.topics import TopicNames
from tests.integration import browser
from tests.integration.browser import attr, chromium, count, text
from tests.integration.conftest import RunningNode, node_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SCHEMAS = load_schemas(packaged_schema_dir())
WAIT_S = 30.0
PROVINCE, CITY, COUNTY = "410000", "410100", "410102"
NOWHERE = "410199"  # inside the city's subtree, but no child of the city serves it
SENT, REFUSED = 12, 3
MONITORING = {"heartbeat_s": 0.5}
SELF, PARENT_BOX = '[data-testid="self"]', '[data-testid="parent"]'
CITY_BOX = f'[data-testid="children"] > [data-region="{CITY}"]'
NESTED_COUNTY = f'{CITY_BOX} > .subtree > [data-region="{COUNTY}"]'
COUNTY_BOX = f'[data-testid="children"] > [data-region="{COUNTY}"]'
AGE = re.compile(r"([0-9.]+) s ago")


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """Headless Chromium on a fresh profile; fails (does not skip) when it is not installed."""
    with chromium(tmp_path_factory.mktemp("chromium-profile"), WAIT_S) as chrome:
        yield chrome


def wait_until(driver: webdriver.Chrome, condition: Callable[[], bool], what: str) -> None:
    """Wait at most WAIT_S for ``condition``; fail naming ``what`` and saving a screenshot."""
    browser.wait_until(driver, condition, what, WAIT_S, "cascade-live-timeout")


def shot(driver: webdriver.Chrome, name: str) -> None:
    """Save a screenshot as .local/artifacts/cascade-live-<name>.png."""
    browser.shot(driver, f"cascade-live-{name}")


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """Console errors since the last call, but the browser's own favicon request's 404."""
    return [e for e in browser.console_errors(driver) if "/favicon.ico " not in e]


def state(driver: webdriver.Chrome, selector: str) -> str | None:
    """The data-state of the box matching ``selector``."""
    return attr(driver, selector, "data-state")


def link_up(driver: webdriver.Chrome, box: str, name: str) -> str | None:
    """The data-up of link ``name`` in the links table of ``box``'s own card."""
    return attr(driver, f'{box} > .card [data-link="{name}"]', "data-up")


def in_per_s(driver: webdriver.Chrome, box: str, name: str) -> float:
    """The in/s figure of link ``name`` in ``box``'s own card (-1 while it is not a number)."""
    row = (text(driver, f'{box} > .card [data-row-link="{name}"]') or "").split("\t")
    try:
        return float(row[2])
    except (IndexError, ValueError):
        return -1.0


def age_s(driver: webdriver.Chrome, box: str) -> float:
    """The heartbeat age shown in ``box``'s own card, in seconds (inf unless shown in seconds)."""
    found = AGE.fullmatch(text(driver, f'{box} > .card [data-testid="heartbeat"]') or "")
    return float(found.group(1)) if found else float("inf")


def open_page(driver: webdriver.Chrome, node: RunningNode, region: str) -> None:
    """Load ``node``'s page and wait for its first render."""
    driver.get(f"http://127.0.0.1:{node.admin_port}/cascade")
    wait_until(driver, lambda: attr(driver, SELF, "data-region") == region, f"{region} rendered")


def province_shows_the_live_subtree(driver: webdriver.Chrome, province: RunningNode) -> None:
    """On the province's page: the city up and busy, with the county nested inside it, up."""
    open_page(driver, province, PROVINCE)
    wait_until(
        driver,
        lambda: (
            state(driver, CITY_BOX) == "up"
            and state(driver, NESTED_COUNTY) == "up"
            and in_per_s(driver, CITY_BOX, "local") > 0
        ),
        "the city up and busy with the county nested in it",
    )
    assert count(driver, '[data-testid="root"]') == 1
    assert count(driver, PARENT_BOX) == 0
    assert state(driver, SELF) == "up"
    assert attr(driver, "#ready", "data-ready") == "true"
    assert text(driver, "#node-id") == province.config.node_id
    assert link_up(driver, SELF, "local") == "true"
    assert [link_up(driver, CITY_BOX, name) for name in ("local", "parent")] == ["true", "true"]
    assert [link_up(driver, NESTED_COUNTY, name) for name in ("local", "parent")] == ["true"] * 2
    assert attr(driver, NESTED_COUNTY, "data-region") == COUNTY
    assert age_s(driver, CITY_BOX) < 3.0
    assert "1 child · 2 nodes below · 2 up · 0 down · 0 stale" in (
        text(driver, '[data-testid="subtree-summary"]') or ""
    )
    shot(driver, "province")
    assert console_errors(driver) == []


def city_shows_parent_self_and_child(driver: webdriver.Chrome, city: RunningNode) -> None:
    """On the city's page: parent up, both links up, the county up and recent, its refusals."""
    open_page(driver, city, CITY)
    refused = '[data-testid="refusals"] tbody tr[data-reason="unknown_region"] .count'
    wait_until(
        driver,
        lambda: state(driver, COUNTY_BOX) == "up" and text(driver, refused) == str(REFUSED),
        "the county up and the city's refusals",
    )
    assert attr(driver, PARENT_BOX, "data-region") == PROVINCE
    assert state(driver, PARENT_BOX) == "up"
    assert state(driver, SELF) == "up"
    assert [link_up(driver, SELF, name) for name in ("local", "parent")] == ["true", "true"]
    assert attr(driver, f'{PARENT_BOX} [data-parent-link="parent"]', "data-up") == "true"
    assert attr(driver, "#ready", "data-ready") == "true"
    assert age_s(driver, COUNTY_BOX) < 3.0
    assert [link_up(driver, COUNTY_BOX, name) for name in ("local", "parent")] == ["true", "true"]
    assert text(driver, '[data-testid="refusals-total"]') == str(REFUSED)
    shot(driver, "city")
    assert console_errors(driver) == []


def pages_show_the_county_stale(
    driver: webdriver.Chrome, city: RunningNode, province: RunningNode
) -> None:
    """The stopped county turns stale on the city's page, then nested on the province's page."""
    open_page(driver, city, CITY)
    wait_until(driver, lambda: state(driver, COUNTY_BOX) == "stale", "the county stale")
    assert "age-stale" in (attr(driver, f'{COUNTY_BOX} [data-testid="heartbeat"]', "class") or "")
    assert state(driver, SELF) == "up"
    assert state(driver, PARENT_BOX) == "up"
    assert "0 up · 0 down · 1 stale" in (text(driver, '[data-testid="subtree-summary"]') or "")
    shot(driver, "stopped")
    assert console_errors(driver) == []

    open_page(driver, province, PROVINCE)
    wait_until(driver, lambda: state(driver, NESTED_COUNTY) == "stale", "the nested county stale")
    assert state(driver, CITY_BOX) == "up"
    assert "1 up · 0 down · 1 stale" in (text(driver, '[data-testid="subtree-summary"]') or "")
    shot(driver, "stopped-province")
    assert console_errors(driver) == []


def record(schema: str, target: str, seed: int) -> Published:
    """A county sample record created now."""
    return sample(SCHEMAS, schema, COUNTY, target, seed=seed, created_ms=int(time.time() * 1000))


async def city_document(city: RunningNode) -> dict[str, Any]:
    """The city's /cascade.json."""
    url = f"http://127.0.0.1:{city.admin_port}/cascade.json"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        assert response.status == 200
        document: dict[str, Any] = await response.json()
        return document


async def test_live_cascade_page_follows_heartbeats_and_a_stopped_county(
    clusters: dict[str, str], prefix: str, nodes: Any, driver: webdriver.Chrome
) -> None:
    """Both pages draw the live subtree from heartbeats, and the stopped county turns stale on both."""
    province: RunningNode = await nodes(node_config(
        PROVINCE, "province", clusters["province"], prefix, children=(CITY,),
        monitoring=MONITORING,
    ))  # fmt: skip
    city: RunningNode = await nodes(node_config(
        CITY, "city", clusters["city"], prefix, children=(COUNTY,),
        parent=(clusters["province"], PROVINCE, prefix), monitoring=MONITORING,
    ))  # fmt: skip
    county: RunningNode = await nodes(node_config(
        COUNTY, "county", clusters["county"], prefix,
        parent=(clusters["city"], CITY, prefix), monitoring=MONITORING,
    ))  # fmt: skip
    schemas = (PERSON, LEGAL_ENTITY, LICENCE)
    sent = [record(schemas[i % 3], f"region:{PROVINCE}", i) for i in range(SENT)]
    refused = [record(PERSON, f"region:{NOWHERE}", 100 + i) for i in range(REFUSED)]
    await publish_to_outboxes(clusters["county"], prefix, [*sent, *refused])
    ids = {p.envelope.record_id for p in sent}
    arrived = await read_topic(
        clusters["province"], TopicNames(prefix).inbox,
        until=lambda got: ids <= {r.record_id for r in got}, timeout_s=WAIT_S,
    )  # fmt: skip
    assert {r.record_id for r in arrived} == ids

    await asyncio.to_thread(province_shows_the_live_subtree, driver, province)
    await asyncio.to_thread(city_shows_parent_self_and_child, driver, city)
    before = await city_document(city)
    assert [child["region"] for child in before["children"]] == [COUNTY]
    assert before["children"][0]["stale"] is False
    assert before["children"][0]["heartbeat_age_s"] < 3.0
    assert before["parent"]["region"] == PROVINCE
    assert before["parent"]["stale"] is False
    assert before["links"]["local"]["up"] is True
    assert before["links"]["parent"]["up"] is True
    assert before["refusals"] == {"unknown_region": REFUSED}

    await county.stop()
    await asyncio.to_thread(pages_show_the_county_stale, driver, city, province)
    after = await city_document(city)
    assert [child["region"] for child in after["children"]] == [COUNTY]
    assert after["children"][0]["stale"] is True
    assert after["children"][0]["heartbeat_age_s"] > 1.5
    assert after["links"]["local"]["up"] is True
    assert after["links"]["parent"]["up"] is True
    assert after["ready"] is True
