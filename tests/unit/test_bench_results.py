"""A benchmark run narrowed by its options never replaces the committed figures of a full run."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.benchmark_modules import load


def _common() -> ModuleType:
    return load("common")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bridges", default="raw,node,mm2")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--no-kafka", dest="kafka", action="store_false")
    return parser


@pytest.mark.parametrize(
    ("argv", "partial"),
    [
        ([], False),
        (["--quick"], False),
        (["--bridges", "node"], True),
        (["--rounds", "1"], True),
        (["--no-kafka"], True),
        (["--bridges", "raw,node,mm2"], False),  # the default, given explicitly
    ],
)
def test_a_run_is_narrowed_by_any_option_but_quick(argv: list[str], partial: bool) -> None:
    """Only ``--quick`` and the defaults leave a run whole."""
    parser = _parser()
    assert _common().narrowed(parser, parser.parse_args(argv)) is partial


@pytest.mark.parametrize(
    ("marks", "name"),
    [
        ({}, "demo.json"),
        ({"quick": True}, "demo-quick.json"),
        ({"partial": True}, "demo-partial.json"),
        ({"quick": True, "partial": True}, "demo-quick.json"),
    ],
)
def test_quick_and_partial_runs_write_beside_the_full_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marks: dict[str, bool], name: str
) -> None:
    """A quick or partial run writes NAME-quick.json or NAME-partial.json, never NAME.json."""
    common = _common()
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    path = common.write("demo", {"figure": 1, **marks})
    assert path == tmp_path / name
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert json.loads(path.read_text())["figure"] == 1


def test_the_host_is_named_by_its_cpu_model_and_clock(tmp_path: Path) -> None:
    """Machine facts name the processor, so runs on different hosts are not compared blindly."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Example CPU 9000\ncpu MHz\t\t: 2599.998\n\n"
        "processor\t: 1\nmodel name\t: Example CPU 9000\ncpu MHz\t\t: 2599.998\n"
    )
    common = _common()
    assert common.cpu_model(str(cpuinfo)) == "Example CPU 9000 at 2,600 MHz"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Example CPU 9000\n")
    assert common.cpu_model(str(cpuinfo)) == "Example CPU 9000"
    assert common.cpu_model(str(tmp_path / "absent")) == ""


def _summary(bridge: str, rate: float, cpu: float) -> dict[str, object]:
    return {"hops": 1, "payload_bytes": 1024, "bridge": bridge,
            "records_per_s": {"median": rate, "min": rate, "max": rate},
            "cpu_us_per_record": {"median": cpu, "min": cpu, "max": cpu}}  # fmt: skip


