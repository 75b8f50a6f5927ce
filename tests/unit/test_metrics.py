"""The metrics module: bounded resource labels and the gauges read at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from node.catalog_files import load_catalog, packaged_catalog_dir
from node.codec import load_schemas, packaged_schema_dir
from node.core.peers import Completeness, PeerHeartbeat
from node.ops.metrics import Metrics, resource_labels

CATALOG = load_catalog(packaged_catalog_dir(), load_schemas(packaged_schema_dir()))


def test_resource_labels_fall_back_to_departments_then_sharing_past_the_cap() -> None:
    """Codes while the catalog fits the cap; then source departments; then sharing types."""
    codes = CATALOG.codes()
    assert resource_labels(CATALOG, len(codes)) == {code: code for code in codes}
    departments = {r.source_dept for r in map(CATALOG.get, codes) if r is not None}
    by_dept = resource_labels(CATALOG, len(departments))
    assert set(by_dept.values()) == {f"dept:{d}" for d in departments}
    by_sharing = resource_labels(CATALOG, len(departments) - 1)
    assert {label.split(":")[0] for label in by_sharing.values()} == {"sharing"}
    assert len(set(by_sharing.values())) <= 3


def test_scrape_time_gauges_read_the_latest_state() -> None:
    """Lag per partition, heartbeats and completeness are read when scraped, not cached."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, ["local"])
    lag = {0: 5, 2: 7}
    metrics.readings.lag = {"local": lambda: lag}
    metrics.readings.heartbeats = lambda: [PeerHeartbeat("410102", "child", 2.5, 0.01, 5.0, 9)]
    metrics.readings.completeness = lambda: [Completeness("410102", 100, 97)]
    value = registry.get_sample_value
    assert value("exchange_source_lag_records", {"link": "local", "partition": "2"}) == 7
    lag[2] = 0
    assert value("exchange_source_lag_records", {"link": "local", "partition": "2"}) == 0
    child = {"peer": "410102", "role": "child"}
    assert value("exchange_heartbeat_age_seconds", child) == 2.5
    assert value("exchange_heartbeat_interval_seconds", child) == 5.0
    assert value("exchange_heartbeats_received", child) == 9
    assert value("exchange_completeness_gap_records", {"child": "410102"}) == 3
