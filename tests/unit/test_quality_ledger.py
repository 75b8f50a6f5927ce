"""Quality statistics: the ledger, the report, the topic's JSON, the metrics, writer and command."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from node.cli import main
from node.core.quality_ledger import (
    DIMENSIONS,
    QualityKey,
    QualityLedger,
    QualityLine,
    QualityRow,
    report,
)
from node.errors import StatsError
from node.kafka.stats import StatsWriter
from node.ops.metrics import Metrics, quality_counter
from node.quality_cli import render_json, render_table
from node.supervisor import Health
from tests.memory_transport import MemoryCluster, MemorySink

HOUR_MS = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
R1, R2 = "410100-HRSS-00001", "410100-PSB-00001"
ACCURACY = QualityKey(R1, "HRSS", "accuracy")
COMPLETE = QualityKey(R1, "HRSS", "completeness")
PSB = QualityKey(R2, "PSB", "completeness")
TOPIC = "t.quality"


def qline(
    key: QualityKey = ACCURACY, checked: int = 10, failed: int = 1, **fields: Any
) -> QualityLine:
    """A line of node n1, run r1, bucket T0 for ``key``, with the given overrides."""
    values: dict[str, Any] = {
        "bucket_start_ms": T0, "bucket_s": 3600, "node": "n1", "run": "r1",
        "source_dept": key.source_dept, "resource": key.resource, "dimension": key.dimension,
        "checked": checked, "failed": failed,
    }  # fmt: skip
    values.update(fields)
    return QualityLine(**values)


def counts(lines: list[QualityLine]) -> dict[tuple[int, str], tuple[int, int]]:
    """(bucket, dimension) -> (checked, failed) of ``lines``."""
    return {(x.bucket_start_ms, x.dimension): (x.checked, x.failed) for x in lines}


# --- the ledger ---------------------------------------------------------------------------------


def test_ledger_keeps_cumulative_counts_per_bucket_and_key() -> None:
    """Batches in one bucket add up per key; the next bucket starts from zero."""
    ledger = QualityLedger("n1", "r1", 3600)
    ledger.add(T0 + 5, {ACCURACY: (4, 1), COMPLETE: (4, 0)})
    ledger.add(T0 + HOUR_MS - 1, {ACCURACY: (6, 2)})
    ledger.add(T0 + HOUR_MS, {ACCURACY: (1, 1)})
    assert counts(ledger.changed()) == {
        (T0, "accuracy"): (10, 3),
        (T0, "completeness"): (4, 0),
        (T0 + HOUR_MS, "accuracy"): (1, 1),
    }
    assert {(x.node, x.run, x.bucket_s, x.source_dept) for x in ledger.changed()} == {
        ("n1", "r1", 3600, "HRSS")
    }


def test_confirm_marks_written_lines_and_a_failed_write_loses_nothing() -> None:
    """Confirmed lines stay quiet until counted again; lines taken but grown meanwhile stay pending."""
    ledger = QualityLedger("n1", "r1", 3600)
    ledger.add(T0, {ACCURACY: (2, 1), COMPLETE: (2, 0)})
    ledger.confirm(ledger.changed())
    assert ledger.changed() == []
    ledger.add(T0 + 1, {ACCURACY: (3, 0)})
    taken = ledger.changed()
    assert counts(taken) == {(T0, "accuracy"): (5, 1)}
    ledger.add(T0 + 2, {ACCURACY: (1, 1)})
    ledger.confirm(taken)  # the older totals were written: the newer ones must still be
    assert counts(ledger.changed()) == {(T0, "accuracy"): (6, 2)}
    ledger.confirm([qline(checked=6, failed=2, run="r0")])  # another run's line confirms nothing
    assert len(ledger.changed()) == 1


def test_memory_is_bounded_and_drops_are_counted() -> None:
    """Written buckets are forgotten; unwritten ones past max_buckets are dropped and counted."""
    ledger = QualityLedger("n1", "r1", 3600, keep_buckets=2, max_buckets=4)
    for hour in range(100):
        ledger.add(T0 + hour * HOUR_MS, {ACCURACY: (1, 0)})
        ledger.confirm(ledger.changed())
    assert (ledger.buckets_held, ledger.dropped_lines) == (2, 0)
    for hour in range(100, 106):
        ledger.add(T0 + hour * HOUR_MS, {ACCURACY: (1, 0), COMPLETE: (1, 1)})
    assert (ledger.buckets_held, ledger.dropped_lines) == (4, 4)  # hours 100, 101: two lines each


@pytest.mark.parametrize(
    ("batch", "field"),
    [
        ({QualityKey(R1, "HRSS", "beauty"): (1, 0)}, "dimension"),
        ({ACCURACY: (1, 2)}, "counts"),
        ({ACCURACY: (1, -1)}, "counts"),
        ({ACCURACY: (1,)}, "counts"),
    ],
)
def test_add_refuses_bad_counts_and_counts_nothing(
    batch: dict[QualityKey, Any], field: str
) -> None:
    """An unknown dimension or counts that are not 0 <= failed <= checked raise, leaving no line."""
    ledger = QualityLedger("n1", "r1", 3600)
    with pytest.raises(StatsError) as caught:
        ledger.add(T0, {COMPLETE: (1, 0), **batch})
    assert caught.value.field == field
    assert ledger.changed() == []


# --- the report ---------------------------------------------------------------------------------

LINES = [
    qline(ACCURACY, 10, 2),
    qline(ACCURACY, 10, 4),  # a later write of the same key: it replaces the first
    qline(COMPLETE, 10, 1),
    qline(PSB, 5, 1),  # exactly 80%: not below
    qline(PSB, 100, 100, bucket_start_ms=T0 + HOUR_MS),  # outside [T0, T0 + 1 h)
]


def test_report_groups_rates_and_flags_rows_below_the_threshold() -> None:
    """Rows per department, resource and dimension, then each department's overall row."""
    assert report(LINES, T0, T0 + HOUR_MS) == [
        QualityRow(("HRSS", R1, "accuracy"), 10, 4, below=True),
        QualityRow(("HRSS", R1, "completeness"), 10, 1, below=False),
        QualityRow(("HRSS", None, None), 20, 5, below=True),
        QualityRow(("PSB", R2, "completeness"), 5, 1, below=False),
        QualityRow(("PSB", None, None), 5, 1, below=False),
    ]
    rates = [row.pass_rate for row in report(LINES, T0, T0 + HOUR_MS)]
    assert rates == [0.6, 0.9, 0.75, 0.8, 0.8]


