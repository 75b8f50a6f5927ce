"""Exchange statistics on a real broker: the writer's lines, read back by ``exchange-node stats``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import structlog

from node.cli import main
from node.core.stats import StatsLedger
from node.core.tally import TallyKey
from node.errors import RecordRejected
from node.kafka.sink import KafkaSink
from node.kafka.stats import StatsWriter, read_stats
from node.kafka.topics import TopicLimits, TopicNames, ensure_topics
from node.supervisor import Health
from node.transport import Message, Substitute
from tests.integration.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WAIT_S = 30.0
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
A = 1_767_225_600_000  # 2026-01-01T00:00:00Z: bucket A; bucket B starts an hour later
B = A + HOUR_MS
UP = TallyKey("up", "HRSS", "410100-HRSS-00001", "410100")
LOCAL = TallyKey("local", "PSB", "410100-PSB-00001", "inbox")


class WatchedSink:
    """A sink that counts acked messages, so a test can await a flush instead of sleeping."""

    def __init__(self, sink: KafkaSink) -> None:
        self.sink = sink
        self.acked = 0
        self._changed = asyncio.Condition()

    async def deliver(
        self, messages: Sequence[Message], substitute: Substitute | None = None
    ) -> list[RecordRejected | None]:
        """Deliver through the real sink, then count the acked messages."""
        results = await self.sink.deliver(messages, substitute)
        async with self._changed:
            self.acked += sum(1 for result in results if result is None)
            self._changed.notify_all()
        return results

    async def reset(self) -> None:
        """Reset the real sink."""
        await self.sink.reset()

    async def stop(self) -> None:
        """Stop the real sink."""
        await self.sink.stop()

    async def wait_acked(self, count: int) -> None:
        """Wait until ``count`` messages in all were acked."""
        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(lambda: self.acked >= count)


def kafka_sink(bootstrap: str, name: str) -> KafkaSink:
    """A sink built as the composition root builds one."""
    return KafkaSink(bootstrap, name, TopicLimits(bootstrap, deadline_s=WAIT_S), deadline_s=WAIT_S)


def stats_writer(ledger: StatsLedger, sink: WatchedSink, topic: str) -> StatsWriter:
    """A writer flushing every 0.2 s."""
    return StatsWriter(
        ledger, sink, topic, Health(), flush_s=0.2, deadline_s=WAIT_S, log=structlog.get_logger()
    )


def write_config(path: Path, bootstrap: str, prefix: str) -> Path:
    """A node config whose local cluster is ``bootstrap``."""
    path.write_text(
        f'[node]\nid = "{prefix}-n"\nlevel = "county"\nregion = "410102"\n\n'
        f'[local]\nbootstrap = "{bootstrap}"\ntopic_prefix = "{prefix}"\n',
        encoding="utf-8",
    )
    return path


async def write_two_runs(bootstrap: str, topic: str, node_id: str) -> None:
    """Run 1 flushes twice in bucket A and once, on stopping, in bucket B; run 2 adds to A."""
    sink = WatchedSink(kafka_sink(bootstrap, f"{node_id}.stats.1"))
    ledger = StatsLedger(node_id, "run-1", 3600)
    ledger.add(A + 10 * MINUTE_MS, {UP: [2, 200]})
    writer = stats_writer(ledger, sink, topic)
    task = asyncio.create_task(writer.run())
    await sink.wait_acked(1)
    ledger.add(A + 20 * MINUTE_MS, {UP: [1, 50], LOCAL: [4, 400]})
    await sink.wait_acked(3)
    ledger.add(B + 5 * MINUTE_MS, {UP: [10, 1000]})
    writer.request_stop()
    await asyncio.wait_for(task, WAIT_S)
    assert ledger.changed() == []
    await sink.stop()

    sink = WatchedSink(kafka_sink(bootstrap, f"{node_id}.stats.2"))
    ledger = StatsLedger(node_id, "run-2", 3600)
    ledger.add(A + 30 * MINUTE_MS, {UP: [5, 500]})
    writer = stats_writer(ledger, sink, topic)
    writer.request_stop()  # a run stopped at once still writes what it counted
    await asyncio.wait_for(writer.run(), WAIT_S)
    assert sink.acked == 1
    await sink.stop()


async def test_stats_of_two_runs_are_reported_for_a_period(
    clusters: dict[str, str], prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bucket A sums both runs (the last write of each key wins); bucket B is left out."""
    bootstrap = clusters["county"]
    topic = TopicNames(prefix).stats
    await ensure_topics(bootstrap, [topic], 3, 1, {"cleanup.policy": "compact"})
    await write_two_runs(bootstrap, topic, f"{prefix}-n")
    junk = kafka_sink(bootstrap, f"{prefix}.junk")
    assert await junk.deliver([Message(topic, b"junk", b"not json", [])]) == [None]
    await junk.stop()

    reading = await read_stats(bootstrap, topic, deadline_s=WAIT_S)
    run_1_up_a = [
        (x.records, x.bytes)
        for x in reading.lines
        if x.run == "run-1" and x.bucket_start_ms == A and x.direction == "up"
    ]
    assert run_1_up_a == [(2, 200), (3, 250)]  # both writes are there: the report keeps the last
    assert [u.problem for u in reading.unreadable] == [
        "value: not JSON: Expecting value: line 1 column 1 (char 0)"
    ]

    config = write_config(tmp_path / "node.toml", bootstrap, prefix)
    period = ["--since", "2026-01-01", "--until", "2026-01-01T01:00"]
    argv = ["stats", "--config", str(config), *period]
    assert await asyncio.to_thread(main, [*argv, "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "since": "2026-01-01T00:00:00Z",
        "until": "2026-01-01T01:00:00Z",
        "by": ["dept", "resource", "direction"],
        "rows": [
            {
                "dept": "HRSS",
                "resource": UP.resource,
                "direction": "up",
                "records": 8,
                "bytes": 750,
            },
            {
                "dept": "PSB",
                "resource": LOCAL.resource,
                "direction": "local",
                "records": 4,
                "bytes": 400,
            },
        ],
        "total": {"records": 12, "bytes": 1150},
    }
    assert "skipped 1 unreadable record(s)" in captured.err

    assert await asyncio.to_thread(main, argv) == 0
    assert capsys.readouterr().out.splitlines() == [
        "since 2026-01-01T00:00:00Z until 2026-01-01T01:00:00Z (buckets starting in it)",
        "department  resource           direction  records  bytes",
        "HRSS        410100-HRSS-00001  up               8    750",
        "PSB         410100-PSB-00001   local            4    400",
        "total                                          12   1150",
    ]

    whole = [
        "--since",
        "2026-01-01T08:00+08:00",
        "--until",
        "2026-01-01T02:00",
        "--by",
        "direction",
        "--format",
        "json",
    ]
    assert await asyncio.to_thread(main, ["stats", "--config", str(config), *whole]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == [
        {"direction": "local", "records": 4, "bytes": 400},
        {"direction": "up", "records": 18, "bytes": 1750},
    ]


async def test_stats_command_exits_1_when_the_cluster_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens at the configured address: exit 1 with a clear message, within the timeout."""
    bootstrap = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "node.toml", bootstrap, "nowhere")
    argv = ["stats", "--config", str(config), "--timeout", "3"]
    assert await asyncio.wait_for(asyncio.to_thread(main, argv), 20) == 1
    captured = capsys.readouterr()
    assert f"cannot reach the Kafka cluster at {bootstrap}" in captured.err
    assert captured.out == ""


async def test_stats_command_exits_1_when_the_topic_does_not_exist(
    clusters: dict[str, str], prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cluster without the stats topic (the node never ran): exit 1 naming the topic."""
    config = write_config(tmp_path / "node.toml", clusters["county"], prefix)
    assert await asyncio.to_thread(main, ["stats", "--config", str(config), "--timeout", "10"]) == 1
    assert f"topic {prefix}.stats does not exist" in capsys.readouterr().err
