"""Exchange statistics: the ledger, the report, the topic's JSON, the writer loop and the command."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from node.cli import main
from node.core.stats import StatsLedger, StatsLine, StatsRow, summarize, total
from node.core.tally import Tally, TallyKey
from node.errors import StatsError, TransportError
from node.kafka.stats import StatsWriter
from node.stats_cli import parse_by, parse_when, render_json, render_table
from node.supervisor import Health
from tests.memory_transport import MemoryCluster, MemorySink

WAIT_S = 5.0
HOUR_MS = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a bucket start for any width dividing a day
UP = TallyKey("up", "HRSS", "410100-HRSS-00001", "410100")
LOCAL = TallyKey("local", "PSB", "410100-PSB-00001", "inbox")
TOPIC = "t.stats"


def tally(*lines: tuple[TallyKey, int, int]) -> Tally:
    """A tally of (key, records, bytes) lines."""
    return {key: [records, size] for key, records, size in lines}


def line(
    bucket_ms: int = T0, run: str = "r1", records: int = 1, size: int = 10, **fields: Any
) -> StatsLine:
    """A stats line of node n1 for UP, with the given overrides."""
    values: dict[str, Any] = {
        "bucket_start_ms": bucket_ms, "bucket_s": 3600, "node": "n1", "run": run,
        "direction": UP.direction, "source_dept": UP.source_dept, "resource": UP.resource,
        "destination": UP.destination, "records": records, "bytes": size,
    }  # fmt: skip
    values.update(fields)
    return StatsLine(**values)


def totals(lines: list[StatsLine]) -> dict[tuple[int, str, str], tuple[int, int]]:
    """(bucket, direction, source department) -> (records, bytes) of ``lines``."""
    return {(x.bucket_start_ms, x.direction, x.source_dept): (x.records, x.bytes) for x in lines}


# --- the ledger ---------------------------------------------------------------------------------


def test_ledger_accumulates_cumulative_totals_per_bucket_and_key() -> None:
    """Batches in one bucket add up; a batch in the next bucket starts that bucket from zero."""
    ledger = StatsLedger("n1", "r1", 3600)
    ledger.add(T0 + 5, tally((UP, 2, 200), (LOCAL, 1, 7)))
    ledger.add(T0 + HOUR_MS - 1, tally((UP, 3, 300)))
    ledger.add(T0 + HOUR_MS, tally((UP, 1, 50)))
    assert totals(ledger.changed()) == {
        (T0, "up", "HRSS"): (5, 500),
        (T0, "local", "PSB"): (1, 7),
        (T0 + HOUR_MS, "up", "HRSS"): (1, 50),
    }
    assert {(x.node, x.run, x.bucket_s) for x in ledger.changed()} == {("n1", "r1", 3600)}


def test_confirmed_lines_are_not_returned_again_until_counted_again() -> None:
    """After confirm, changed() is empty; a new batch brings back only its line, cumulative."""
    ledger = StatsLedger("n1", "r1", 3600)
    ledger.add(T0, tally((UP, 2, 200), (LOCAL, 1, 7)))
    ledger.confirm(ledger.changed())
    assert ledger.changed() == []
    ledger.add(T0 + 1, tally((UP, 1, 100)))
    assert totals(ledger.changed()) == {(T0, "up", "HRSS"): (3, 300)}


def test_an_unconfirmed_write_loses_nothing() -> None:
    """Lines taken but never confirmed (the write failed) are returned again, with later counts."""
    ledger = StatsLedger("n1", "r1", 3600)
    ledger.add(T0, tally((UP, 2, 200)))
    taken = ledger.changed()
    ledger.add(T0 + 1, tally((UP, 1, 100)))
    assert totals(ledger.changed()) == {(T0, "up", "HRSS"): (3, 300)}
    ledger.confirm(taken)  # the older totals were written: the newer ones must still be
    assert totals(ledger.changed()) == {(T0, "up", "HRSS"): (3, 300)}


def test_confirm_ignores_lines_of_another_run() -> None:
    """A line with the same totals but another run id does not confirm this run's line."""
    ledger = StatsLedger("n1", "r1", 3600)
    ledger.add(T0, tally((UP, 1, 10)))
    ledger.confirm([line(run="r0")])
    assert len(ledger.changed()) == 1


