"""Quality statistics on a real broker: the writer's lines, read back by ``quality report``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import structlog

from node.cli import main
from node.core.quality_ledger import QualityKey, QualityLedger
from node.kafka.stats import StatsWriter
from node.kafka.topics import TopicNames, ensure_topics
from node.supervisor import Health
from node.transport import Message
from tests.integration.conftest import free_port
from tests.integration.test_stats import WatchedSink, kafka_sink, write_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WAIT_S = 30.0
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
A = 1_767_225_600_000  # 2026-01-01T00:00:00Z: bucket A; bucket B starts an hour later
B = A + HOUR_MS
R1, R2 = "410100-HRSS-00001", "410100-PSB-00001"
ACCURACY = QualityKey(R1, "HRSS", "accuracy")
COMPLETE = QualityKey(R1, "HRSS", "completeness")
PSB = QualityKey(R2, "PSB", "completeness")


def quality_writer(ledger: QualityLedger, sink: WatchedSink, topic: str) -> StatsWriter:
    """The loop ``quality`` flushing every 0.2 s."""
    return StatsWriter(
        ledger, sink, topic, Health(), flush_s=0.2, deadline_s=WAIT_S,
        log=structlog.get_logger(), name="quality",
    )  # fmt: skip


async def write_two_runs(bootstrap: str, topic: str, node_id: str) -> None:
    """Run 1 flushes twice in bucket A and once, on stopping, in bucket B; run 2 adds to A."""
    sink = WatchedSink(kafka_sink(bootstrap, f"{node_id}.quality.1"))
    ledger = QualityLedger(node_id, "run-1", 3600)
    ledger.add(A + 10 * MINUTE_MS, {ACCURACY: (10, 2), COMPLETE: (10, 1)})
    writer = quality_writer(ledger, sink, topic)
    task = asyncio.create_task(writer.run())
    await sink.wait_acked(2)
    ledger.add(A + 20 * MINUTE_MS, {ACCURACY: (10, 4)})  # accuracy in A is now (20, 6)
    await sink.wait_acked(3)
    ledger.add(B + 5 * MINUTE_MS, {PSB: (50, 50)})
    writer.request_stop()
    await asyncio.wait_for(task, WAIT_S)
    assert ledger.changed() == []
    await sink.stop()

    sink = WatchedSink(kafka_sink(bootstrap, f"{node_id}.quality.2"))
    ledger = QualityLedger(node_id, "run-2", 3600)
    ledger.add(A + 30 * MINUTE_MS, {PSB: (5, 1)})
    writer = quality_writer(ledger, sink, topic)
    writer.request_stop()  # a run stopped at once still writes what it counted
    await asyncio.wait_for(writer.run(), WAIT_S)
    assert sink.acked == 1
    await sink.stop()


async def test_quality_report_shows_pass_rates_and_marks_those_below(
    clusters: dict[str, str], prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bucket A's lines (the last write of each key, both runs) give the rates; B is left out."""
    bootstrap = clusters["county"]
    topic = TopicNames(prefix).quality
    await ensure_topics(bootstrap, [topic], 3, 1, {"cleanup.policy": "compact"})
    await write_two_runs(bootstrap, topic, f"{prefix}-n")
    junk = kafka_sink(bootstrap, f"{prefix}.junk")
    assert await junk.deliver([Message(topic, b"junk", b"not json", [])]) == [None]
    await junk.stop()

    config = write_config(tmp_path / "node.toml", bootstrap, prefix)
    period = ["--since", "2026-01-01", "--until", "2026-01-01T01:00"]
    argv = ["quality", "report", "--config", str(config), *period]
    assert await asyncio.to_thread(main, argv) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "since 2026-01-01T00:00:00Z until 2026-01-01T01:00:00Z (buckets starting in it); "
        "BELOW: pass rate under 80.0%",
        "department  resource           dimension     checked  failed  pass rate",
        "HRSS        410100-HRSS-00001  accuracy           20       6      70.0%  BELOW",
        "HRSS        410100-HRSS-00001  completeness       10       1      90.0%",
        "HRSS        (all)              (all)              30       7      76.7%  BELOW",
        "PSB         410100-PSB-00001   completeness        5       1      80.0%",
        "PSB         (all)              (all)               5       1      80.0%",
    ]
    assert "exchange-node quality report: warning: skipped 1 unreadable record(s)" in captured.err

    assert await asyncio.to_thread(main, [*argv, "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["threshold"] == 0.8
    assert document["by"] == ["dept", "resource", "dimension"]
    assert [
        (r["dept"], r["resource"], r["dimension"], r["checked"], r["failed"], r["below"])
        for r in document["rows"]
    ] == [
        ("HRSS", R1, "accuracy", 20, 6, True),
        ("HRSS", R1, "completeness", 10, 1, False),
        ("HRSS", None, None, 30, 7, True),
        ("PSB", R2, "completeness", 5, 1, False),
        ("PSB", None, None, 5, 1, False),
    ]
    assert [r["pass_rate"] for r in document["rows"]] == pytest.approx(
        [0.7, 0.9, 23 / 30, 0.8, 0.8]
    )

    both = ["--until", "2026-01-01T02:00", "--by", "dimension", "--threshold", "0.75"]
    argv = ["quality", "report", "--config", str(config), "--since", "2026-01-01", *both]
    assert await asyncio.to_thread(main, [*argv, "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["threshold"] == 0.75
    assert document["rows"] == [
        {"dimension": "accuracy", "checked": 20, "failed": 6, "pass_rate": 0.7, "below": True},
        {"dimension": "completeness", "checked": 65, "failed": 52, "pass_rate": 0.2, "below": True},
    ]


async def test_quality_report_exits_1_when_the_cluster_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens at the configured address: exit 1 with a clear message, within the timeout."""
    bootstrap = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "node.toml", bootstrap, "nowhere")
    argv = ["quality", "report", "--config", str(config), "--timeout", "3"]
    assert await asyncio.wait_for(asyncio.to_thread(main, argv), 20) == 1
    captured = capsys.readouterr()
    assert f"exchange-node quality report: cannot reach the Kafka cluster at {bootstrap}" in (
        captured.err
    )
    assert captured.out == ""


async def test_quality_report_exits_1_when_the_topic_does_not_exist(
    clusters: dict[str, str], prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cluster without the quality topic: exit 1 naming it."""
    config = write_config(tmp_path / "node.toml", clusters["county"], prefix)
    argv = ["quality", "report", "--config", str(config), "--timeout", "10"]
    assert await asyncio.to_thread(main, argv) == 1
    assert f"topic {prefix}.quality does not exist" in capsys.readouterr().err
