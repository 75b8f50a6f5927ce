"""The audit trail for auditors over HTTP: verify the node's chain, read its entries.

    GET /audit/verify                         the verdict on the whole chain (JSON, ``Verdict``)
    GET /audit/entries?from_seq=N&limit=M     up to M (default 100, at most 1000) entries from
                                              seq N (default 0), with where each is stored

Both read the chain from the audit topic on each request. ``/audit/verify`` also checks the
chain against the last entry this process wrote (``tip``), so the end of the chain cannot be
cut or rewritten unnoticed while the node runs. Answers 200 with the verdict whether the chain
is intact or not (``intact`` says), 503 when the topic cannot be read, 400 for bad parameters;
errors are ``{"error": "..."}``. Who may call them (auditors) is decided by the access
middleware (``node/ops/access.py``), not here.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from node.core.audit import EntryError, Located, Tip, parse_entry, verify
from node.errors import TransportError

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class AuditSource:
    """Where the routes read the chain from, and the last entry the node knows it wrote."""

    read: Callable[[], Awaitable[Sequence[Located]]]
    tip: Callable[[], Tip | None]


def add_audit_routes(app: web.Application, source: AuditSource) -> None:
    """Mount ``/audit/verify`` and ``/audit/entries`` on ``app``."""

    async def chain() -> Sequence[Located]:
        try:
            return await source.read()
        except TransportError as error:
            raise web.HTTPServiceUnavailable(
                text=_error(f"the audit trail cannot be read: {error}"),
                content_type="application/json",
            ) from error

    async def verdict(_: web.Request) -> web.Response:
        return web.json_response(verify(await chain(), tip=source.tip()).to_json())

    async def entries(request: web.Request) -> web.Response:
        from_seq = _number(request, "from_seq", 0, 0, 2**62)
        limit = _number(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        found = []
        for located in await chain():
            try:
                entry = parse_entry(located.line)
            except EntryError as error:
                found.append({"offset": located.offset, "index": located.index,
                              "unreadable": str(error)})  # fmt: skip
                continue
            if entry.seq >= from_seq:
                found.append({"offset": located.offset, "index": located.index,
                              **entry.to_json()})  # fmt: skip
            if len(found) >= limit:
                break
        return web.json_response({"from_seq": from_seq, "entries": found})

    app.router.add_get("/audit/verify", verdict)
    app.router.add_get("/audit/entries", entries)


def _number(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    given = request.query.get(name)
    if given is None:
        return default
    if not given.isdigit() or not low <= int(given) <= high:
        raise web.HTTPBadRequest(
            text=_error(f"query parameter {name!r}: expected an integer {low}-{high}"),
            content_type="application/json",
        )
    return int(given)


def _error(message: str) -> str:
    return json.dumps({"error": message})