def test_memory_keeps_only_recent_buckets_once_written() -> None:
    """A year of hourly batches, each written, leaves only the kept buckets in memory."""
    ledger = StatsLedger("n1", "r1", 3600, keep_buckets=2)
    for hour in range(24 * 365):
        ledger.add(T0 + hour * HOUR_MS, tally((UP, 1, 10), (LOCAL, 1, 10)))
        ledger.confirm(ledger.changed())
    assert ledger.buckets_held == 2
    assert ledger.dropped_lines == 0


def test_unwritten_buckets_are_kept_up_to_the_cap_then_counted_as_dropped() -> None:
    """Pending buckets outlive the kept window; past max_buckets the oldest is dropped, counted."""
    ledger = StatsLedger("n1", "r1", 3600, keep_buckets=2, max_buckets=5)
    for hour in range(4):
        ledger.add(T0 + hour * HOUR_MS, tally((UP, 1, 10)))
    assert ledger.buckets_held == 4
    assert ledger.dropped_lines == 0
    for hour in range(4, 8):
        ledger.add(T0 + hour * HOUR_MS, tally((UP, 1, 10), (LOCAL, 1, 10)))
    assert ledger.buckets_held == 5
    assert ledger.dropped_lines == 3  # hours 0, 1, 2: one line each
    assert min(x.bucket_start_ms for x in ledger.changed()) == T0 + 3 * HOUR_MS


def test_a_count_for_a_forgotten_bucket_goes_to_the_newest() -> None:
    """When the clock goes back past the kept buckets, the count is not lost nor overwrites."""
    ledger = StatsLedger("n1", "r1", 3600, keep_buckets=2)
    ledger.add(T0, tally((UP, 5, 50)))
    ledger.add(T0 + 3 * HOUR_MS, tally((UP, 1, 10)))
    ledger.confirm(ledger.changed())
    ledger.add(T0 + 10, tally((UP, 2, 20)))  # hour 0 was written and forgotten
    assert totals(ledger.changed()) == {(T0 + 3 * HOUR_MS, "up", "HRSS"): (3, 30)}
    ledger.add(T0 + 2 * HOUR_MS, tally((UP, 1, 1)))  # still kept: counted where it belongs
    assert totals(ledger.changed())[(T0 + 2 * HOUR_MS, "up", "HRSS")] == (1, 1)


def test_an_empty_tally_creates_no_bucket() -> None:
    """Adding nothing leaves nothing to write."""
    ledger = StatsLedger("n1", "r1", 60)
    ledger.add(T0, {})
    assert ledger.changed() == []
    assert ledger.buckets_held == 0


def test_ledger_rejects_bad_settings() -> None:
    """A bucket under a second, or a cap not above the kept buckets, is refused."""
    with pytest.raises(StatsError, match="bucket_s"):
        StatsLedger("n1", "r1", 0)
    with pytest.raises(StatsError, match="max_buckets"):
        StatsLedger("n1", "r1", 60, keep_buckets=3, max_buckets=3)


# --- the report ---------------------------------------------------------------------------------


def test_summarize_keeps_the_last_line_of_each_key() -> None:
    """Of two writes of one key the later wins, as compaction would keep it."""
    rows = summarize([line(records=2, size=20), line(records=3, size=30)], T0, T0 + HOUR_MS)
    assert rows == [StatsRow(("HRSS", UP.resource, "up"), 3, 30)]


def test_summarize_sums_runs_and_nodes() -> None:
    """Lines of two runs of one node and of another node add up."""
    lines = [line(run="r1", records=3), line(run="r2", records=4), line(node="n2", records=5)]
    assert summarize(lines, T0, T0 + 1)[0].records == 12


def test_summarize_counts_buckets_starting_in_the_period() -> None:
    """A bucket counts when its start is in [since, until): not one starting before or at until."""
    lines = [
        line(T0 - HOUR_MS, records=1, size=2),
        line(T0, records=10, size=20),
        line(T0 + HOUR_MS, records=100, size=200),
    ]
    assert total(summarize(lines, T0, T0 + HOUR_MS)) == (10, 20)
    assert total(summarize(lines, T0 - 1, T0 + HOUR_MS + 1)) == (110, 220)
    assert total(summarize(lines, T0 + 1, T0 + HOUR_MS)) == (0, 0)


