"""Real Kafka for the integration tests: three single-node KRaft clusters for the whole session.

The clusters (province, city, county) start once, on free loopback ports, from the jars that
deploy/local fetches. Tests isolate themselves by topic prefix and node id, never by order.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from node.app import Running, run_node
from node.config import NodeConfig, parse_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "local"))
import localkafka  # lives in deploy/local, not in the package

READY_TIMEOUT_S = 60.0


def free_port() -> int:
    """Return a loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start the province, city and county clusters; yield their bootstrap addresses by name."""
    localkafka.ensure_jars()
    specs = [
        localkafka.ClusterSpec(name=name, port=free_port(), controller_port=free_port())
        for name in ("province", "city", "county")
    ]
    started = localkafka.start_clusters(specs, tmp_path_factory.mktemp("kafka"))
    try:
        yield {cluster.spec.name: cluster.bootstrap for cluster in started}
    finally:
        localkafka.stop_clusters(started)


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


def node_config(
    region: str,
    level: str,
    local: str,
    prefix: str,
    *,
    parent: tuple[str, str, str] | None = None,
    children: tuple[str, ...] = (),
    security: tuple[dict[str, Any], dict[str, Any]] | None = None,
    **sections: Any,
) -> NodeConfig:
    """Build a checked config; ``parent`` is (bootstrap, region, topic prefix).

    ``security`` holds the ``[local.security]`` and ``[parent.security]`` tables (empty: none).
    """
    data: dict[str, Any] = {
        "node": {
            "id": f"{prefix}-{region}",
            "level": level,
            "region": region,
            "children": list(children),
        },
        "local": {"bootstrap": local, "topic_prefix": prefix},
        "topics": {"partitions": 1},
        "flow": {"fetch_timeout_ms": 100, "retry_backoff_s": 0.2, "shutdown_timeout_s": 20},
        "admin": {"port": 0},
        "log": {"format": "json", "level": "warning"},
    }
    if parent is not None:
        bootstrap, parent_region, parent_prefix = parent
        data["parent"] = {
            "bootstrap": bootstrap,
            "region": parent_region,
            "topic_prefix": parent_prefix,
        }
    for link, table in zip(("local", "parent"), security or (), strict=False):
        if table and link in data:
            data[link]["security"] = table
    for name, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(name, {}).update(values)
        else:
            data[name] = values
    return parse_config(data)


@dataclass
class RunningNode:
    """A node running in the test's event loop."""

    config: NodeConfig
    registry: CollectorRegistry
    admin_port: int
    stop_event: asyncio.Event
    task: asyncio.Task[None]

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Soft-stop the node and wait for it (raises if it failed)."""
        self.stop_event.set()
        await asyncio.wait_for(self.task, timeout_s)

    def metric(self, name: str, **labels: str) -> float:
        """Read one sample from the node's registry (0 if absent)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    async def settled(
        self, name: str, want: float, timeout_s: float = 10.0, **labels: str
    ) -> float:
        """Read a counter once it reaches ``want`` or ``timeout_s`` passed; the caller asserts.

        Counters move when a batch is committed, a moment after its records are readable.
        """
        for _ in range(int(timeout_s / 0.05)):
            if self.metric(name, **labels) == want:
                break
            await asyncio.sleep(0.05)
        return self.metric(name, **labels)


async def start_node(config: NodeConfig) -> RunningNode:
    """Start a node and wait until /healthz says every link is up."""
    registry = CollectorRegistry()
    stop = asyncio.Event()
    running: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_node(config, stop, registry=registry, on_running=running.set_result)
    )
    waiting: list[asyncio.Future[Any]] = [running, task]
    done, _ = await asyncio.wait(
        waiting, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
    )
    if task in done:
        task.result()
    if running not in done:
        task.cancel()
        raise TimeoutError(f"node {config.node_id} did not start in {READY_TIMEOUT_S} s")
    node = RunningNode(config, registry, running.result().admin_port, stop, task)
    await wait_healthy(node)
    return node


async def wait_healthy(node: RunningNode) -> None:
    """Poll /healthz until 200, for at most READY_TIMEOUT_S."""
    url = f"http://127.0.0.1:{node.admin_port}/healthz"
    async with aiohttp.ClientSession() as session:
        for _ in range(int(READY_TIMEOUT_S / 0.1)):
            if node.task.done():
                node.task.result()
            async with session.get(url) as response:
                if response.status == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"node {node.config.node_id} never became healthy")


@pytest.fixture
async def nodes() -> AsyncIterator[Callable[[NodeConfig], Any]]:
    """Start nodes by awaiting ``nodes(config)``; all are stopped after the test."""
    started: list[RunningNode] = []

    async def start(config: NodeConfig) -> RunningNode:
        node = await start_node(config)
        started.append(node)
        return node

    yield start
    for node in started:
        if not node.task.done():
            await node.stop()
        with contextlib.suppress(asyncio.CancelledError):
            node.task.result()
