"""The admin HTTP server: ``/metrics`` for Prometheus and ``/healthz`` for orchestrators."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

LinkStates = Callable[[], Mapping[str, bool]]
"""Returns, per link, whether it is started and currently delivering."""


def admin_app(
    registry: CollectorRegistry, link_states: LinkStates, node_id: str
) -> web.Application:
    """Build the admin application."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        states = dict(link_states())
        healthy = bool(states) and all(states.values())
        return web.json_response(
            {"node": node_id, "healthy": healthy, "links": states}, status=200 if healthy else 503
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def start_admin(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on host:port (0 picks a free port); return the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, int(runner.addresses[0][1])