def test_summarize_groups_by_the_dimensions_asked_and_sorts() -> None:
    """Grouping by direction merges departments; by department and destination splits them."""
    lines = [
        line(records=1),
        line(source_dept="PSB", records=2),
        line(direction="down", destination="410102", records=4),
    ]
    assert summarize(lines, T0, T0 + 1, by=("direction",)) == [
        StatsRow(("down",), 4, 10),
        StatsRow(("up",), 3, 20),
    ]
    assert [r.group for r in summarize(lines, T0, T0 + 1, by=("source_dept", "destination"))] == [
        ("HRSS", "410100"),
        ("HRSS", "410102"),
        ("PSB", "410100"),
    ]
    assert summarize(lines, T0, T0 + 1, by=()) == [StatsRow((), 7, 30)]


@pytest.mark.parametrize(
    ("since", "until", "by", "field"),
    [
        (T0, T0 + 1, ("department",), "by"),
        (T0, T0 + 1, ("resource", "resource"), "by"),
        (T0, T0, ("resource",), "since"),
    ],
)
def test_summarize_rejects_bad_queries(
    since: int, until: int, by: tuple[str, ...], field: str
) -> None:
    """An unknown or repeated dimension, or an empty period, is a StatsError naming it."""
    with pytest.raises(StatsError) as caught:
        summarize([], since, until, by)
    assert caught.value.field == field


# --- the topic's records ------------------------------------------------------------------------

texts = st.text(min_size=1, max_size=20)


@given(
    st.integers(0, 10**7), st.sampled_from([1, 60, 3600, 86400]), texts, texts, texts,
    st.text(max_size=20), st.text(max_size=20), st.text(max_size=20),
    st.integers(0, 2**62), st.integers(0, 2**62),
)  # fmt: skip
def test_json_round_trip(
    bucket: int, bucket_s: int, node: str, run: str, direction: str, dept: str, resource: str,
    destination: str, records: int, size: int,
) -> None:  # fmt: skip
    """Any line survives to_json/from_json unchanged, and its key names it alone."""
    made = StatsLine(bucket * bucket_s * 1000, bucket_s, node, run, direction, dept, resource,
                     destination, records, size)  # fmt: skip
    assert StatsLine.from_json(made.to_json()) == made
    assert json.loads(made.to_json())["v"] == 1


def test_keys_do_not_collide_when_fields_contain_the_separator() -> None:
    """Moving a '|' from one field to the next changes the key."""
    assert (
        line(source_dept="A|B", resource="C").key() != line(source_dept="A", resource="B|C").key()
    )
    assert line().key() == f"{T0}|n1|r1|up|HRSS|{UP.resource}|410100".encode()


def valid() -> dict[str, Any]:
    """A valid value as a dict, to spoil."""
    parsed: dict[str, Any] = json.loads(line().to_json())
    return parsed


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"v": 2}, "v"),
        ({"v": True}, "v"),
        ({"records": -1}, "records"),
        ({"records": 1.0}, "records"),
        ({"bytes": True}, "bytes"),
        ({"bytes": "10"}, "bytes"),
        ({"bucket_s": 0}, "bucket_s"),
        ({"bucket_start_ms": T0 + 1}, "bucket_start_ms"),
        ({"node": ""}, "node"),
        ({"resource": 7}, "resource"),
        ({"colour": "red"}, "colour"),
        ({"destination": None}, "destination"),
    ],
)
def test_from_json_names_the_bad_field(change: dict[str, Any], field: str) -> None:
    """Wrong types, ranges, versions and unknown fields are refused, naming the field."""
    with pytest.raises(StatsError) as caught:
        StatsLine.from_json(json.dumps({**valid(), **change}).encode())
    assert caught.value.field == field


@pytest.mark.parametrize("removed", ["run", "direction", "records", "bucket_s", "v"])
def test_from_json_names_a_missing_field(removed: str) -> None:
    """A value without a field is refused, naming it."""
    spoiled = valid()
    del spoiled[removed]
    with pytest.raises(StatsError) as caught:
        StatsLine.from_json(json.dumps(spoiled).encode())
    assert caught.value.field == removed


@pytest.mark.parametrize("data", [b"", b"\xff\xfe", b"{", b"[1]", b"null"])
def test_from_json_refuses_what_is_not_a_json_object(data: bytes) -> None:
    """Bytes that are not a JSON object are refused as a bad value."""
    with pytest.raises(StatsError) as caught:
        StatsLine.from_json(data)
    assert caught.value.field == "value"


# --- the writer ---------------------------------------------------------------------------------


