"""The cascade page in a real headless Chromium, against a fake view the tests change.

The aiohttp server runs in its own thread and event loop (Selenium's calls block), on a free
loopback port; a test changes the document the view returns and waits, at most WAIT_S, for the page
to show it on one of its 2 s refreshes. The DOM is rebuilt on every refresh, so elements are read
with one script call each rather than held across refreshes. Screenshots go to .local/artifacts/.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from selenium import webdriver

from node.ops.page import add_page_routes
from tests.integration import browser
from tests.integration.browser import attr, browser_log, chromium, console_errors, count, text

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WAIT_S = 20.0
START_S = 10.0
PROVINCE, CITY, COUNTY, SIBLING, NEW_COUNTY = "410000", "410100", "410102", "410103", "410122"
PARENT_DOWN = "delivery not acked within 30 s"


def link(up: bool = True, reason: str | None = None, **figures: Any) -> dict[str, Any]:
    """One link's report, healthy and busy unless told otherwise."""
    report: dict[str, Any] = {
        "up": up, "reason": reason, "since": time.time() - 42.0, "records_in_per_s": 120.5,
        "copies_out_per_s": 118.0, "refused_per_s": 2.5, "lag": 0,
    }  # fmt: skip
    report.update(figures)
    return report


def county(region: str, **fields: Any) -> dict[str, Any]:
    """A county heard from recently, both links up."""
    child: dict[str, Any] = {
        "region": region, "node": f"county-{region}", "level": "county",
        "heartbeat_age_s": 2.1, "hop_s": 0.003, "stale": False,
        "links": {"local": link(records_in_per_s=50.0), "parent": link(lag=12)},
        "completeness_gap": 0, "children": [],
    }  # fmt: skip
    child.update(fields)
    return child


def city_document() -> dict[str, Any]:
    """A city node under its province, with two counties, everything up."""
    return {
        "node": f"city-{CITY}", "region": CITY, "level": "city", "version": "0.1.0",
        "generated_ms": 0, "ready": True,
        "links": {"local": link(), "parent": link(lag=3)},
        "loops": {"grants": {"up": True, "reason": None, "since": time.time() - 60, "retries": 0}},
        "refusals": {"bad_envelope": 3, "no_grant": 7},
        "parent": {"region": PROVINCE, "heartbeat_age_s": 1.2, "hop_s": 0.004, "stale": False},
        "children": [county(COUNTY), county(SIBLING)],
    }  # fmt: skip


def province_document() -> dict[str, Any]:
    """The root: two cities, the first with its counties, one county never heard from."""
    never_heard: dict[str, Any] = {
        "region": NEW_COUNTY, "node": None, "level": None, "heartbeat_age_s": 301.0,
        "hop_s": None, "stale": True, "links": {}, "completeness_gap": 0, "children": [],
    }  # fmt: skip
    city = county(CITY, node=f"city-{CITY}", level="city", children=[county(COUNTY), never_heard])
    other = county("410200", node="city-410200", level="city", children=[county("410202")])
    other["links"]["parent"] = link(False, "broker unreachable", lag=None)
    return {
        "node": f"province-{PROVINCE}", "region": PROVINCE, "level": "province",
        "version": "0.1.0", "generated_ms": 0, "ready": True,
        "links": {"local": link()}, "loops": {}, "refusals": {}, "parent": None,
        "children": [city, other],
    }  # fmt: skip


class PageServer:
    """The page routes on 127.0.0.1, in a thread of their own, serving a document tests change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._document: dict[str, Any] = city_document()
        self._failing = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def set(self, document: dict[str, Any], *, failing: bool = False) -> None:
        """Serve ``document`` from now on, or a 500 when ``failing``."""
        with self._lock:
            self._document = copy.deepcopy(document)
            self._failing = failing

    def fail(self, failing: bool = True) -> None:
        """Answer /cascade.json with a 500 (or stop doing so)."""
        with self._lock:
            self._failing = failing

    def view(self) -> dict[str, Any]:
        """The current document, stamped now."""
        with self._lock:
            if self._failing:
                raise web.HTTPInternalServerError(text="view failed")
            document = copy.deepcopy(self._document)
        document["generated_ms"] = int(time.time() * 1000)
        return document

    async def _start(self) -> None:
        app = web.Application()
        add_page_routes(app, self.view)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def start(self) -> None:
        """Start the thread and the server; raises if it does not listen within START_S."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(START_S)

    def stop(self) -> None:
        """Stop the server, the loop and the thread."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(START_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_S)
        assert not self._thread.is_alive(), "the page server's thread did not stop"
        self._loop.close()

    @property
    def url(self) -> str:
        """The page's address."""
        return f"http://127.0.0.1:{self.port}/cascade"