def test_report_by_dimension_sums_departments_and_runs_without_overall_rows() -> None:
    """Grouping by dimension alone merges departments and runs; the threshold is the caller's."""
    lines = [*LINES, qline(COMPLETE, 10, 0, run="r2"), qline(COMPLETE, 10, 0, node="n2")]
    assert report(lines, T0, T0 + HOUR_MS, by=("dimension",), threshold=0.9) == [
        QualityRow(("accuracy",), 10, 4, below=True),
        QualityRow(("completeness",), 35, 2, below=False),
    ]
    assert report(lines, T0, T0 + HOUR_MS, by=("source_dept",)) == [
        QualityRow(("HRSS",), 40, 5, below=False),
        QualityRow(("PSB",), 5, 1, below=False),
    ]


def test_report_with_nothing_checked_has_no_rate_and_is_not_below() -> None:
    """A line that checked nothing has no pass rate and is not flagged."""
    [row] = report([qline(checked=0, failed=0)], T0, T0 + 1, by=("dimension",))
    assert (row.pass_rate, row.below) == (None, False)


@pytest.mark.parametrize(
    ("by", "threshold", "until", "field"),
    [
        (("direction",), 0.8, T0 + 1, "by"),
        (("dimension", "dimension"), 0.8, T0 + 1, "by"),
        (("dimension",), 1.5, T0 + 1, "threshold"),
        (("dimension",), -0.1, T0 + 1, "threshold"),
        (("dimension",), 0.8, T0, "since"),
    ],
)
def test_report_rejects_bad_queries(
    by: tuple[str, ...], threshold: float, until: int, field: str
) -> None:
    """An unknown or repeated dimension, a threshold outside [0, 1] or an empty period is refused."""
    with pytest.raises(StatsError) as caught:
        report([], T0, until, by, threshold)
    assert caught.value.field == field


