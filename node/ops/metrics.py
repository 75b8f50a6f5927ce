"""Every Prometheus metric of the node, defined once, on an injected registry.

Labels come only from small fixed sets: link (``local``, ``parent``), direction, reason code.
Never a record id, a region outside the configured tree, or raw error text.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from node.core.outcome import Direction, Reason

LOOPS = ("local", "parent", "grants", "grants-up", "grants-down")
"""Every loop name the supervisor may run (the ``loop`` label's fixed set)."""
_ROUTING_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
_AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    """The node's metrics; every label combination is created up front so dashboards see zeros."""

    def __init__(
        self, registry: CollectorRegistry, links: Iterable[str], loops: Iterable[str] = LOOPS
    ) -> None:
        self.registry = registry
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
            "exchange_record_age_seconds", "Age (now - cx-created-ms) of a copy when acked.",
            ["direction"], buckets=_AGE_BUCKETS, registry=registry,
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
        for loop in loops:
            self.loop_up.labels(loop).set(0)
        for link in links:
            self.gaps.labels(link)
            self.gap_records.labels(link)
            self.records_in.labels(link)
            self.delivery_retries.labels(link)
            self.routing_seconds.labels(link)
            self.link_up.labels(link).set(0)
            for direction in Direction:
                self.records_out.labels(link, direction.value)
            for reason in Reason:
                self.records_refused.labels(link, reason.value)
        for direction in Direction:
            self.record_age.labels(direction.value)
