"""The cascade page's routes: the page, its static files, the JSON view and the root redirect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.ops.page import STATIC_DIR, add_page_routes

DOCUMENT: dict[str, Any] = {
    "node": "city-410100", "region": "410100", "level": "city", "version": "0.1.0",
    "generated_ms": 1764480000000, "ready": True, "links": {}, "loops": {}, "refusals": {},
    "parent": None, "children": [],
}  # fmt: skip


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A client of an application with only the page routes, serving a copy of DOCUMENT."""
    app = web.Application()
    calls = {"n": 0}

    def view() -> dict[str, Any]:
        calls["n"] += 1
        return {**DOCUMENT, "calls": calls["n"]}

    add_page_routes(app, view)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def test_page_is_html_referencing_its_script_and_style(
    client: TestClient[web.Request, web.Application],
) -> None:
    """/cascade is the HTML page, loading the packaged script and style sheet."""
    response = await client.get("/cascade")
    assert response.status == 200
    assert response.content_type == "text/html"
    body = await response.text()
    assert '<script src="/static/cascade.js">' in body
    assert 'href="/static/cascade.css"' in body


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("cascade.js", "text/javascript"), ("cascade.css", "text/css")],
)
async def test_static_files_are_served(
    client: TestClient[web.Request, web.Application], name: str, content_type: str
) -> None:
    """The script and the style sheet are served from the package's static directory."""
    response = await client.get(f"/static/{name}")
    assert response.status == 200
    assert response.content_type in {content_type, "application/javascript"}
    assert await response.read() == (STATIC_DIR / name).read_bytes()


async def test_static_does_not_serve_outside_its_directory(
    client: TestClient[web.Request, web.Application],
) -> None:
    """A path escaping the static directory is not served."""
    response = await client.get("/static/..%2Fpage.py")
    assert response.status in {403, 404}


async def test_json_is_the_view_called_per_request(
    client: TestClient[web.Request, web.Application],
) -> None:
    """/cascade.json returns the view's document, fresh on every request and not cached."""
    first = await client.get("/cascade.json")
    second = await client.get("/cascade.json")
    assert first.status == 200
    assert first.headers["Cache-Control"] == "no-store"
    assert await first.json() == {**DOCUMENT, "calls": 1}
    assert (await second.json())["calls"] == 2


async def test_root_redirects_to_the_page(
    client: TestClient[web.Request, web.Application],
) -> None:
    """/ answers with a redirect to /cascade."""
    response = await client.get("/", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/cascade"