# --- the topic's records ------------------------------------------------------------------------

texts = st.text(max_size=20)


@given(
    st.integers(0, 10**7), st.sampled_from([1, 60, 3600]), st.text(min_size=1, max_size=20),
    st.text(min_size=1, max_size=20), texts, texts, st.sampled_from(DIMENSIONS),
    st.integers(0, 2**62), st.integers(0, 2**62),
)  # fmt: skip
def test_json_round_trip(
    bucket: int, bucket_s: int, node: str, run: str, dept: str, resource: str, dimension: str,
    checked: int, failed: int,
) -> None:  # fmt: skip
    """Any valid line survives to_json/from_json unchanged."""
    checked, failed = max(checked, failed), min(checked, failed)
    made = QualityLine(bucket * bucket_s * 1000, bucket_s, node, run, dept, resource, dimension,
                       checked, failed)  # fmt: skip
    assert QualityLine.from_json(made.to_json()) == made


def test_keys_name_bucket_node_run_and_quality_key_unambiguously() -> None:
    """The key is |-separated, and a '|' inside a field cannot make two keys collide."""
    assert qline().key() == f"{T0}|n1|r1|HRSS|{R1}|accuracy".encode()
    assert (
        qline(source_dept="A|B", resource="C").key() != qline(source_dept="A", resource="B|C").key()
    )


def valid() -> dict[str, Any]:
    """A valid value as a dict, to spoil."""
    parsed: dict[str, Any] = json.loads(qline().to_json())
    return parsed


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"v": 2}, "v"),
        ({"checked": True}, "checked"),
        ({"failed": 1.0}, "failed"),
        ({"failed": 11}, "failed"),
        ({"failed": -1}, "failed"),
        ({"dimension": "beauty"}, "dimension"),
        ({"dimension": ""}, "dimension"),
        ({"run": ""}, "run"),
        ({"resource": None}, "resource"),
        ({"bucket_start_ms": T0 + 1}, "bucket_start_ms"),
        ({"records": 3}, "records"),
    ],
)
def test_from_json_names_the_bad_field(change: dict[str, Any], field: str) -> None:
    """Wrong types, ranges, dimensions and unknown fields are refused, naming the field."""
    with pytest.raises(StatsError) as caught:
        QualityLine.from_json(json.dumps({**valid(), **change}).encode())
    assert caught.value.field == field


@pytest.mark.parametrize("data", [b"", b"{", b"[1]", b"\xff"])
def test_from_json_refuses_what_is_not_a_json_object(data: bytes) -> None:
    """Bytes that are not a JSON object are refused as a bad value."""
    with pytest.raises(StatsError) as caught:
        QualityLine.from_json(data)
    assert caught.value.field == "value"


def test_a_missing_field_is_named() -> None:
    """A value without ``failed`` is refused, naming it."""
    spoiled = valid()
    del spoiled["failed"]
    with pytest.raises(StatsError, match=r"^failed: expected an integer, got None$"):
        QualityLine.from_json(json.dumps(spoiled).encode())


# --- metrics ------------------------------------------------------------------------------------


