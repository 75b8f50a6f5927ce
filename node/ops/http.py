"""The admin HTTP server: metrics, liveness and readiness, the grants API, the cascade page.

The live cascade page is ``/cascade`` (see ``node/ops/page.py``); the HTTP gateway for departments
without Kafka is under ``/gateway/v1/`` when enabled (see ``node/ops/gateway.py``).

``/livez`` answers 200 while the process serves requests: an orchestrator must not restart a node
that is only waiting for its parent. ``/readyz`` answers 200 when every loop is up, else 503; both
carry every loop's state and reason as JSON. ``/healthz`` is ``/readyz`` under its older name.

Grants API (JSON in and out; errors are ``{"error": "..."}`` with a 4xx status):

    GET  /grants[?status=requested]          every grant this node knows
    GET  /grants/{id}
    POST /grants                             {"resource", "consumer_dept", "items"?, "note"?}
    POST /grants/{id}/approve                {"note"?, "validity_days"?}
    POST /grants/{id}/reject                 {"note"?}
    POST /grants/{id}/revoke                 {"note"?}

Correction feedback (what passed this node): ``GET /feedback/{report_id}`` answers the report and
its status history (``FeedbackState.to_json``), 404 when this node never saw it.

Who may call what (roles operator, auditor, admin; bearer tokens or client certificates; which
routes stay open) is ``node/ops/access.py``: its middleware guards every route but the gateway's.
With ``[admin.tls]`` the server speaks HTTPS only.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from node.core.feedback import FeedbackBook
from node.core.grants import Grant, GrantStatus
from node.errors import GrantProblem, GrantRefused
from node.grant_desk import GrantDesk
from node.ops.access import Access
from node.ops.audit_routes import AuditSource, add_audit_routes
from node.ops.gateway import Gateway
from node.ops.page import add_page_routes
from node.supervisor import Health


def admin_app(
    registry: CollectorRegistry,
    health: Health,
    node_id: str,
    desk: GrantDesk | None = None,
    *,
    page: Callable[[], dict[str, Any]] | None = None,
    gateway: Gateway | None = None,
    feedback: FeedbackBook | None = None,
    access: Access | None = None,
    audit: AuditSource | None = None,
) -> web.Application:
    """Build the admin application (grants API, cascade page, gateway, feedback: when given).

    ``access`` decides who may call which route; without it the application is open to all.
    """

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def states() -> dict[str, Any]:
        return {
            name: {"up": s.up, "reason": s.reason or None, "since": s.since, "retries": s.retries}
            for name, s in health.snapshot().items()
        }

    async def readyz(_: web.Request) -> web.Response:
        ready = health.ready
        body = {"node": node_id, "ready": ready, "healthy": ready, "loops": states()}
        return web.json_response(body, status=200 if ready else 503)

    async def livez(_: web.Request) -> web.Response:
        return web.json_response({"node": node_id, "live": True, "loops": states()})

    app = web.Application(middlewares=[(access or Access()).middleware])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/healthz", readyz)
    app.router.add_get("/livez", livez)
    if desk is not None:
        _add_grant_routes(app, desk)
    if page is not None:
        add_page_routes(app, page)
    if gateway is not None:
        gateway.add_routes(app)
    if feedback is not None:
        _add_feedback_route(app, feedback)
    if audit is not None:
        add_audit_routes(app, audit)
    return app


def _add_feedback_route(app: web.Application, book: FeedbackBook) -> None:
    async def one(request: web.Request) -> web.Response:
        report_id = request.match_info["report_id"]
        state = book.state(report_id)
        if state is None:
            return web.json_response({"error": f"unknown report {report_id!r}"}, status=404)
        return web.json_response(state.to_json())

    app.router.add_get("/feedback/{report_id}", one)


_STATUS = {
    GrantProblem.BAD_REQUEST: 400, GrantProblem.NOT_HERE: 403, GrantProblem.UNKNOWN: 404,
    GrantProblem.CONFLICT: 409, GrantProblem.UNAVAILABLE: 503,
}  # fmt: skip
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _grant_json(grant: Grant) -> dict[str, Any]:
    data = dataclasses.asdict(grant)
    data["status"] = grant.status.value
    return data


def _errors_as_json(handler: Callable[[web.Request], Awaitable[Any]]) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            result = await handler(request)
        except GrantRefused as refusal:
            return web.json_response({"error": str(refusal)}, status=_STATUS[refusal.problem])
        status = 201 if request.method == "POST" and request.path == "/grants" else 200
        return web.json_response(result, status=status)

    return wrapped


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise GrantRefused(GrantProblem.BAD_REQUEST, "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise GrantRefused(GrantProblem.BAD_REQUEST, "body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str, kind: type, *, required: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise GrantRefused(GrantProblem.BAD_REQUEST, f"field {name!r} is required")
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise GrantRefused(GrantProblem.BAD_REQUEST, f"field {name!r} must be a {kind.__name__}")
    return value


def _add_grant_routes(app: web.Application, desk: GrantDesk) -> None:
    async def listing(request: web.Request) -> list[dict[str, Any]]:
        return [_grant_json(g) for g in desk.known(request.query.get("status"))]

    async def one(request: web.Request) -> dict[str, Any]:
        return _grant_json(desk.get(request.match_info["grant_id"]))

    async def create(request: web.Request) -> dict[str, Any]:
        body = await _body(request)
        items = _field(body, "items", list)
        if items is not None and not all(isinstance(i, str) for i in items):
            raise GrantRefused(
                GrantProblem.BAD_REQUEST, "field 'items' must be a list of item names"
            )
        grant = await desk.request(
            _field(body, "resource", str, required=True),
            _field(body, "consumer_dept", str, required=True),
            items,
            _field(body, "note", str) or "",
        )
        return _grant_json(grant)

    def deciding(status: GrantStatus) -> Callable[[web.Request], Awaitable[dict[str, Any]]]:
        async def decide(request: web.Request) -> dict[str, Any]:
            body = await _body(request)
            validity = _field(body, "validity_days", int)
            grant = await desk.decide(
                request.match_info["grant_id"], status, _field(body, "note", str) or "", validity
            )
            return _grant_json(grant)

        return decide

    app.router.add_get("/grants", _errors_as_json(listing))
    app.router.add_post("/grants", _errors_as_json(create))
    app.router.add_get("/grants/{grant_id}", _errors_as_json(one))
    for action, status in (
        ("approve", GrantStatus.APPROVED), ("reject", GrantStatus.REJECTED),
        ("revoke", GrantStatus.REVOKED),
    ):  # fmt: skip
        app.router.add_post(f"/grants/{{grant_id}}/{action}", _errors_as_json(deciding(status)))


async def start_admin(
    app: web.Application, host: str, port: int, *, tls: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on host:port (0 picks a free port), over HTTPS with ``tls``.

    Return the runner and the bound port.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    await site.start()
    return runner, int(runner.addresses[0][1])
