"""A real Prometheus scrapes a running cascade and evaluates the committed alert rules.

Province 410000, city 410100 and county 410102 run in the test's event loop; a second county,
410103, runs beside them with its parent pointing where nothing listens, so its records can never
leave. Prometheus (the Debian package, ``make debs``) scrapes every node each second and loads
``deploy/monitoring/alerts.yml`` with only its ``for:`` durations shortened, so each expression is
checked as committed. What it reports is compared with what the nodes did: counts, a lag,
heartbeats, completeness and the alerts that fire when a node goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from department_client import Published, publish_to_outboxes, read_topic
from prometheus_client import CollectorRegistry
from sample_records import LEGAL_ENTITY, LICENCE, PERSON, sample

from node.app import Running, run_node
from node.codec import load_schemas, packaged_schema_dir
from node.config import NodeConfig
from node.kafka.topics import TopicNames
from tests.integration.conftest import READY_TIMEOUT_S, RunningNode, free_port, node_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PROMETHEUS = Path("/usr/bin/prometheus")
ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "alerts.yml"
SCHEMAS = load_schemas(packaged_schema_dir())
PROVINCE, CITY, COUNTY, STUCK = "410000", "410100", "410102", "410103"
HEARTBEAT_S = 0.5
MONITORING = {
    "heartbeat_s": HEARTBEAT_S,
    "completeness_bucket_s": 2,
    "completeness_buckets": 10,
    "completeness_settle_s": 3,
}
RECORDS = 40
"""Records the county sends up to the province."""
STUCK_RECORDS = 25
"""Records published at the stuck county, which can never deliver them."""
WAIT_S = 60.0
READY_S = 30.0
STOP_S = 10.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One element of an instant vector."""

    labels: dict[str, str]
    value: float


class Prometheus:
    """The test's Prometheus: its HTTP API, and the tail of its log for failure messages."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._session: aiohttp.ClientSession | None = None

    def tail(self, lines: int = 30) -> str:
        """Return the last lines of Prometheus' output."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def ready(self) -> None:
        """Wait until /-/ready answers 200, for at most READY_S; fail with the log's tail."""
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited with {self.process.returncode}:\n{self.tail()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with self.session.get(f"{self.url}/-/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
        pytest.fail(f"prometheus was not ready within {READY_S} s:\n{self.tail()}")

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session, created on first use inside the event loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

    async def _get(self, path: str, **params: str) -> Any:
        async with self.session.get(f"{self.url}{path}", params=params) as response:
            body = await response.json()
        assert body.get("status") == "success", f"{path} {params}: {body}\n{self.tail()}"
        return body["data"]

    async def query(self, promql: str) -> list[Sample]:
        """Evaluate ``promql`` now; return its instant vector."""
        data = await self._get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", f"{promql}: {data}"
        return [Sample(r["metric"], float(r["value"][1])) for r in data["result"]]

    async def alerts(self) -> list[dict[str, Any]]:
        """Return the alerts Prometheus holds (pending and firing)."""
        found: list[dict[str, Any]] = (await self._get("/api/v1/alerts"))["alerts"]
        return found

    async def until(
        self, promql: str, ok: Callable[[list[Sample]], bool], timeout_s: float = WAIT_S
    ) -> list[Sample]:
        """Evaluate ``promql`` every half second until ``ok`` holds or ``timeout_s`` passed.

        Returns the last result either way; the caller asserts.
        """
        deadline = time.monotonic() + timeout_s
        found = await self.query(promql)
        while not ok(found) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            found = await self.query(promql)
        return found

    async def firing(
        self, name: str, timeout_s: float = WAIT_S, **labels: str
    ) -> list[dict[str, Any]]:
        """Poll the alerts until ``name`` fires with ``labels``; return the last matching ones."""
        deadline = time.monotonic() + timeout_s
        while True:
            matching = [
                alert
                for alert in await self.alerts()
                if alert["labels"].get("alertname") == name
                and all(alert["labels"].get(k) == v for k, v in labels.items())
            ]
            if any(a["state"] == "firing" for a in matching) or time.monotonic() >= deadline:
                return matching
            await asyncio.sleep(0.5)


def shortened_rules(text: str) -> str:
    """Return the alert rules with every ``for:`` duration set to 2 s, nothing else changed."""
    shortened, count = re.subn(r"(?m)^(\s+for:\s*)\S+\s*$", r"\g<1>2s", text)
    assert count > 0
    assert shortened != text
    assert count == len(re.findall(r"(?m)^\s+for:", text))
    return shortened


@contextlib.contextmanager
def prometheus(tmp_path: Path, targets: list[str]) -> Iterator[Prometheus]:
    """Run Prometheus on loopback scraping ``targets``; stop it by its pid however the test ends."""
    if not PROMETHEUS.exists():
        pytest.fail(f"{PROMETHEUS} is missing: install it with `make debs` (Debian prometheus)")
    rules = tmp_path / "alerts.yml"
    rules.write_text(shortened_rules(ALERTS.read_text()))
    config = {  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "exchange-node", "static_configs": [{"targets": targets}]}],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(json.dumps(config, indent=2))
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 - a fixed binary with arguments built here
            [
                str(PROMETHEUS),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Prometheus(process, port, log)
    finally:
        process.terminate()
        try:
            process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_S)


@contextlib.asynccontextmanager
async def stuck_node(config: NodeConfig) -> AsyncIterator[int]:
    """Run a node that never becomes ready (its parent is unreachable); yield its admin port."""
    stop = asyncio.Event()
    running: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_node(config, stop, registry=CollectorRegistry(), on_running=running.set_result)
    )
    try:
        yield (await asyncio.wait_for(running, READY_TIMEOUT_S)).admin_port
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def records(source: str, target: str, count: int, seed: int) -> list[Published]:
    """``count`` sample records of mixed resources published at ``source``, created now."""
    schemas = (PERSON, LEGAL_ENTITY, LICENCE)
    return [
        sample(
            SCHEMAS, schemas[n % 3], source, target, seed=seed + n,
            created_ms=int(time.time() * 1000),
        )
        for n in range(count)
    ]  # fmt: skip