def test_quality_counter_counts_passes_and_failures_under_bounded_labels() -> None:
    """Unknown departments and dimensions count as ``other``; resources go through the mapping."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, ["local"])
    count = quality_counter(metrics, lambda code: {R1: "dept:HRSS"}.get(code, "unknown"), {"HRSS"})
    count({ACCURACY: (10, 3), QualityKey("x" * 80, "ROGUE", "beauty"): (2, 2)})
    count({ACCURACY: (5, 0)})

    def value(resource: str, dept: str, dimension: str, outcome: str) -> float | None:
        labels = {"resource": resource, "dept": dept, "dimension": dimension, "outcome": outcome}
        return registry.get_sample_value("exchange_quality_records_total", labels)

    assert value("dept:HRSS", "HRSS", "accuracy", "pass") == 12
    assert value("dept:HRSS", "HRSS", "accuracy", "fail") == 3
    assert value("unknown", "other", "other", "pass") == 0  # created, so a rate has a denominator
    assert value("unknown", "other", "other", "fail") == 2
    labels = {
        (s.labels["resource"], s.labels["dept"], s.labels["dimension"])
        for family in registry.collect()
        if family.name == "exchange_quality_records"
        for s in family.samples
    }
    assert labels == {("dept:HRSS", "HRSS", "accuracy"), ("unknown", "other", "other")}


# --- the writer ---------------------------------------------------------------------------------


async def test_the_stats_writer_writes_quality_lines_as_loop_quality() -> None:
    """The writer takes the quality ledger: its lines land keyed, confirmed, the loop up."""
    cluster = MemoryCluster()
    health = Health()
    health.register("quality")
    ledger = QualityLedger("n1", "r1", 3600)
    ledger.add(T0, {ACCURACY: (10, 4), PSB: (5, 1)})
    writer = StatsWriter(
        ledger, MemorySink(cluster), TOPIC, health, flush_s=3600, deadline_s=0.5,
        log=structlog.get_logger(), name="quality",
    )  # fmt: skip
    writer.request_stop()
    await writer.run()
    stored = {r.key: QualityLine.from_json(r.value or b"") for r in cluster.records(TOPIC)}
    assert stored == {qline(ACCURACY, 10, 4).key(): qline(ACCURACY, 10, 4),
                      qline(PSB, 5, 1).key(): qline(PSB, 5, 1)}  # fmt: skip
    assert ledger.changed() == []
    assert health.is_up("quality")


# --- the command --------------------------------------------------------------------------------


def test_table_and_json_show_rates_and_mark_rows_below() -> None:
    """The table aligns columns and marks BELOW; JSON carries rates, flags and the threshold."""
    rows = report(LINES, T0, T0 + HOUR_MS, ("source_dept", "dimension"))
    assert render_table(rows, ["department", "dimension"]).splitlines() == [
        "department  dimension     checked  failed  pass rate",
        "HRSS        accuracy           10       4      60.0%  BELOW",
        "HRSS        completeness       10       1      90.0%",
        "HRSS        (all)              20       5      75.0%  BELOW",
        "PSB         completeness        5       1      80.0%",
        "PSB         (all)               5       1      80.0%",
    ]
    since, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC)
    document = json.loads(render_json(rows, ["dept", "dimension"], since, until, 0.8))
    assert (document["since"], document["until"], document["threshold"]) == (
        "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", 0.8,
    )  # fmt: skip
    assert document["by"] == ["dept", "dimension"]
    assert document["rows"][2] == {
        "dept": "HRSS", "dimension": None, "checked": 20, "failed": 5, "pass_rate": 0.75,
        "below": True,
    }  # fmt: skip


def write_config(path: Path) -> Path:
    """A node config whose local cluster is never contacted."""
    path.write_text(
        '[node]\nid = "n1"\nlevel = "county"\nregion = "410102"\n\n'
        '[local]\nbootstrap = "127.0.0.1:9"\ntopic_prefix = "t"\n',
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--threshold", "1.5"], "--threshold: expected a fraction from 0 to 1, got 1.5"),
        (["--by", "dept,direction"], "--by: unknown 'direction'; expected some of dept, "),
        (["--since", "yesterday"], "cannot read time 'yesterday'"),
        (["--since", "1h", "--until", "2h"], "is not before --until"),
    ],
)
def test_bad_arguments_exit_2_before_reading(
    options: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input is refused with exit 2 and a message naming it, without touching the cluster."""
    argv = ["quality", "report", "--config", str(write_config(tmp_path / "n.toml")), *options]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("exchange-node quality report: ")
    assert message in captured.err
    assert captured.out == ""