@pytest.fixture(scope="module")
def server() -> Iterator[PageServer]:
    """One page server for the module."""
    page_server = PageServer()
    page_server.start()
    try:
        yield page_server
    finally:
        page_server.stop()


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """Headless Chromium on a fresh profile; fails (does not skip) when it is not installed."""
    with chromium(tmp_path_factory.mktemp("chromium-profile"), WAIT_S) as chrome:
        yield chrome


@pytest.fixture
def page(server: PageServer, driver: webdriver.Chrome) -> webdriver.Chrome:
    """The page freshly loaded on the city document, after its first render."""
    server.set(city_document())
    driver.get(server.url)
    wait_until(driver, lambda: attr(driver, '[data-testid="self"]', "data-region") == CITY,
               "the first render")  # fmt: skip
    browser_log(driver)  # start each test with an empty console
    return driver


def wait_until(driver: webdriver.Chrome, condition: Callable[[], bool], what: str) -> None:
    """Wait at most WAIT_S for ``condition``; fail naming ``what`` and saving a screenshot."""
    browser.wait_until(driver, condition, what, WAIT_S, "cascade-page-timeout")


def shot(driver: webdriver.Chrome, name: str) -> None:
    """Save a screenshot as .local/artifacts/cascade-page-<name>.png."""
    browser.shot(driver, f"cascade-page-{name}" if name else "cascade-page")


def state(driver: webdriver.Chrome, region: str) -> str | None:
    """The data-state of the box of ``region``."""
    return attr(driver, f'[data-region="{region}"]', "data-state")


def test_page_shows_parent_node_and_children_all_up(page: webdriver.Chrome) -> None:
    """The header names the node; parent, node and children are drawn up, with their figures."""
    assert text(page, "#node-id") == f"city-{CITY}"
    assert page.title == f"city-{CITY} · cascade"
    assert (text(page, "#updated") or "").startswith("updated ")
    assert attr(page, "#ready", "data-ready") == "true"
    assert attr(page, '[data-testid="parent"]', "data-region") == PROVINCE
    assert state(page, PROVINCE) == "up"
    assert state(page, CITY) == "up"
    assert [state(page, COUNTY), state(page, SIBLING)] == ["up", "up"]
    assert count(page, '[data-testid="children"] > [data-region]') == 2
    assert attr(page, '[data-testid="self"] [data-link="parent"]', "data-up") == "true"
    assert text(page, '[data-testid="self"] [data-link="parent"]') == "up"
    assert text(page, f'[data-region="{COUNTY}"] [data-testid="heartbeat"]') == "2.1 s ago"
    assert text(page, '[data-testid="self"] [data-lag="parent"]') == "3"
    local = (text(page, '[data-testid="self"] [data-row-link="local"]') or "").split("\t")
    assert local == ["local", "up", "120.5", "118.0", "2.5", "0"]
    assert attr(page, "#banner", "hidden") is not None
    shot(page, "")
    assert console_errors(page) == []


def test_stopped_child_turns_stale_and_parent_link_down(
    server: PageServer, page: webdriver.Chrome
) -> None:
    """After the view changes, a refresh shows the stale child and the parent link's reason."""
    changed = city_document()
    changed["children"][1].update(heartbeat_age_s=95.0, stale=True)
    changed["links"]["parent"] = link(False, PARENT_DOWN, lag=None, records_in_per_s=0.0)
    changed["ready"] = False
    server.set(changed)

    wait_until(page, lambda: state(page, SIBLING) == "stale", f"{SIBLING} stale")
    wait_until(
        page,
        lambda: attr(page, '[data-link="parent"]', "data-up") == "false",
        "the parent link down",
    )
    assert text(page, '[data-link="parent"]') == f"down: {PARENT_DOWN}"
    assert state(page, COUNTY) == "up"
    assert state(page, CITY) == "down"
    assert state(page, PROVINCE) == "down"
    assert attr(page, "#ready", "data-ready") == "false"
    assert text(page, '[data-testid="self"] [data-lag="parent"]') == "?"
    heartbeat = f'[data-region="{SIBLING}"] [data-testid="heartbeat"]'
    assert text(page, heartbeat) == "1.6 min ago"
    assert "age-stale" in (attr(page, heartbeat, "class") or "")
    assert "1 up · 0 down · 1 stale" in (text(page, '[data-testid="subtree-summary"]') or "")
    shot(page, "down")
    assert console_errors(page) == []


