"""The live cascade page: where this node sits in the cascade, and the state of every link.

Routes added to the admin application:

    GET /              redirects to /cascade
    GET /cascade       the page (static HTML; its script polls /cascade.json every 2 s)
    GET /cascade.json  the view's document, uncached
    GET /static/...    the page's script and style sheet, shipped in the package

This module only serves; it must not compute the document (the view does) nor touch Kafka.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "static"
_NO_STORE = {"Cache-Control": "no-store"}


def add_page_routes(app: web.Application, view: Callable[[], dict[str, Any]]) -> None:
    """Mount the cascade page on ``app``; ``view`` is called once per ``/cascade.json`` request.

    ``view`` runs in the event loop, so it must not block. Whatever it raises becomes the response:
    an ``HTTPException`` as itself, anything else as a 500 logged by aiohttp.
    """

    async def root(_: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/cascade")

    async def page(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "cascade.html", headers=_NO_STORE)

    async def document(_: web.Request) -> web.StreamResponse:
        return web.json_response(view(), headers=_NO_STORE)

    app.router.add_get("/", root)
    app.router.add_get("/cascade", page)
    app.router.add_get("/cascade.json", document)
    app.router.add_static("/static/", STATIC_DIR)
