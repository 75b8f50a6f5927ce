"""The composition root: the only place that builds objects from configuration.

``run_node`` owns one TaskGroup in which the supervisor keeps every loop running (each link, the
grant store, each grant relay). Nothing needs a cluster to start: a loop whose cluster is
unreachable is down, says why, and retries until it connects. When ``stop`` is set every loop is
asked to finish and commit (soft stop); whatever still runs near ``shutdown_timeout_s`` is cut
(hard stop, each one named in the log), then the producers are closed and the admin server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe

import structlog
from prometheus_client import CollectorRegistry

from node import __version__, heap
from node.catalog_files import load_catalog, packaged_catalog_dir
from node.codec import SchemaSet, load_schemas, packaged_schema_dir
from node.config import NodeConfig
from node.core.catalog import Catalog
from node.core.feedback import FeedbackBook
from node.core.grants import Grant, GrantBook, handed_down_refusal, handed_up_refusal
from node.core.heartbeat import Beat
from node.core.peers import CHILD, PARENT, PeerWatch
from node.core.policy import Policy, PolicySnapshot
from node.core.provenance import Checker, Provenance, Stamper
from node.core.provisioning import STATE_CONFIGS, audit_topic
from node.core.quality_ledger import QualityKey, QualityLedger
from node.core.routing import Arrival, Router
from node.core.stats import StatsLedger
from node.core.trust import TrustedKey, TrustStore
from node.core.writers import Writers
from node.errors import ConfigError, NodeError
from node.grant_desk import GrantDesk
from node.kafka.accounting import Watch
from node.kafka.audit import AuditQueue, AuditWriter, read_chain, read_tip
from node.kafka.bridge import Link
from node.kafka.connection import PROBE_TIMEOUT_S, Connection, check_access
from node.kafka.deliveries import KafkaDeliveryReader
from node.kafka.feedback import FeedbackStore
from node.kafka.grants import GrantRelay, GrantStore
from node.kafka.heartbeat import HeartbeatSender
from node.kafka.messages import Destinations
from node.kafka.provision import layout_of
from node.kafka.sink import KafkaSink
from node.kafka.source import KafkaSource
from node.kafka.stats import StatsWriter
from node.kafka.topics import TopicLimits, TopicNames, ensure_topics, level_writers
from node.kafka.trust import AfterTrust, TrustKeeper, TrustLocal, TrustUp
from node.ops.access import Access, server_tls
from node.ops.audit_routes import AuditSource
from node.ops.cascade import CascadeView, link_lags
from node.ops.events import (
    AdminApiOpen,
    ConfigLoaded,
    GapDetected,
    HardStop,
    LoopDown,
    LoopEnded,
    NodeStarted,
    NodeStopped,
    NodeStopping,
    PeerHeard,
    PeerSilent,
    emit,
)
from node.ops.gateway import Gateway
from node.ops.http import admin_app, start_admin
from node.ops.metrics import Metrics, gateway_counter, quality_counter, resource_labels
from node.signing import load_signer, verifiers
from node.supervisor import Health, Loop, LoopState, Supervisor
from node.transport import Gap
from node.workers import (
    WORKER_LOOPS,
    WorkerProcess,
    WorkerReporter,
    WorkerSide,
    link_counts,
    serve_worker,
)


@dataclass(frozen=True, slots=True)
class Running:
    """What a started node tells its caller (tests, the CLI)."""

    admin_port: int


@dataclass(frozen=True, slots=True)
class Reference:
    """What a node reads once at start-up besides its config: the schemas and the catalog."""

    schemas: SchemaSet
    catalog: Catalog


def load_reference(config: NodeConfig) -> Reference:
    """Parse the schemas and read and check the catalog and the subscriptions against it.

    Raises SchemaError, CatalogError for catalog problems, ConfigError for an unknown
    subscription.
    """
    schemas = load_schemas(config.schema_dir or packaged_schema_dir())
    catalog = load_catalog(config.catalog_dir or packaged_catalog_dir(), schemas)
    for index, department in enumerate(config.departments):
        for code in sorted(department.subscriptions):
            if catalog.get(code) is None:
                raise ConfigError(f"departments[{index}].subscribe", f"unknown resource {code!r}")
    return Reference(schemas, catalog)


async def run_node(  # noqa: PLR0912, PLR0915 - the composition root wires every part here
    config: NodeConfig,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry | None = None,
    on_running: Callable[[Running], None] | None = None,
    reference: Reference | None = None,
    worker: WorkerSide | None = None,
) -> None:
    """Run the node until ``stop`` is set; raise only if a loop fails for good (config, bug).

    ``reference`` is loaded from the config when not given. ``worker``: run as one of the
    node's worker processes (``node/workers.py``): only the links and what they read, every
    committed batch handed to the lead, no admin server.
    """
    log = structlog.get_logger("node").bind(node=config.node_id, region=config.topology.region)
    if worker is not None:
        log = log.bind(worker=worker.index)
    reference = reference or load_reference(config)
    schemas, catalog = reference.schemas, reference.catalog
    admin_tls = server_tls(config.admin.tls)  # an unusable certificate or key stops start-up here
    topology = config.topology
    emit(log, ConfigLoaded(
        config.node_id, topology.region, topology.level, topology.parent, topology.children,
        len(config.departments), len(catalog),
    ))  # fmt: skip
    policy = Policy(PolicySnapshot(catalog, config.negative, config.clearance, config.departments))
    registry = registry or CollectorRegistry()
    flow = config.flow
    local_topics = TopicNames(config.local.topic_prefix)
    parent_topics = TopicNames(config.parent.cluster.topic_prefix) if config.parent else None
    local_bootstrap = Connection.to(config.local, "local")
    parent_bootstrap = Connection.to(config.parent.cluster, "parent") if config.parent else None
    probe_s = min(PROBE_TIMEOUT_S, flow.delivery_timeout_s)  # a refused link stops start-up here
    clusters = [c for c in (local_bootstrap, parent_bootstrap) if c is not None]
    if worker is None:  # the lead checked before starting it
        await asyncio.gather(*(check_access(cluster, timeout_s=probe_s) for cluster in clusters))
    link_names = ["local", "parent"] if config.parent else ["local"]
    watching = config.monitoring
    labels = resource_labels(catalog, watching.resource_label_cap)
    neighbours = [topology.region, *topology.children]
    if topology.parent is not None:
        neighbours.append(topology.parent)
    loop_names = [*link_names, "grants", "stats", "quality", "feedback"]
    loop_names += ["heartbeat-down", "grants-from"] * bool(topology.children)
    loop_names += ["trust", *["trust-up"] * bool(config.parent)] * bool(config.provenance)
    loop_names += ["grants-up", "grants-down", "heartbeat-up"] * bool(config.parent)
    loop_names += ["audit"] * config.audit.enabled
    loop_names += [f"worker-{index}" for index in range(1, flow.workers)] * (worker is None)
    metrics = Metrics(
        registry, link_names, loop_names, peers=neighbours,
        resource_labels=sorted(set(labels.values())),
    )  # fmt: skip
    metrics.info.labels(
        __version__, config.node_id, topology.region, topology.level, topology.parent or "",
        ",".join(topology.children),
    ).set(1)  # fmt: skip
    peers = PeerWatch(
        topology, int(time.time() * 1000), watching.heartbeat_s,
        bucket_s=watching.completeness_bucket_s, keep=watching.completeness_buckets,
        settle_s=watching.completeness_settle_s,
    )  # fmt: skip
    run_id = uuid.uuid4().hex[:12]
    ledger = StatsLedger(config.node_id, run_id, watching.stats_bucket_s)
    quality = QualityLedger(config.node_id, run_id, watching.stats_bucket_s)
    on_quality = _quality_watch(catalog, topology.region, labels, metrics, quality)
    feedback = FeedbackBook()
    reporters = feedback_departments(config, catalog)
    trail = config.audit
    audit = AuditQueue(
        trail.max_pending, fail_closed=trail.fail_closed, log=log,
        on_dropped=metrics.audit_dropped.inc, on_holding=metrics.audit_holding.set,
    )  # fmt: skip
    metrics.audit_pending.set_function(lambda: len(audit))
    watch = Watch(
        peers, lambda code: labels.get(code, "unknown"), ledger.add, feedback, reporters,
        on_quality=on_quality, on_audit=audit.add if trail.enabled else None,
        gate=audit if trail.enabled and trail.fail_closed else None,
        hand_on=worker.committed if worker else None,
    )  # fmt: skip
    health = Health()
    health.watch(lambda name, state: _report(metrics, log, link_names, name, state))
    if worker is not None:
        health.watch(worker.state)
    router = Router(config.topology)
    provision = _Provisioner(config, local_topics, parent_topics, reporters)
    limits = {local_bootstrap: TopicLimits(local_bootstrap, deadline_s=flow.delivery_timeout_s)}
    if parent_bootstrap is not None:
        limits[parent_bootstrap] = TopicLimits(parent_bootstrap, deadline_s=flow.delivery_timeout_s)
    sinks: list[KafkaSink] = []

    def sink(bootstrap: Connection, name: str) -> KafkaSink:
        made = KafkaSink(
            bootstrap, f"{config.node_id}.{name}", limits[bootstrap],
            batch_bytes=flow.batch_bytes, deadline_s=flow.delivery_timeout_s,
        )  # fmt: skip
        sinks.append(made)
        return made

    def source(
        bootstrap: Connection, topic: str | list[str], name: str, *, max_batch: int
    ) -> KafkaSource:
        return KafkaSource(
            bootstrap, topic, f"exchange-node.{config.node_id}.{name}", max_batch=max_batch,
            fetch_timeout_ms=flow.fetch_timeout_ms, deadline_s=flow.delivery_timeout_s,
            on_gap=lambda gap: _report_gap(metrics, log, name, gap), resume_at=flow.on_gap,
            fetch_max_bytes=min(32 * 1024 * 1024, flow.max_in_flight_bytes // 2),
            partitions=config.topics.partitions,
        )  # fmt: skip

    def link(
        name: str, topic: str | list[str], arrival: Arrival, peer: str, writers: Writers | None
    ) -> Loop:
        up = sink(parent_bootstrap, f"{name}.up") if parent_bootstrap and name == "local" else None
        destinations = Destinations(
            sink(local_bootstrap, name), local_topics, up, parent_topics, topology.region
        )
        bootstrap = local_bootstrap if name == "local" else parent_bootstrap
        assert bootstrap is not None
        made = Link(
            name, source(bootstrap, topic, name, max_batch=flow.max_batch), arrival, router,
            policy, destinations, metrics, health, schemas=schemas, settings=flow, peer=peer,
            log=log, watch=watch, writers=writers, provenance=provenance,
            await_keys=keeper.key_wait(check_all=arrival is Arrival.FROM_ABOVE) if keeper else None,
        )  # fmt: skip
        links[name] = made
        return provision.loop_for(made if keeper is None else AfterTrust(made, keeper.ready))

    started_ms = worker.started_ms if worker else int(time.time() * 1000)
    provenance, keeper = _provenance(config, log, started_ms)

    links: dict[str, Link] = {}
    writers = level_writers(local_topics, topology.region, reporters, topology.children)
    loops: list[Loop] = [
        link("local", writers.topics, Arrival.FROM_BELOW, topology.region, writers)
    ]
    relays: list[GrantRelay] = []
    if config.parent and parent_topics and parent_bootstrap:
        down = parent_topics.down(config.topology.region)
        loops.append(link("parent", down, Arrival.FROM_ABOVE, config.parent.region, None))
        relays = _relays(config, local_topics, parent_topics, health, metrics, sink, source, log)
    relays += _relays_from_children(
        config, catalog, local_topics, health, metrics, sink, source, log
    )
    loops += map(provision.loop_for, _trust_loops(
        keeper, health, sink, (local_bootstrap, local_topics), (parent_bootstrap, parent_topics),
        deadline_s=flow.delivery_timeout_s,
    ))  # fmt: skip
    view = CascadeView(
        config.node_id, topology, health, links, peers, interval_s=watching.heartbeat_s,
        bucket_s=watching.completeness_bucket_s, clock=time.time,
    )  # fmt: skip
    metrics.readings.lag = link_lags(links)
    metrics.readings.heartbeats = lambda: peers.readings(int(time.time() * 1000))
    metrics.readings.completeness = lambda: peers.completeness(int(time.time() * 1000))

    def heartbeat(
        way: str, bootstrap: Connection, topics: list[str], beat: Callable[[], Beat]
    ) -> Loop:
        counted = metrics.heartbeats_sent.labels(way)
        role = CHILD if way == "down" else PARENT  # whom this loop's neighbours are

        def tell_silences() -> None:
            for reading, silent in peers.silence_changes(int(time.time() * 1000), role):
                event = PeerSilent(reading.peer, role, reading.age_s) if silent else None
                emit(log, event or PeerHeard(reading.peer, role))

        return provision.loop_for(HeartbeatSender(
            f"heartbeat-{way}", sink(bootstrap, f"heartbeat.{way}"), topics, beat, health,
            interval_s=watching.heartbeat_s, deadline_s=flow.delivery_timeout_s,
            on_sent=counted.inc, log=log, after_beat=tell_silences,
        ))  # fmt: skip

    if topology.children:
        downs = [local_topics.down(child) for child in topology.children]
        loops.append(heartbeat("down", local_bootstrap, downs, view.beat_down))
    if parent_topics and parent_bootstrap:
        hand_up = [parent_topics.up(topology.region)]
        loops.append(heartbeat("up", parent_bootstrap, hand_up, view.beat_up))
    for name, pending, topic in (
        ("stats", ledger, local_topics.stats), ("quality", quality, local_topics.quality)
    ):  # fmt: skip
        loops.append(provision.loop_for(StatsWriter(
            pending, sink(local_bootstrap, name), topic, health, flush_s=watching.stats_flush_s,
            deadline_s=flow.delivery_timeout_s, log=log, name=name,
        )))  # fmt: skip
    writer, audit_source = _audit_writer(
        config, audit, sink(local_bootstrap, "audit"), limits[local_bootstrap], health, metrics
    )
    loops += [_ProvisionedLoop(writer, provision.ensure_audit)] * trail.enabled

    def use_grants(book: GrantBook) -> None:
        policy.swap(dataclasses.replace(policy.snapshot, grants=book))

    current_relays = [relay for relay in relays if relay.name in ("grants-down", "grants-from")]
    store = GrantStore(
        local_bootstrap, local_topics.grants, use_grants, health,
        max_staleness_s=config.grants.max_staleness_s,
        relays=worker.relays if worker else current_relays,
        log=log,
    )  # fmt: skip
    loops += [provision.loop_for(store), *map(provision.loop_for, relays)]
    loops.append(provision.loop_for(
        FeedbackStore(local_bootstrap, local_topics.feedback, feedback, health)
    ))  # fmt: skip
    if worker is not None:
        kept = [loop for loop in loops if loop.name in WORKER_LOOPS]
        counts = lambda: link_counts(metrics, links)  # noqa: E731 - read at each report
        reporter = WorkerReporter(worker, link_lags(links), counts, health)
        try:
            await _run_loops(config, [*kept, reporter], health, stop, log)
        finally:
            await asyncio.gather(*(made.stop() for made in sinks))
        return
    loops += [
        WorkerProcess(
            index, config, health, apply=lambda name, summary: links[name].apply(summary),
            count=lambda counter, name, amount: getattr(metrics, counter).labels(name).inc(amount),
            lagging=functools.partial(_lag_elsewhere, links, index),
            relays=current_relays, started_ms=started_ms, target=run_worker, log=log,
        )
        for index in range(1, flow.workers)
    ]  # fmt: skip
    desk = GrantDesk(
        config.topology.region, catalog, config.departments, lambda: store.grants,
        sink(local_bootstrap, "grant-desk"), local_topics.grants,
        default_validity_days=config.grants.default_validity_days,
    )  # fmt: skip

    gateway = None
    if config.gateway.enabled:
        reader = KafkaDeliveryReader(
            local_bootstrap, f"{config.node_id}.gateway", deadline_s=flow.delivery_timeout_s
        )
        gateway = Gateway(
            config.gateway.clients, catalog, schemas, topology.region, local_topics,
            sink(local_bootstrap, "gateway"), reader, deadline_s=flow.delivery_timeout_s,
            on_answer=gateway_counter(metrics), feedback=feedback,
        )  # fmt: skip
    app = admin_app(
        registry, health, config.node_id, desk, page=view.document, gateway=gateway,
        feedback=feedback, access=Access.from_config(config.admin, log),
        audit=audit_source if trail.enabled else None,
    )  # fmt: skip
    runner, port = await start_admin(app, config.admin.host, config.admin.port, tls=admin_tls)
    if not config.admin.credentials:
        emit(log, AdminApiOpen(config.admin.host, port))
    try:
        emit(log, NodeStarted(port, tuple(loop.name for loop in loops)))
        if on_running is not None:
            on_running(Running(port))
        await _run_loops(config, loops, health, stop, log)
    finally:
        if gateway is not None:
            await gateway.close()
        await asyncio.gather(*(made.stop() for made in sinks))
        await runner.cleanup()
        emit(log, NodeStopped())


def _lag_elsewhere(
    links: Mapping[str, Link], worker: int, link: str, lags: Mapping[int, int] | None
) -> None:
    """Note what worker ``worker`` says of ``link``'s lag (None: it is gone)."""
    links[link].lag_elsewhere(worker, lags)