def test_two_workers_are_set_against_mirrormaker_2_when_both_ran(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two workers' rate and CPU per record over MM2's medians; nothing without MM2."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    e2e = load("bench_e2e")
    runs = [_summary("node", 10_000, 40.0), _summary("node-w2", 15_000, 42.0)]
    [alone] = e2e.ratios(runs)
    assert "w2_over_mm2" not in alone
    assert alone["w2_over_node"] == pytest.approx(1.5)
    [row] = e2e.ratios([*runs, _summary("mm2", 12_000, 30.0)])
    assert row["w2_over_mm2"] == pytest.approx(1.25)
    assert row["cpu_w2_over_mm2"] == pytest.approx(1.4)
    assert row["node_over_mm2"] == pytest.approx(10_000 / 12_000)


def _e2e(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    return load("bench_e2e")


@pytest.mark.parametrize(
    ("fastest", "exhausted", "available", "want"),
    [
        (10_000, False, 500_000, 180_000),  # 18 s at its fastest second: enough already
        (50_000, False, 500_000, 900_000),  # a faster host: wants more
        (0, True, 500_000, 2_000_000),  # ran out in its warm-up: at least four times as many
        (150_000, True, 500_000, 2_700_000),
    ],
)
def test_a_stage_wants_records_for_its_fastest_bridge(
    monkeypatch: pytest.MonkeyPatch, fastest: int, exhausted: bool, available: int, want: int
) -> None:
    """The fill follows the fastest second seen, as the first fill follows CEILINGS."""
    row = {"fastest_second": fastest, "exhausted": exhausted}
    assert _e2e(monkeypatch).wanted(row, available, 10.0) == want


def test_a_finished_sizes_topics_are_told_apart_from_every_other_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``drop_stages`` deletes what ``_size_of`` names: the stages of one size, nothing else."""
    e2e = _e2e(monkeypatch)
    for hops, fresh in ((1, False), (1, True), (2, False)):
        prefix = e2e.stage_prefix(hops, fresh, 1024)
        assert e2e._size_of(f"{prefix}.up.410102") == 1024
        assert e2e._size_of(f"{prefix}.audit.410100") == 1024
    assert e2e._size_of(f"{e2e.stage_prefix(1, False, 10240)}.up.410102") == 10240
    for other in ("mm2-offset-syncs.city.internal", "heartbeats", "b1p1024x", "ab1p1024x5.up"):
        assert e2e._size_of(other) is None


REPORTS = """
import sys, time
print("log4j says hello", flush=True)
print("100 records sent, 20.0 records/sec (0.02 MB/sec), 5.0 ms avg latency.", flush=True)
print("500 records sent, 100.0 records/sec (0.10 MB/sec), 4.0 ms avg latency.", flush=True)
print("600 records sent, 150.0 records/sec (0.15 MB/sec), 3.0 ms avg latency.", flush=True)
if sys.argv[1] == "more":
    print("700 records sent, 175.0 records/sec (0.17 MB/sec), 3.0 ms avg latency.", flush=True)
    time.sleep(60)
"""


def test_kafkas_producer_is_measured_over_its_steady_reports_then_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first report is warm-up; the next window's worth count; the tool is not waited for."""
    e2e = _e2e(monkeypatch)
    command = [sys.executable, "-c", REPORTS, "more"]
    began = time.monotonic()
    records, seconds = e2e.steady_interval_rate(command, 10.0, timeout_s=30)
    assert (records, seconds) == (1100, pytest.approx(9.0))  # 500 in 5 s, 600 in 4 s
    assert time.monotonic() - began < 30  # stopped after its reports, not after its sleep
    with pytest.raises(RuntimeError, match="2 of 3 steady reports"):  # it ended too soon
        e2e.steady_interval_rate([sys.executable, "-c", REPORTS, "fewer"], 15.0, timeout_s=30)


def _fake_clusters(work: Path) -> tuple[Path, list[object]]:
    """A work dir laid out as the brokers leave it: their data and their logs."""
    for name in ("city", "province"):
        (work / "kafka" / name / "log" / "topic-0").mkdir(parents=True)
        (work / "kafka" / name / "log" / "topic-0" / "00.log").write_bytes(b"data")
        (work / "kafka" / name / "broker.log").write_text("ERROR the broker died\n")
    return work, []


def test_a_failed_bench_keeps_the_brokers_logs_and_drops_their_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failure the logs are there to read; after a success nothing is left."""
    e2e = load("bench_e2e")
    stopped: list[list[object]] = []
    monkeypatch.setattr(e2e.localkafka, "stop_clusters", stopped.append)
    failed, done = tmp_path / "failed", tmp_path / "done"
    monkeypatch.setattr(e2e, "start_bench_clusters", lambda *_: _fake_clusters(failed))
    with pytest.raises(RuntimeError), e2e.bench_clusters("bench", ("city", "province")):
        raise RuntimeError("the province broker died")
    assert sorted(p.relative_to(failed).as_posix() for p in failed.rglob("*") if p.is_file()) == [
        "kafka/city/broker.log",
        "kafka/province/broker.log",
    ]
    monkeypatch.setattr(e2e, "start_bench_clusters", lambda *_: _fake_clusters(done))
    with e2e.bench_clusters("bench", ("city", "province")) as (work, _):
        assert work == done
    assert not done.exists()
    assert len(stopped) == 2  # stopped both times


def test_brokers_shared_by_run_py_are_used_as_named_and_left_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script given every broker it asks for starts and stops none; short of one, it is given none."""
    e2e = _e2e(monkeypatch)
    spec = e2e.localkafka.ClusterSpec
    running = [
        e2e.localkafka.Cluster(spec(name, port, port + 1), tmp_path / name, tmp_path / "log", pid)
        for name, port, pid in (("county", 19092, 101), ("city", 20092, 102))
    ]
    monkeypatch.setenv(e2e.SHARED_CLUSTERS, e2e.share(running))
    monkeypatch.setattr(
        e2e.localkafka, "stop_clusters", lambda _: pytest.fail("stopped a shared broker")
    )
    monkeypatch.setattr(e2e, "start_bench_clusters", lambda *_: pytest.fail("started a broker"))
    with e2e.bench_clusters("bench", ("city", "county")) as (work, clusters):
        assert [(c.spec.name, c.bootstrap, c.pid) for c in clusters] == [
            ("city", "127.0.0.1:20092", 102),
            ("county", "127.0.0.1:19092", 101),
        ]
        assert work.is_dir()
    assert not work.exists()  # the work dir is the script's own
    assert e2e.shared_clusters(("city", "province")) is None
    monkeypatch.delenv(e2e.SHARED_CLUSTERS)
    assert e2e.shared_clusters(("city",)) is None
