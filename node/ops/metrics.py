"""Every Prometheus metric of the node, defined once, on an injected registry.

Labels come only from small fixed sets: link (``local``, ``parent``), direction, reason code,
loop name, peer regions of the configured topology, partitions of a link's source topic, and
resource labels bounded by ``monitoring.resource_label_cap``, the catalog's source departments
(any other as ``other``) and the six quality dimensions. Never a record id, a region outside
the configured tree, or raw error text.

Counters and histograms are updated once per batch, not per record. Gauges that describe the
world rather than what the node did (lag, heartbeat ages, completeness) are read at scrape time
through :class:`Readings`, so a scrape always sees the latest state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from node.core.catalog import Catalog
from node.core.outcome import Direction, Reason
from node.core.peers import Completeness, PeerHeartbeat
from node.core.quality_ledger import DIMENSIONS, QualityKey

LOOPS = (
    "local", "parent", "grants", "grants-up", "grants-down", "heartbeat-up", "heartbeat-down",
    "stats", "quality", "audit",
)  # fmt: skip
"""Every loop name the supervisor may run (the ``loop`` label's fixed set)."""
GATEWAY_ROUTES = ("publish", "deliveries")
WAYS = ("in", "out")
"""``in``: records read from a peer; ``out``: copies acked towards a peer."""
_ROUTING_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
_AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_HOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(slots=True)
class Readings:
    """Scrape-time sources of the gauges that describe the world; each is set by the app."""

    lag: dict[str, Callable[[], Mapping[int, int]]] = field(default_factory=dict)
    """Per link: the source's lag in records per partition (empty while unknown)."""
    heartbeats: Callable[[], Iterable[PeerHeartbeat]] = lambda: ()
    completeness: Callable[[], Iterable[Completeness]] = lambda: ()
    silence: Callable[[], Iterable[tuple[str, float, float]]] = lambda: ()
    """Per resource published here with an accessibility allowance: (label, silent s, allowed s)."""


class Metrics:
    """The node's metrics; every label combination is created up front so dashboards see zeros."""

    def __init__(
        self,
        registry: CollectorRegistry,
        links: Iterable[str],
        loops: Iterable[str] = LOOPS,
        *,
        peers: Iterable[str] = (),
        resource_labels: Iterable[str] = (),
    ) -> None:
        self.registry = registry
        self.readings = Readings()
        self.records_in = Counter(
            "exchange_records_in", "Records read from a link's source topic.", ["link"],
            registry=registry,
        )  # fmt: skip
        self.records_out = Counter(
            "exchange_records_out", "Record copies acked by their destination.",
            ["link", "direction"], registry=registry,
        )  # fmt: skip
        self.records_refused = Counter(
            "exchange_records_refused", "Records written to the refusal topic, by reason.",
            ["link", "reason"], registry=registry,
        )  # fmt: skip
        self.delivery_retries = Counter(
            "exchange_delivery_retries", "Batches rewound and retried after a delivery failure.",
            ["link"], registry=registry,
        )  # fmt: skip
        self.routing_seconds = Histogram(
            "exchange_routing_seconds", "Time to decide one batch (validation and routing).",
            ["link"], buckets=_ROUTING_BUCKETS, registry=registry,
        )  # fmt: skip
        self.record_age = Histogram(
            "exchange_record_age_seconds",
            "Age (now - cx-created-ms) of a batch's oldest copy when acked, once per batch.",
            ["direction"], buckets=_AGE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.hop_seconds = Histogram(
            "exchange_hop_seconds",
            "From the previous hop's write (Kafka timestamp) to this node's read, for a batch's "
            "oldest record, once per batch.",
            ["link"], buckets=_HOP_BUCKETS, registry=registry,
        )  # fmt: skip
        self.node_seconds = Histogram(
            "exchange_node_seconds",
            "Time a batch spends in this node: from its fetch to the last ack of its copies.",
            ["link"], buckets=_HOP_BUCKETS, registry=registry,
        )  # fmt: skip
        self.link_up = Gauge(
            "exchange_link_up", "1 while a link reads and delivers, 0 while it is failing.",
            ["link"], registry=registry,
        )  # fmt: skip
        self.loop_up = Gauge(
            "exchange_loop_up", "1 while a supervised loop works, 0 while it fails or starts.",
            ["loop"], registry=registry,
        )  # fmt: skip
        self.gaps = Counter(
            "exchange_source_gaps", "Times records were lost at a source before being read.",
            ["link"], registry=registry,
        )  # fmt: skip
        self.gap_records = Counter(
            "exchange_source_gap_records",
            "Records lost at a source before being read (retention), where the range is known.",
            ["link"], registry=registry,
        )  # fmt: skip
        self.relay_lag = Gauge(
            "exchange_grants_relay_lag", "Grant events a relay has yet to copy (at its last look).",
            ["relay"], registry=registry,
        )  # fmt: skip
        self.resource_records = Counter(
            "exchange_resource_records",
            "Record copies acked, by resource (or bounded resource class) and direction.",
            ["resource", "direction"], registry=registry,
        )  # fmt: skip
        self.resource_bytes = Counter(
            "exchange_resource_bytes", "Value bytes of the copies counted in "
            "exchange_resource_records.", ["resource", "direction"], registry=registry,
        )  # fmt: skip
        self.peer_records = Counter(
            "exchange_peer_records",
            "Records read from (in) or copies acked towards (out) each peer region, heartbeats "
            "aside; this node's own region stands for its departments.",
            ["peer", "way"], registry=registry,
        )  # fmt: skip
        self.peer_bytes = Counter(
            "exchange_peer_bytes", "Value bytes of the records counted in exchange_peer_records.",
            ["peer", "way"], registry=registry,
        )  # fmt: skip
        self.heartbeats_sent = Counter(
            "exchange_heartbeats_sent", "Heartbeats this node wrote, up to its parent or down to "
            "its children.", ["way"], registry=registry,
        )  # fmt: skip
        self.gateway_requests = Counter(
            "exchange_gateway_requests", "Requests to the departments' HTTP gateway, by route "
            "(publish, deliveries) and answer status.", ["route", "status"], registry=registry,
        )  # fmt: skip
        self.gateway_records = Counter(
            "exchange_gateway_records", "Records published (publish) or read (deliveries) "
            "through the gateway.", ["route"], registry=registry,
        )  # fmt: skip
        self.quality_records = Counter(
            "exchange_quality_records", "Records checked for quality, by resource (or bounded "
            "resource class), source department, dimension and outcome (pass, fail).",
            ["resource", "dept", "dimension", "outcome"], registry=registry,
        )  # fmt: skip
        self.audit_written = Counter(
            "exchange_audit_entries_written", "Audit entries written to the node's audit topic.",
            registry=registry,
        )  # fmt: skip
        self.audit_dropped = Counter(
            "exchange_audit_entries_dropped",
            "Audit entries dropped unwritten (fail-open, queue full); a gap entry records them.",
            registry=registry,
        )  # fmt: skip
        self.audit_pending = Gauge(
            "exchange_audit_entries_pending", "Audit entries waiting to be written.",
            registry=registry,
        )  # fmt: skip
        self.audit_holding = Gauge(
            "exchange_audit_holding",
            "1 while a fail-closed audit trail holds the links (entries cannot be written).",
            registry=registry,
        )  # fmt: skip
        self.info = Gauge(
            "exchange_node_info", "Build and configuration of the node (value 1).",
            ["version", "node", "region", "level", "parent", "children"], registry=registry,
        )  # fmt: skip
        for loop in loops:
            self.loop_up.labels(loop).set(0)
        links = list(links)
        for link in links:
            self.gaps.labels(link)
            self.gap_records.labels(link)
            self.records_in.labels(link)
            self.delivery_retries.labels(link)
            self.routing_seconds.labels(link)
            self.hop_seconds.labels(link)
            self.node_seconds.labels(link)
            self.link_up.labels(link).set(0)
            for direction in Direction:
                self.records_out.labels(link, direction.value)
            for reason in Reason:
                self.records_refused.labels(link, reason.value)
        for direction in Direction:
            self.record_age.labels(direction.value)
            for resource in resource_labels:
                self.resource_records.labels(resource, direction.value)
                self.resource_bytes.labels(resource, direction.value)
        for peer in peers:
            for way in WAYS:
                self.peer_records.labels(peer, way)
                self.peer_bytes.labels(peer, way)
        for way in ("up", "down"):
            self.heartbeats_sent.labels(way)
        for route in GATEWAY_ROUTES:
            self.gateway_records.labels(route)
        registry.register(_ReadingsCollector(self.readings))


def resource_labels(catalog: Catalog, cap: int) -> dict[str, str]:
    """Map each resource code to its metric label, at most ``cap`` distinct labels (or 3).

    The code itself while the catalog has at most ``cap`` resources; past that the source
    department (``dept:CODE``); past that again the sharing type (``sharing:TYPE``).
    """
    resources = [r for r in map(catalog.get, catalog.codes()) if r is not None]
    if len(resources) <= cap:
        return {r.code: r.code for r in resources}
    if len({r.source_dept for r in resources}) <= cap:
        return {r.code: f"dept:{r.source_dept}" for r in resources}
    return {r.code: f"sharing:{r.sharing.value}" for r in resources}


def gateway_counter(metrics: Metrics) -> Callable[[str, int, int], None]:
    """Count one gateway request (route, status) and the records it published or read."""

    def count(route: str, status: int, records: int) -> None:
        metrics.gateway_requests.labels(route, str(status)).inc()
        if records:
            metrics.gateway_records.labels(route).inc(records)

    return count


def quality_counter(
    metrics: Metrics, resource_label: Callable[[str], str], depts: set[str]
) -> Callable[[Mapping[QualityKey, tuple[int, int]]], None]:
    """Count a batch's quality checks, passed and failed, once per key.

    ``resource_label`` bounds resources (as ``resource_labels``); a department outside ``depts``
    (the catalog's source departments) and a dimension outside the six count as ``other``. Both
    outcomes of a key are created when it is first counted, so a pass rate has a denominator.
    """
    known = frozenset(depts)

    def count(counts: Mapping[QualityKey, tuple[int, int]]) -> None:
        for key, (checked, failed) in counts.items():
            dept = key.source_dept if key.source_dept in known else "other"
            dimension = key.dimension if key.dimension in DIMENSIONS else "other"
            labels = (resource_label(key.resource), dept, dimension)
            metrics.quality_records.labels(*labels, "pass").inc(checked - failed)
            metrics.quality_records.labels(*labels, "fail").inc(failed)

    return count


class _ReadingsCollector(Collector):
    """Turns :class:`Readings` into gauge families at scrape time (families always present)."""

    def __init__(self, readings: Readings) -> None:
        self._readings = readings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        readings = self._readings
        lag = GaugeMetricFamily(
            "exchange_source_lag_records",
            "Records in a link's source partition not yet committed by the node (end offset - "
            "committed offset, as of the last fetch).",
            labels=["link", "partition"],
        )
        for link, read in sorted(readings.lag.items()):
            for partition, records in sorted(read().items()):
                lag.add_metric([link, str(partition)], records)
        yield lag
        age = GaugeMetricFamily(
            "exchange_heartbeat_age_seconds",
            "Seconds since the last heartbeat from a peer was sent (since start if none came).",
            labels=["peer", "role"],
        )
        hop = GaugeMetricFamily(
            "exchange_heartbeat_hop_seconds",
            "From a peer's last heartbeat's send to its receipt here.",
            labels=["peer", "role"],
        )
        interval = GaugeMetricFamily(
            "exchange_heartbeat_interval_seconds",
            "The heartbeat interval a peer announces (this node's own until it has spoken).",
            labels=["peer", "role"],
        )
        received = GaugeMetricFamily(
            "exchange_heartbeats_received",
            "Heartbeats received from a peer since this node started.",
            labels=["peer", "role"],
        )
        for beat in readings.heartbeats():
            labels = [beat.peer, beat.role]
            age.add_metric(labels, beat.age_s)
            if beat.hop_s is not None:
                hop.add_metric(labels, beat.hop_s)
            interval.add_metric(labels, beat.interval_s)
            received.add_metric(labels, beat.received)
        yield from (age, hop, interval, received)
        sent = GaugeMetricFamily(
            "exchange_completeness_sent_records",
            "Records a child says (in its heartbeats) it sent up, over the settled buckets.",
            labels=["child"],
        )
        got = GaugeMetricFamily(
            "exchange_completeness_received_records",
            "Records received from a child, over the same settled buckets.",
            labels=["child"],
        )
        gap = GaugeMetricFamily(
            "exchange_completeness_gap_records",
            "Sent minus received over the settled buckets: above 0, records a child sent up "
            "have not arrived; below 0, duplicates arrived (at-least-once).",
            labels=["child"],
        )
        for item in readings.completeness():
            sent.add_metric([item.child], item.sent)
            got.add_metric([item.child], item.received)
            gap.add_metric([item.child], item.sent - item.received)
        yield from (sent, got, gap)
        silent = GaugeMetricFamily(
            "exchange_quality_silent_seconds",
            "Seconds since a resource published here last entered the exchange (since the node "
            "started, if never); accessibility fails above exchange_quality_allowed_seconds.",
            labels=["resource"],
        )
        allowed = GaugeMetricFamily(
            "exchange_quality_allowed_seconds",
            "The longest silence a resource's update cycle allows (accessibility).",
            labels=["resource"],
        )
        for label, silent_s, allowed_s in readings.silence():
            silent.add_metric([label], silent_s)
            allowed.add_metric([label], allowed_s)
        yield from (silent, allowed)
