"""The composition root: the only place that builds objects from configuration.

``run_node`` owns one TaskGroup with every loop. When ``stop`` is set it asks each link to finish
its batch and commit (soft stop), cancels whatever still runs after ``shutdown_timeout_s`` (hard
stop), then flushes the producers and closes the admin server.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from node.catalog_files import load_catalog, packaged_catalog_dir
from node.codec import SchemaSet, packaged_schema_dir
from node.config import NodeConfig
from node.core.catalog import Catalog
from node.core.grants import GrantBook
from node.core.policy import Policy, PolicySnapshot
from node.core.routing import Arrival, Router
from node.errors import ConfigError
from node.grant_desk import GrantDesk
from node.kafka.bridge import Destinations, Link
from node.kafka.grants import GrantStore, relays
from node.kafka.sink import Sink
from node.kafka.source import Source
from node.kafka.topics import TopicNames, ensure_topics
from node.ops.http import admin_app, start_admin
from node.ops.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Running:
    """What a started node tells its caller (tests, the CLI)."""

    admin_port: int


def load_schemas(config: NodeConfig) -> SchemaSet:
    """Parse the resource schemas once (raises SchemaError)."""
    return SchemaSet.load(config.schema_dir or packaged_schema_dir())


def load_node_catalog(config: NodeConfig, schemas: SchemaSet) -> Catalog:
    """Read and check the catalog, and the departments' subscriptions against it.

    Raises CatalogError for catalog problems, ConfigError for an unknown subscription.
    """
    catalog = load_catalog(config.catalog_dir or packaged_catalog_dir(), schemas)
    for index, department in enumerate(config.departments):
        for code in sorted(department.subscriptions):
            if catalog.get(code) is None:
                raise ConfigError(f"departments[{index}].subscribe", f"unknown resource {code!r}")
    return catalog


async def run_node(
    config: NodeConfig,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry | None = None,
    on_running: Callable[[Running], None] | None = None,
) -> None:
    """Run the node until ``stop`` is set; raise if a loop fails for good."""
    log = structlog.get_logger("node").bind(node=config.node_id, region=config.topology.region)
    schemas = load_schemas(config)
    catalog = load_node_catalog(config, schemas)
    policy = Policy(PolicySnapshot(catalog, config.negative, config.clearance, config.departments))
    registry = registry or CollectorRegistry()
    local_topics = TopicNames(config.local.topic_prefix)
    parent_topics = TopicNames(config.parent.cluster.topic_prefix) if config.parent else None
    await _ensure_topics(config, local_topics, parent_topics)

    batch_bytes = config.flow.batch_bytes
    local_sink = Sink(config.local.bootstrap, f"{config.node_id}.local", batch_bytes=batch_bytes)
    parent_sink = (
        Sink(config.parent.cluster.bootstrap, f"{config.node_id}.parent", batch_bytes=batch_bytes)
        if config.parent
        else None
    )
    destinations = Destinations(local_sink, local_topics, parent_sink, parent_topics)
    router = Router(config.topology)
    link_names = ["local", "parent"] if config.parent else ["local"]
    metrics = Metrics(registry, link_names)
    flow = config.flow

    def link(name: str, bootstrap: str, topic: str, arrival: Arrival) -> Link:
        group = f"exchange-node.{config.node_id}.{name}"
        source = Source(
            bootstrap,
            topic,
            group,
            max_batch=flow.max_batch,
            fetch_timeout_ms=flow.fetch_timeout_ms,
        )
        return Link(
            name, source, arrival, router, policy, destinations, metrics, schemas=schemas,
            validate_ingress=flow.validate_ingress, retry_backoff_s=flow.retry_backoff_s,
            max_in_flight=flow.max_in_flight,
        )  # fmt: skip

    links = [link("local", config.local.bootstrap, local_topics.outbox, Arrival.FROM_BELOW)]
    if config.parent and parent_topics:
        down = parent_topics.down(config.topology.region)
        links.append(link("parent", config.parent.cluster.bootstrap, down, Arrival.FROM_ABOVE))

    def use_grants(book: GrantBook) -> None:
        policy.swap(dataclasses.replace(policy.snapshot, grants=book))

    store = GrantStore(
        config.local.bootstrap, local_topics.grants, use_grants,
        max_staleness_s=config.grants.max_staleness_s,
    )  # fmt: skip
    loops: list[_Loop] = [*links, store]
    if config.parent and parent_topics and parent_sink:
        loops += relays(
            config.topology, config.local.bootstrap, local_topics.grants,
            config.parent.cluster.bootstrap, parent_topics.grants, local_sink, parent_sink,
            f"exchange-node.{config.node_id}",
        )  # fmt: skip
    desk = GrantDesk(
        config.topology.region, catalog, config.departments, lambda: store.grants, local_sink,
        local_topics.grants, default_validity_days=config.grants.default_validity_days,
    )  # fmt: skip

    def states() -> dict[str, bool]:
        return {**{ln.name: ln.started and ln.up for ln in links}, "grants": store.fresh}

    app = admin_app(registry, states, config.node_id, desk)
    runner: web.AppRunner | None = None
    sinks = [sink for sink in (local_sink, parent_sink) if sink is not None]
    try:
        for sink in sinks:
            await sink.start()
        runner, port = await start_admin(app, config.admin.host, config.admin.port)
        log.info("node_started", admin_port=port, links=link_names, catalog=len(catalog))
        if on_running is not None:
            on_running(Running(port))
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(loop.run()) for loop in loops]
            group.create_task(_stop_when_asked(stop, loops, tasks, flow.shutdown_timeout_s, log))
    finally:
        for sink in sinks:
            await sink.stop()
        if runner is not None:
            await runner.cleanup()
        log.info("node_stopped")


class _Loop(Protocol):
    """A long-running loop the supervisor owns."""

    def request_stop(self) -> None: ...

    async def run(self) -> None: ...


async def _stop_when_asked(
    stop: asyncio.Event,
    loops: list[_Loop],
    tasks: list[asyncio.Task[None]],
    deadline_s: float,
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """Wait for ``stop`` or a loop ending; then soft-stop the loops, hard-stop the late ones."""
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    log.info("node_stopping", deadline_s=deadline_s)
    for loop in loops:
        loop.request_stop()
    _, late = await asyncio.wait(tasks, timeout=deadline_s)
    for task in late:
        log.warning("hard_stop", task=task.get_name())
        task.cancel()


async def _ensure_topics(config: NodeConfig, local: TopicNames, parent: TopicNames | None) -> None:
    """Create the topics this node reads and writes, where missing (if configured to)."""
    if not config.topics.create:
        return
    settings = (config.topics.partitions, config.topics.replication_factor)
    names = [local.outbox, local.inbox, local.refused]
    names += [local.down(child) for child in config.topology.children]
    names += [local.deliver(department.code) for department in config.departments]
    await ensure_topics(config.local.bootstrap, names, *settings)
    compacted = {"cleanup.policy": "compact"}
    await ensure_topics(config.local.bootstrap, [local.grants], *settings, compacted)
    if config.parent and parent:
        await ensure_topics(config.parent.cluster.bootstrap, [parent.grants], *settings, compacted)
    if config.parent and parent:
        upstream = [parent.outbox, parent.down(config.topology.region)]
        await ensure_topics(config.parent.cluster.bootstrap, upstream, *settings)