def writer(
    ledger: StatsLedger, sink: MemorySink, health: Health, flush_s: float = 3600
) -> StatsWriter:
    """A writer of ``ledger`` to TOPIC."""
    return StatsWriter(
        ledger, sink, TOPIC, health, flush_s=flush_s, deadline_s=0.5, log=structlog.get_logger()
    )


def written(cluster: MemoryCluster) -> dict[bytes | None, StatsLine]:
    """The latest line per key in TOPIC, as compaction would leave it."""
    return {r.key: StatsLine.from_json(r.value or b"") for r in cluster.records(TOPIC)}


async def test_flush_writes_pending_lines_keyed_and_confirms_them() -> None:
    """Each pending line is written under its key; afterwards nothing is pending."""
    cluster = MemoryCluster()
    ledger = StatsLedger("n1", "r1", 3600)
    ledger.add(T0, tally((UP, 2, 20), (LOCAL, 1, 5)))
    assert await writer(ledger, MemorySink(cluster), Health()).flush() == 2
    assert {k: (x.records, x.bytes) for k, x in written(cluster).items()} == {
        line(records=2).key(): (2, 20),
        line(
            direction="local", source_dept="PSB", resource=LOCAL.resource, destination="inbox"
        ).key(): (1, 5),
    }
    assert ledger.changed() == []


async def test_a_failed_flush_keeps_the_lines_and_resets_the_sink() -> None:
    """A write that fails raises, leaves the lines pending, and the next flush writes them."""
    cluster = MemoryCluster()
    sink = MemorySink(cluster)
    ledger = StatsLedger("n1", "r1", 3600)
    ledger.add(T0, tally((UP, 2, 20)))
    cluster.fail_next(1)
    stats = writer(ledger, sink, Health())
    with pytest.raises(TransportError):
        await stats.flush()
    assert sink.resets == 1
    assert len(ledger.changed()) == 1
    assert await stats.flush() == 1
    assert [(x.records, x.bytes) for x in written(cluster).values()] == [(2, 20)]


async def test_a_flush_not_acked_in_time_fails_and_keeps_the_lines() -> None:
    """A stalled cluster makes the flush fail at its deadline, nothing confirmed."""
    cluster = MemoryCluster()
    ledger = StatsLedger("n1", "r1", 3600)
    ledger.add(T0, tally((UP, 2, 20)))
    cluster.stall()
    with pytest.raises(TransportError, match=r"not acked within 0\.5 s"):
        await asyncio.wait_for(writer(ledger, MemorySink(cluster), Health()).flush(), WAIT_S)
    assert len(ledger.changed()) == 1
    assert cluster.count(TOPIC) == 0


async def test_run_is_up_after_its_first_write_and_flushes_once_more_on_stop() -> None:
    """With a long interval, what is added while running is written by the final flush."""
    cluster = MemoryCluster()
    health = Health()
    health.register("stats")
    ledger = StatsLedger("n1", "r1", 3600)
    ledger.add(T0, tally((UP, 1, 10)))
    stats = writer(ledger, MemorySink(cluster), health)
    task = asyncio.create_task(stats.run())
    await cluster.wait_until(lambda: cluster.count(TOPIC) == 1)
    ledger.add(T0 + 1, tally((UP, 2, 20)))
    stats.request_stop()
    await asyncio.wait_for(task, WAIT_S)
    assert health.is_up("stats")
    assert [(x.records, x.bytes) for x in written(cluster).values()] == [(3, 30)]
    assert ledger.changed() == []


async def test_run_flushes_every_interval() -> None:
    """With a short interval, a line added while running is written without stopping."""
    cluster = MemoryCluster()
    ledger = StatsLedger("n1", "r1", 3600)
    stats = writer(ledger, MemorySink(cluster), Health(), flush_s=0.05)
    task = asyncio.create_task(stats.run())
    try:
        ledger.add(T0, tally((UP, 1, 10)))
        await cluster.wait_until(lambda: cluster.count(TOPIC) == 1)
        ledger.add(T0, tally((UP, 1, 10)))
        await cluster.wait_until(lambda: cluster.count(TOPIC) == 2)
    finally:
        stats.request_stop()
        await asyncio.wait_for(task, WAIT_S)
    assert [(x.records, x.bytes) for x in written(cluster).values()] == [(2, 20)]


async def test_run_raises_when_a_write_fails() -> None:
    """A failing write ends run() with the retriable error, for the supervisor to retry."""
    cluster = MemoryCluster()
    ledger = StatsLedger("n1", "r1", 3600)
    ledger.add(T0, tally((UP, 1, 10)))
    cluster.fail_next(1)
    with pytest.raises(TransportError) as caught:
        await asyncio.wait_for(writer(ledger, MemorySink(cluster), Health()).run(), WAIT_S)
    assert caught.value.retriable
    assert len(ledger.changed()) == 1