def test_refusals_table_shows_counts_by_reason(server: PageServer, page: webdriver.Chrome) -> None:
    """Refusals are listed by reason, most frequent first, with a total."""
    reasons = '[data-testid="refusals"] tbody tr'
    assert text(page, f'{reasons}[data-reason="no_grant"] .count') == "7"
    assert text(page, f'{reasons}[data-reason="bad_envelope"] .count') == "3"
    assert attr(page, reasons, "data-reason") == "no_grant"
    assert text(page, '[data-testid="refusals-total"]') == "10"

    changed = city_document()
    changed["refusals"] = {"no_grant": 7, "cycle": 12345}
    server.set(changed)
    wait_until(page, lambda: attr(page, reasons, "data-reason") == "cycle", "the new refusal first")
    assert text(page, f'{reasons}[data-reason="cycle"] .count') == "12,345"
    assert count(page, reasons) == 2


def test_banner_while_the_json_fails_and_recovery(
    server: PageServer, page: webdriver.Chrome
) -> None:
    """A 500 from /cascade.json shows the banner, keeps the last data, and clears when it answers."""
    server.fail()
    wait_until(page, lambda: attr(page, "#banner", "hidden") is None, "the failure banner")
    banner = text(page, "#banner") or ""
    assert banner.startswith("cannot reach node: HTTP 500")
    assert state(page, CITY) == "up"  # the last document stays on screen
    shot(page, "unreachable")
    assert any("500" in message for message in console_errors(page))

    server.fail(False)
    wait_until(page, lambda: attr(page, "#banner", "hidden") is not None, "the banner cleared")


def test_province_draws_its_whole_subtree_nested(
    server: PageServer, page: webdriver.Chrome
) -> None:
    """At the root there is no parent box; counties are drawn inside their city's box."""
    server.set(province_document())
    wait_until(page, lambda: text(page, "#node-id") == f"province-{PROVINCE}", "the province")
    assert count(page, '[data-testid="parent"]') == 0
    assert count(page, '[data-testid="root"]') == 1
    nested = f'[data-region="{CITY}"] > .subtree > [data-region="{COUNTY}"]'
    assert count(page, nested) == 1
    assert state(page, NEW_COUNTY) == "stale"
    assert "never heard" in (
        text(page, f'[data-region="{NEW_COUNTY}"] [data-testid="heartbeat"]') or ""
    )
    assert state(page, "410200") == "down"
    own = '[data-region="410200"] > .card [data-link="parent"]'
    assert text(page, own) == "down: broker unreachable"
    assert "2 children · 5 nodes below · 3 up · 1 down · 1 stale" in (
        text(page, '[data-testid="subtree-summary"]') or ""
    )
    shot(page, "province")
    assert console_errors(page) == []


def test_odd_data_is_shown_as_question_marks_and_never_as_markup(
    server: PageServer, page: webdriver.Chrome
) -> None:
    """Missing fields read "?", wrong types do not break the page, text is never parsed as HTML."""
    hostile = "<img src=x onerror=\"document.title='owned'\">"
    odd: dict[str, Any] = {
        "node": hostile, "region": CITY, "ready": "maybe",
        "links": {"parent": {"up": False, "reason": hostile, "lag": "lots"}, "odd": 7},
        "refusals": {hostile: "many"}, "parent": {"region": PROVINCE},
        "children": [{"region": COUNTY, "children": "none"}, None, 5],
    }  # fmt: skip
    server.set(odd)
    wait_until(page, lambda: text(page, "#node-id") == hostile, "the hostile node id as text")
    assert count(page, "img") == 0
    assert page.title != "owned"
    assert text(page, '[data-link="parent"]') == f"down: {hostile}"
    assert text(page, '[data-testid="self"] [data-lag="parent"]') == "?"
    assert attr(page, "#ready", "data-ready") == "unknown"
    assert text(page, '[data-testid="refusals"] tbody tr .reason') == hostile
    assert text(page, '[data-testid="refusals"] tbody tr .count') == "?"
    assert attr(page, "#banner", "hidden") is not None
    assert count(page, '[data-testid="children"] > [data-region]') == 3
    assert console_errors(page) == []