def instance(port: int) -> str:
    """The ``instance`` label Prometheus gives a node's admin address."""
    return f"127.0.0.1:{port}"


def value(found: list[Sample]) -> float | None:
    """The only sample's value, None when there is none."""
    return found[0].value if len(found) == 1 else None


async def cascade(clusters: dict[str, str], prefix: str, nodes: Any) -> list[RunningNode]:
    """Start province, city and county, with fast heartbeats and short completeness buckets."""
    return [
        await nodes(node_config(
            PROVINCE, "province", clusters["province"], prefix, children=(CITY,),
            monitoring=MONITORING,
        )),
        await nodes(node_config(
            CITY, "city", clusters["city"], prefix, parent=(clusters["province"], PROVINCE, prefix),
            children=(COUNTY,), monitoring=MONITORING,
        )),
        await nodes(node_config(
            COUNTY, "county", clusters["county"], prefix,
            parent=(clusters["city"], CITY, prefix), monitoring=MONITORING,
        )),
    ]  # fmt: skip


async def check_counts(prom: Prometheus, city: int, county: RunningNode) -> None:
    """The county's and the city's up counts in Prometheus equal the records sent."""
    up = 'exchange_records_out_total{{instance="{}",link="local",direction="up"}}'
    at_county = await prom.until(
        up.format(instance(county.admin_port)), lambda s: value(s) == RECORDS
    )
    assert value(at_county) == RECORDS, at_county
    assert county.metric("exchange_records_out_total", link="local", direction="up") == RECORDS
    at_city = await prom.until(up.format(instance(city)), lambda s: value(s) == RECORDS)
    assert value(at_city) == RECORDS, at_city
    rate = await prom.until(
        f'rate(exchange_records_in_total{{instance="{instance(city)}",link="local"}}[15s])',
        lambda s: (value(s) or 0) > 0,
    )
    assert (value(rate) or 0) > 0, rate  # heartbeats count too: see the peer count below
    from_county = await prom.query(
        f'exchange_peer_records_total{{instance="{instance(city)}",peer="{COUNTY}",way="in"}}'
    )
    assert value(from_county) == RECORDS, from_county


async def check_lag(prom: Prometheus, stuck: int) -> None:
    """The stuck county's lag is exactly what was published there, per partition; its parent link is down."""
    selector = f'{{instance="{instance(stuck)}",link="local"}}'
    total = await prom.until(
        f"sum(exchange_source_lag_records{selector})", lambda s: value(s) == STUCK_RECORDS
    )
    assert value(total) == STUCK_RECORDS, total
    per_partition = await prom.query(f"exchange_source_lag_records{selector}")
    assert [s.labels.get("partition") for s in per_partition] == ["0"], per_partition
    down = await prom.firing("ExchangeLinkDown", instance=instance(stuck), link="parent")
    assert [a["state"] for a in down] == ["firing"], down