# --- the command --------------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T08:00", datetime(2026, 1, 1, 8, tzinfo=UTC)),
        ("2026-01-01 08:00:30", datetime(2026, 1, 1, 8, 0, 30, tzinfo=UTC)),
        ("2026-01-01T08:00+08:00", datetime(2026, 1, 1, 0, tzinfo=UTC)),
        ("2026-01-01T08:00Z", datetime(2026, 1, 1, 8, tzinfo=UTC)),
        ("now", NOW),
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("90m", NOW - timedelta(minutes=90)),
        ("2w", NOW - timedelta(weeks=2)),
        ("30s", NOW - timedelta(seconds=30)),
    ],
)
def test_parse_when(text: str, expected: datetime) -> None:
    """ISO dates and times (naive meaning UTC), now, and times ago are read."""
    parsed = parse_when(text, NOW)
    assert parsed == expected
    assert parsed.tzinfo is not None


def test_parse_when_keeps_the_zone_given() -> None:
    """A time with a zone is that instant, not UTC's wall clock."""
    assert parse_when("2026-01-01T08:00+08:00", NOW).utcoffset() == timedelta(hours=8)
    assert parse_when("2026-01-01T08:00+08:00", NOW) == datetime(
        2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=8))
    )


@pytest.mark.parametrize(
    "text", ["yesterday", "24", "h", "-1d", "2026-13-01", "1y", "99999999999d"]
)
def test_parse_when_refuses_what_it_cannot_read(text: str) -> None:
    """Anything else is a ValueError quoting the input."""
    with pytest.raises(ValueError, match="time"):
        parse_when(text, NOW)


def test_parse_by() -> None:
    """--by names map to fields and headings; unknown or repeated names are refused."""
    assert parse_by("dept, direction") == {
        "dept": ("source_dept", "department"),
        "direction": ("direction", "direction"),
    }
    assert parse_by("") == {}
    with pytest.raises(ValueError, match="unknown 'region'"):
        parse_by("dept,region")
    with pytest.raises(ValueError, match="twice"):
        parse_by("dept,dept")


def test_render_table_aligns_columns_and_adds_a_total() -> None:
    """Text columns are left-aligned, numbers right-aligned, and the total sums them."""
    rows = [StatsRow(("HRSS", "up"), 3, 1200), StatsRow(("PSB-LONG", "local"), 12, 5)]
    assert render_table(rows, ["department", "direction"]).splitlines() == [
        "department  direction  records  bytes",
        "HRSS        up               3   1200",
        "PSB-LONG    local           12      5",
        "total                       15   1205",
    ]


def test_render_json_has_the_period_rows_and_total() -> None:
    """JSON names rows by the --by names and gives the period in UTC."""
    since = datetime(2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=8)))
    document = json.loads(render_json([StatsRow(("HRSS",), 3, 30)], ["dept"], since, NOW))
    assert document == {
        "since": "2026-01-01T00:00:00Z", "until": "2026-03-01T12:00:00Z", "by": ["dept"],
        "rows": [{"dept": "HRSS", "records": 3, "bytes": 30}], "total": {"records": 3, "bytes": 30},
    }  # fmt: skip


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A valid node config whose cluster is never contacted by these tests."""
    path = tmp_path / "node.toml"
    path.write_text(
        '[node]\nid = "n1"\nlevel = "county"\nregion = "410102"\n\n[local]\nbootstrap = "127.0.0.1:9"\n',
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--since", "last tuesday"], "cannot read time 'last tuesday'"),
        (["--since", "2026-01-02", "--until", "2026-01-01"], "is not before --until"),
        (["--since", "2026-01-01", "--until", "2026-01-01T00:00Z"], "is not before --until"),
        (["--by", "dept,colour"], "unknown 'colour'"),
        (["--timeout", "0"], "--timeout"),
    ],
)
def test_stats_command_refuses_bad_input_with_exit_2(
    config_file: Path, options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad times, an empty period or an unknown --by exit 2 with the reason on stderr."""
    assert main(["stats", "--config", str(config_file), *options]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_stats_command_refuses_a_bad_config_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing config file exits 2 naming it."""
    assert main(["stats", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err