def run_worker(
    config: NodeConfig, index: int, pipe: Pipe, started_ms: int, relays: list[str]
) -> None:
    """Run worker process ``index`` until the lead stops it (``node/workers.py``)."""
    reference = load_reference(config)
    heap.settle()
    serve_worker(
        config, index, pipe, started_ms, relays, functools.partial(run_node, reference=reference)
    )


async def _run_loops(
    config: NodeConfig,
    loops: list[Loop],
    health: Health,
    stop: asyncio.Event,
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """Keep every loop running until ``stop``; raise if one ends without being asked to."""
    flow = config.flow
    stopping = asyncio.Event()
    supervisor = Supervisor(
        health, stopping, backoff_s=flow.retry_backoff_s, max_backoff_s=flow.max_backoff_s,
        log=log,
    )  # fmt: skip
    async with asyncio.TaskGroup() as group:
        tasks = {
            group.create_task(supervisor.keep_running(loop), name=loop.name): loop for loop in loops
        }
        group.create_task(_stop_when_asked(stop, stopping, tasks, flow.shutdown_timeout_s, log))
    if not stop.is_set():  # a loop ended although nobody asked: never exit as if all was well
        raise NodeError("a loop ended without being asked to stop (see loop_ended)")


Counts = Mapping[QualityKey, tuple[int, int]]


def _quality_watch(
    catalog: Catalog,
    region: str,
    labels: Mapping[str, str],
    metrics: Metrics,
    ledger: QualityLedger,
) -> Callable[[int, Counts, set[str]], None]:
    """Make what the links call with each batch's quality counts.

    It feeds the quality ledger and counters, and notes when each resource published here was
    last seen (read at scrape time for accessibility).
    """
    sources = {r.source_dept for r in map(catalog.get, catalog.codes()) if r is not None}
    count = quality_counter(metrics, lambda code: labels.get(code, "unknown"), sources)
    mine = {
        r.code: r.quality for r in map(catalog.get, catalog.codes())
        if r is not None and r.source_region == region and r.quality.publish_within_ms
    }  # fmt: skip
    started_ms = int(time.time() * 1000)
    last: dict[str, int] = {}

    def silence() -> list[tuple[str, float, float]]:
        now_ms = int(time.time() * 1000)
        return [
            (labels.get(code, "unknown"), (now_ms - last.get(code, started_ms)) / 1000,
             (rules.publish_within_ms or 0) / 1000)
            for code, rules in sorted(mine.items())
        ]  # fmt: skip

    metrics.readings.silence = silence

    def on_quality(
        now_ms: int, counts: Mapping[QualityKey, tuple[int, int]], seen: set[str]
    ) -> None:
        if counts:
            ledger.add(now_ms, counts)  # first: it checks the counts before the counters see them
            count(counts)
        for code in seen:
            last[code] = now_ms

    return on_quality


def feedback_departments(config: NodeConfig, catalog: Catalog) -> frozenset[str]:
    """Departments of this level with a feedback topic: sources here, consumers, gateway clients."""
    region = config.topology.region
    sources = {
        entry.source_dept
        for entry in map(catalog.get, catalog.codes())
        if entry is not None and entry.source_region == region
    }
    consumers = {department.code for department in config.departments}
    return frozenset(sources | consumers | {c.department for c in config.gateway.clients})


def _report(
    metrics: Metrics,
    log: structlog.typing.FilteringBoundLogger,
    links: list[str],
    name: str,
    state: LoopState,
) -> None:
    """Mirror a loop's state in the metrics (the links log their own transitions)."""
    metrics.loop_up.labels(name).set(1 if state.up else 0)
    if name in links:
        metrics.link_up.labels(name).set(1 if state.up else 0)
    elif not state.up and state.reason != "starting":
        emit(log, LoopDown(name, state.reason))


def _report_gap(
    metrics: Metrics, log: structlog.typing.FilteringBoundLogger, link: str, gap: Gap
) -> None:
    """Log and count records lost at a source before they were read."""
    lost = None if gap.last is None else gap.last - gap.first + 1
    metrics.gaps.labels(link).inc()
    if lost is not None:
        metrics.gap_records.labels(link).inc(lost)
    emit(log, GapDetected(
        link, gap.partition.topic, gap.partition.partition, gap.first, gap.last, lost,
        gap.resumed_at, gap.why,
    ))  # fmt: skip


def _audit_writer(
    config: NodeConfig,
    queue: AuditQueue,
    sink: KafkaSink,
    limits: TopicLimits,
    health: Health,
    metrics: Metrics,
) -> tuple[AuditWriter, AuditSource]:
    """Build the ``audit`` loop and what the HTTP routes read the chain through."""
    local = Connection.to(config.local, "local")
    topic = TopicNames(config.local.topic_prefix).audit(config.node_id)
    deadline_s = config.flow.delivery_timeout_s
    writer = AuditWriter(
        queue, sink, topic, lambda: read_tip(local, topic, deadline_s=deadline_s), health,
        node_id=config.node_id, entries_per_record=config.audit.entries_per_record,
        flush_s=config.audit.flush_s, deadline_s=deadline_s, on_written=metrics.audit_written.inc,
        on_rejected=limits.forget,
    )  # fmt: skip
    source = AuditSource(
        lambda: read_chain(local, topic, deadline_s=deadline_s), lambda: writer.tip
    )
    return writer, source


class _Provisioner:
    """Creates, where missing and if configured to, the topics each loop needs before it starts.

    Each loop provisions its own cluster's topics when it (re)starts, so a node starts while a
    cluster is unreachable and provisions once it can. State and trust topics get
    ``STATE_CONFIGS``, the audit topic ``audit_topic``'s spec: what ``topics plan`` wants.
    """

    def __init__(
        self,
        config: NodeConfig,
        local: TopicNames,
        parent: TopicNames | None,
        reporters: frozenset[str] = frozenset(),
    ) -> None:
        self._config = config
        self._done: set[tuple[str, str]] = set()
        region = config.topology.region
        writers = level_writers(local, config.topology.region, reporters, config.topology.children)
        plain = [*writers.topics, local.inbox, local.refused]
        plain += [local.down(child) for child in config.topology.children]
        plain += [local.deliver(department.code) for department in config.departments]
        plain += [local.feedback_for(department) for department in sorted(reporters)]
        downs = [local.down(child) for child in config.topology.children]
        self._needs: dict[str, list[tuple[str, list[str], bool]]] = {
            "local": [("local", plain, False), ("local", [local.feedback], True)],
            "feedback": [("local", [local.feedback], True)],
            "grants": [("local", [local.grants], True)],
            "grants-from": [("local", [*map(local.grants_from, config.topology.children)], True)],
            "trust": [
                ("local", [local.trust, *map(local.trust_from, config.topology.children)], True)
            ],
            "heartbeat-down": [("local", downs, False)],
            "stats": [("local", [local.stats], True)],
            "quality": [("local", [local.quality], True)],
        }
        if parent is not None:
            self._needs["parent"] = [("parent", [parent.up(region), parent.down(region)], False)]
            self._needs["heartbeat-up"] = [("parent", [parent.up(region)], False)]
            self._needs["grants-up"] = [("parent", [parent.grants_from(region)], True)]
            self._needs["grants-down"] = [("parent", [parent.grants], True)]
            self._needs["trust-up"] = [("parent", [parent.trust, parent.trust_from(region)], True)]

    async def ensure(self, name: str) -> None:
        """Create the topics loop ``name`` needs (once); raise TransportError on failure."""
        config = self._config
        if not config.topics.create:
            return
        for cluster, names, compacted in self._needs.get(name, []):
            missing = [n for n in names if (cluster, n) not in self._done]
            if not missing:
                continue
            bootstrap = (
                Connection.to(config.parent.cluster, "parent")
                if cluster == "parent" and config.parent
                else Connection.to(config.local, "local")
            )
            await ensure_topics(
                bootstrap, missing, config.topics.partitions, config.topics.replication_factor,
                dict(STATE_CONFIGS) if compacted else None,
            )  # fmt: skip
            self._done.update((cluster, n) for n in missing)

    async def ensure_audit(self) -> None:
        """Create the node's audit topic (once) as ``topics plan`` wants it (``audit_topic``)."""
        config = self._config
        spec = audit_topic(layout_of(config))
        if spec is None or not config.topics.create or ("local", spec.name) in self._done:
            return
        await ensure_topics(
            Connection.to(config.local, "local"), [spec.name], spec.partitions,
            spec.replication_factor, dict(spec.configs),
        )  # fmt: skip
        self._done.add(("local", spec.name))

    def loop_for(self, loop: Loop) -> Loop:
        """Make ``loop`` provision its topics each time it (re)starts."""
        return _ProvisionedLoop(loop, lambda: self.ensure(loop.name))


class _ProvisionedLoop:
    """A loop that provisions its topics before each run."""

    def __init__(self, loop: Loop, ensure: Callable[[], Awaitable[None]]) -> None:
        self.name = loop.name
        self._loop = loop
        self._ensure = ensure

    def request_stop(self) -> None:
        self._loop.request_stop()

    async def run(self) -> None:
        await self._ensure()
        await self._loop.run()


def _provenance(
    config: NodeConfig, log: structlog.typing.FilteringBoundLogger, now_ms: int
) -> tuple[Provenance | None, TrustKeeper | None]:
    """Load this node's key and make what signs, checks and keeps the trust store.

    The key is valid from ``now_ms``, the lead's start (its workers publish the same record).
    (None, None) without ``[provenance]``; a bad key is a ConfigError naming the field.
    """
    settings = config.provenance
    if settings is None:
        return None, None
    signer = load_signer(settings.key_file, settings.algorithm)
    own = TrustedKey(
        config.topology.region, signer.key_id, signer.algorithm, signer.public_key, now_ms,
        None, now_ms,
    )  # fmt: skip
    checker = Checker(
        TrustStore([own]), verifiers(), require=settings.require,
        cache_size=settings.verified_root_cache,
    )  # fmt: skip
    keeper = TrustKeeper(
        config.topology, own, checker.swap, grace_s=settings.rotation_grace_s, log=log
    )
    return Provenance(Stamper(signer), checker), keeper


def _trust_loops(
    keeper: TrustKeeper | None,
    health: Health,
    sink: Callable[[Connection, str], KafkaSink],
    local: tuple[Connection, TopicNames],
    parent: tuple[Connection | None, TopicNames | None],
    *,
    deadline_s: float,
) -> list[Loop]:
    """Make the loops that keep the trust store: ``trust``, and ``trust-up`` under a parent."""
    if keeper is None:
        return []
    made: list[Loop] = [
        TrustLocal(keeper, *local, sink(local[0], "trust"), health, deadline_s=deadline_s)
    ]
    bootstrap, topics = parent
    if bootstrap is not None and topics is not None:
        made.append(TrustUp(
            keeper, bootstrap, topics, sink(bootstrap, "trust-up"), health, deadline_s=deadline_s
        ))  # fmt: skip
    return made


def _relays(
    config: NodeConfig,
    local: TopicNames,
    parent: TopicNames,
    health: Health,
    metrics: Metrics,
    sink: Callable[[Connection, str], KafkaSink],
    source: Callable[..., KafkaSource],
    log: structlog.typing.FilteringBoundLogger,
) -> list[GrantRelay]:
    """Build the up and down grant relays of a node that has a parent."""
    assert config.parent is not None
    local_bootstrap = Connection.to(config.local, "local")
    parent_bootstrap = Connection.to(config.parent.cluster, "parent")
    topology = config.topology
    deadline = config.flow.delivery_timeout_s
    every = config.grants.max_staleness_s / 5
    refusals = sink(local_bootstrap, "grant-refusals")

    def mine(grant: Grant) -> bool:
        return topology.contains(grant.origin)

    up = GrantRelay(
        "grants-up", source(local_bootstrap, local.grants, "grants-up", max_batch=500),
        sink(parent_bootstrap, "grants-up"), parent.grants_from(topology.region), mine, refusals,
        local.refused, health, deadline_s=deadline, log=log,
        on_lag=metrics.relay_lag.labels("grants-up").set, check_every_s=every,
    )  # fmt: skip
    down = GrantRelay(
        "grants-down", source(parent_bootstrap, parent.grants, "grants-down", max_batch=500),
        sink(local_bootstrap, "grants-down"), local.grants, lambda grant: not mine(grant),
        refusals, local.refused, health, deadline_s=deadline, log=log,
        on_lag=metrics.relay_lag.labels("grants-down").set, check_every_s=every,
        check=lambda grant, topic, now_ms: handed_down_refusal(grant, now_ms),
    )  # fmt: skip
    return [up, down]


def _relays_from_children(
    config: NodeConfig,
    catalog: Catalog,
    local: TopicNames,
    health: Health,
    metrics: Metrics,
    sink: Callable[[Connection, str], KafkaSink],
    source: Callable[..., KafkaSource],
    log: structlog.typing.FilteringBoundLogger,
) -> list[GrantRelay]:
    """Build ``grants-from``: the children's hand-up topics into ``PREFIX.grants``, checked.

    From ``grants.from.CHILD`` only what CHILD's node may say is copied (``handed_up_refusal``);
    the rest goes to the refusal topic as ``forged``. None without children.
    """
    children = config.topology.children
    if not children:
        return []
    local_bootstrap = Connection.to(config.local, "local")
    child_of = {local.grants_from(child): child for child in children}

    def check(grant: Grant, topic: str, now_ms: int) -> str | None:
        entry = catalog.get(grant.resource)
        source_region = entry.source_region if entry else None
        return handed_up_refusal(grant, child_of[topic], source_region, now_ms)

    return [GrantRelay(
        "grants-from",
        source(local_bootstrap, list(child_of), "grants-from", max_batch=500),
        sink(local_bootstrap, "grants-from"), local.grants, lambda grant: True,
        sink(local_bootstrap, "grant-refusals-from"), local.refused, health,
        deadline_s=config.flow.delivery_timeout_s, log=log,
        on_lag=metrics.relay_lag.labels("grants-from").set,
        check_every_s=config.grants.max_staleness_s / 5, check=check,
    )]  # fmt: skip


async def _stop_when_asked(
    stop: asyncio.Event,
    stopping: asyncio.Event,
    tasks: dict[asyncio.Task[None], Loop],
    deadline_s: float,
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """Wait for ``stop``; soft-stop every loop, then cut the late ones (named in the log).

    The soft stop gets the deadline less a reserve for closing connections, so the whole stop
    fits in ``shutdown_timeout_s``.
    """
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    for task, loop in tasks.items():
        if task.done():
            error = "cancelled" if task.cancelled() else repr(task.exception())
            emit(log, LoopEnded(loop.name, error))
    soft_s = max(deadline_s * 0.5, deadline_s - CLOSE_RESERVE_S)
    emit(log, NodeStopping(deadline_s, soft_s))
    stopping.set()
    ends_at = time.monotonic() + soft_s
    last = {task: loop for task, loop in tasks.items() if loop.name in STOPPED_LAST}
    for wave in ({t: loop for t, loop in tasks.items() if t not in last}, last):
        for loop in wave.values():
            loop.request_stop()
        if wave:
            await asyncio.wait(wave, timeout=max(0.0, ends_at - time.monotonic()))
    for task in [task for task in tasks if not task.done()]:
        emit(log, HardStop(tasks[task].name, soft_s))
        task.cancel()


STOPPED_LAST = frozenset({"stats", "quality", "audit"})
"""Loops asked to stop only once the others ended, so they record the links' last batches."""
CLOSE_RESERVE_S = 6.0
"""Of the shutdown deadline, what is kept for closing consumers and producers after a hard stop."""
