"""What the lead makes of its workers' messages: states, counts, lags, committed batches.

Pure logic (no process is started); the processes themselves are tested on real brokers in
``tests/integration/test_workers.py`` and ``tests/faults``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from node.config import load_config
from node.core.audit import Fact, Outcome
from node.core.outcome import Direction, Reason
from node.kafka.accounting import Summary
from node.supervisor import Health
from node.workers import (
    STOP,
    Committed,
    RelaysCurrent,
    Report,
    StateChanged,
    WorkerProcess,
    WorkerSide,
    _Heard,
)

CONFIG = load_config(Path(__file__).resolve().parents[2] / "deploy/examples/city-410100.toml")


class Lead:
    """A WorkerProcess whose effects are written down instead of applied."""

    def __init__(self) -> None:
        self.health = Health()
        self.applied: list[tuple[str, Any]] = []
        self.counted: list[tuple[str, str, float]] = []
        self.lags: list[tuple[str, Mapping[int, int] | None]] = []
        self.worker = WorkerProcess(
            1, CONFIG, self.health,
            apply=lambda link, summary: self.applied.append((link, summary)),
            count=lambda counter, link, amount: self.counted.append((counter, link, amount)),
            lagging=lambda link, lags: self.lags.append((link, lags)),
            relays=[], started_ms=0, target=lambda *_: None, log=structlog.get_logger(),
        )  # fmt: skip


def test_worker_k_is_down_naming_each_of_its_loops_that_is_down_and_up_when_all_are() -> None:
    """The lead's ``worker-1`` mirrors its worker's loops."""
    lead, heard = Lead(), _Heard()
    lead.worker._handle(StateChanged("local", False, "starting"), heard)
    lead.worker._handle(StateChanged("parent", False, "broker gone"), heard)
    state = lead.health.snapshot()["worker-1"]
    assert (state.up, state.reason) == (False, "local: starting; parent: broker gone")
    lead.worker._handle(StateChanged("local", True, ""), heard)
    assert lead.health.snapshot()["worker-1"].reason == "parent: broker gone"
    lead.worker._handle(StateChanged("parent", True, ""), heard)
    assert lead.health.is_up("worker-1")


def test_counter_totals_become_increments_once_each_and_again_after_a_restart() -> None:
    """A worker sends totals; the lead adds what is new, and a restarted worker counts from 0."""
    lead, heard = Lead(), _Heard()
    for total in (3.0, 3.0, 5.0):
        lead.worker._handle(Report({}, {("delivery_retries", "local"): total}), heard)
    assert lead.counted == [("delivery_retries", "local", 3.0), ("delivery_retries", "local", 2.0)]
    lead.worker._handle(Report({}, {("delivery_retries", "local"): 1.0}), _Heard())
    assert lead.counted[-1] == ("delivery_retries", "local", 1.0)


def test_lags_and_committed_batches_go_to_the_links_of_the_same_name() -> None:
    """A report's lags reach each named link; a committed batch is applied to its link."""
    lead, heard = Lead(), _Heard()
    lead.worker._handle(Report({"local": {0: 7, 2: 1}, "parent": {}}, {}), heard)
    assert lead.lags == [("local", {0: 7, 2: 1}), ("parent", {})]
    assert heard.lagged == {"local", "parent"}
    summary = object()
    lead.worker._handle(Committed("parent", summary), heard)  # type: ignore[arg-type]
    assert lead.applied == [("parent", summary)]


def test_a_committed_batch_crosses_the_pipe_whole_its_audit_facts_still_facts() -> None:
    """A summary sent over a worker's pipe arrives equal, its audit facts of their own type."""
    forwarded = ("R001", "410102", "D01", "up:410100", 7, Outcome.FORWARDED, "", "", "ab" * 32)
    refused = ("R002", "410102", "D02", "", 8, Outcome.REFUSED, "grade", "too high", "cd" * 32)
    facts = [Fact(f"id-{n}", *forwarded) for n in range(3)] + [Fact("id-9", *refused)]
    summary = Summary(
        4, 3, 1, {Direction.UP: 3, Reason.GRADE: 1}, {Direction.UP: 5}, 6, {}, {"410102": [4, 80]},
        {"410100": [3, 60]}, {}, [5, 5, 5], [], [], {}, {"R001"}, audit=facts, routing_s=0.25,
    )  # fmt: skip
    worker_end, lead_end = multiprocessing.Pipe()
    try:
        WorkerSide(1, worker_end, 0, []).committed("parent", summary)
        got = lead_end.recv()
    finally:
        worker_end.close()
        lead_end.close()
    assert got == Committed("parent", summary)
    assert [type(fact) for fact in got.summary.audit] == [Fact] * 4
    assert got.summary.audit[3].outcome is Outcome.REFUSED


def test_a_worker_takes_the_relays_currency_and_knows_stop() -> None:
    """The worker side mirrors the lead's relays; only STOP stops it."""
    side = WorkerSide(1, None, 0, ["grants-down", "grants-from"])  # type: ignore[arg-type]
    assert side.heard(RelaysCurrent({"grants-down": 12.5})) is False
    assert [(r.name, r.current_at) for r in side.relays] == [
        ("grants-down", 12.5), ("grants-from", None),
    ]  # fmt: skip
    assert side.heard(STOP) is True