async def check_completeness(prom: Prometheus, parent: int, child: str) -> None:
    """Once the child's buckets settled, its parent counts all it sent up, and never a gap.

    A bucket is compared only for a while (from ``settle_s`` after it ended until it leaves the
    kept window), so the counts are taken as their maximum over the test, as Prometheus kept them.
    """
    selector = f'{{instance="{instance(parent)}",child="{child}"}}'
    sent = await prom.until(
        f"max_over_time(exchange_completeness_sent_records{selector}[3m])",
        lambda s: value(s) == RECORDS,
    )
    assert value(sent) == RECORDS, sent
    received = await prom.query(
        f"max_over_time(exchange_completeness_received_records{selector}[3m])"
    )
    assert value(received) == RECORDS, received
    for edge in ("max", "min"):
        gap = await prom.query(f"{edge}_over_time(exchange_completeness_gap_records{selector}[3m])")
        assert value(gap) == 0, (edge, gap)


async def check_heartbeats(prom: Prometheus, city: int) -> None:
    """The city hears its county every half second: a young last heartbeat, a growing count."""
    selector = f'{{instance="{instance(city)}",peer="{COUNTY}",role="child"}}'
    age = await prom.until(
        f"exchange_heartbeat_age_seconds{selector}", lambda s: (value(s) or 99) < 3 * HEARTBEAT_S
    )
    assert (value(age) or 99) < 3 * HEARTBEAT_S, age
    before = value(await prom.query(f"exchange_heartbeats_received{selector}")) or 0
    assert before > 0
    after = await prom.until(
        f"exchange_heartbeats_received{selector}", lambda s: (value(s) or 0) > before
    )
    assert (value(after) or 0) > before, (before, after)


async def test_prometheus_sees_what_the_cascade_did(
    clusters: dict[str, str], prefix: str, nodes: Any, tmp_path: Path
) -> None:
    """Prometheus, scraping a real cascade, shows its counts, lag, heartbeats and completeness, and its alerts fire."""
    province, city, county = await cascade(clusters, prefix, nodes)
    stuck_prefix = f"{prefix}-b"
    nowhere = f"127.0.0.1:{free_port()}"
    stuck_config = node_config(
        STUCK, "county", clusters["county"], stuck_prefix, parent=(nowhere, CITY, prefix),
        flow={"delivery_timeout_s": 2, "max_backoff_s": 1, "shutdown_timeout_s": 8},
        monitoring=MONITORING,
    )  # fmt: skip
    async with stuck_node(stuck_config) as stuck:
        ports = [province.admin_port, city.admin_port, county.admin_port, stuck]
        with prometheus(tmp_path, [instance(port) for port in ports]) as prom:
            try:
                await prom.ready()
                scraped = await prom.until(
                    'up{job="exchange-node"} == 1', lambda s: len(s) == len(ports)
                )
                assert len(scraped) == len(ports), f"{scraped}\n{prom.tail()}"

                sent = records(COUNTY, f"region:{PROVINCE}", RECORDS, seed=100)
                await publish_to_outboxes(clusters["county"], prefix, sent)
                await publish_to_outboxes(
                    clusters["county"], stuck_prefix,
                    records(STUCK, f"region:{PROVINCE}", STUCK_RECORDS, seed=500),
                )  # fmt: skip
                ids = {p.envelope.record_id for p in sent}
                arrived = await read_topic(
                    clusters["province"], TopicNames(prefix).inbox,
                    until=lambda got: ids <= {r.record_id for r in got}, timeout_s=WAIT_S,
                )  # fmt: skip
                assert sorted(r.record_id for r in arrived) == sorted(ids)

                await check_counts(prom, city.admin_port, county)
                await check_lag(prom, stuck)
                await check_heartbeats(prom, city.admin_port)
                await check_completeness(prom, city.admin_port, COUNTY)
                await check_completeness(prom, province.admin_port, CITY)
                healthy = {instance(p) for p in ports[:3]}
                alarms = [
                    a
                    for a in await prom.alerts()
                    if a["labels"].get("instance") in healthy and a["state"] == "firing"
                ]
                assert alarms == [], alarms

                await county.stop()
                stale = await prom.firing(
                    "ExchangeHeartbeatStale", instance=instance(city.admin_port), peer=COUNTY,
                    role="child",
                )  # fmt: skip
                assert [a["state"] for a in stale] == ["firing"], stale
                gone = await prom.firing("ExchangeNodeDown", instance=instance(county.admin_port))
                assert [a["state"] for a in gone] == ["firing"], gone
            finally:
                await prom.close()
