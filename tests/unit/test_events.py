"""The typed log events: one catalogue, unique names, and what a failing link says, read as data."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import structlog
from structlog.testing import capture_logs

from node.core.heartbeat import Beat
from node.core.peers import CHILD, PeerWatch
from node.core.topology import Topology
from node.ops import events
from node.ops.events import EVENTS, Event, GapDetected, emit
from tests.unit.test_link_failures import FAST, Rigs, publish

NODE = Path(__file__).resolve().parents[2] / "node"
LEVELS = {"info", "warning", "error"}


def test_every_event_is_catalogued_once_with_a_level_and_a_docstring() -> None:
    """Each Event class is in EVENTS, names are unique, levels are known, each says what it means."""
    defined = {
        c for _, c in inspect.getmembers(events, inspect.isclass)
        if issubclass(c, Event) and c is not Event
    }  # fmt: skip
    assert defined == set(EVENTS)
    names = [event.name for event in EVENTS]
    assert len(names) == len(set(names))
    assert {event.level for event in EVENTS} <= LEVELS
    assert all(event.__doc__ and len(event.__doc__) > 20 for event in EVENTS)


def test_emit_logs_the_name_at_the_level_with_every_field() -> None:
    """An emitted event is one log entry: its name, its level, exactly its fields."""
    gap = GapDetected("local", "cascade.outbox.PSB", 2, 10, 19, 10, 20, "retention")
    with capture_logs() as logs:
        emit(structlog.get_logger("t"), gap)
    assert logs == [{
        "event": "gap_detected", "log_level": "error", "link": "local", "topic": "cascade.outbox.PSB",
        "partition": 2, "first_lost": 10, "last_lost": 19, "lost": 10, "resumed_at": 20,
        "why": "retention",
    }]  # fmt: skip
    assert set(logs[0]) - {"event", "log_level"} == {f.name for f in dataclasses.fields(gap)}


def test_the_node_logs_only_through_typed_events() -> None:
    """No module of the node calls a logger with a bare event name: every event is catalogued."""
    bare = re.compile(r"\blog\w*\.(debug|info|warning|error|exception|critical)\(")
    exempt = {NODE / "ops" / "events.py", NODE / "ops" / "logs.py"}
    found = [
        f"{path.relative_to(NODE)}:{number}"
        for path in sorted(set(NODE.rglob("*.py")) - exempt)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if bare.search(line)
    ]
    assert found == []


async def test_a_failing_link_says_down_with_the_reason_then_up_with_the_outage() -> None:
    """Injected failures read as link_down (reason, retry), then link_up with how long it was down."""
    rigs = Rigs()
    rig = rigs(dataclasses.replace(FAST, delivery_timeout_s=0.3))
    try:
        sent = publish(rig.local, 300)
        rig.parent.stall()
        with capture_logs() as logs:
            rig.start()
            await rig.wait(lambda: not rig.up() and "not acked" in rig.reason())
            rig.parent.release()
            await rig.all_committed(len(sent))
            await rig.stop()
    finally:
        await rigs.close()
    names = [entry["event"] for entry in logs if entry["event"] != "batch"]
    assert names[0] == "link_started"
    assert names[1] == "link_down"
    assert "link_up" in names
    assert names[-1] == "link_stopped"
    down = next(entry for entry in logs if entry["event"] == "link_down")
    assert down["log_level"] == "warning"
    assert "not acked within 0.3 s" in down["reason"]
    up = next(entry for entry in logs if entry["event"] == "link_up")
    assert up["down_for_s"] is not None
    assert up["down_for_s"] >= 0
    batches = [entry for entry in logs if entry["event"] == "batch"]
    assert sum(entry["records"] for entry in batches) == len(sent)


def test_a_silent_neighbour_is_told_once_and_again_when_it_speaks() -> None:
    """silence_changes reports a peer falling silent once, and once more when its beat returns."""
    peers = PeerWatch(
        Topology("410100", "city", None, ("410102",)), 0, 1.0, bucket_s=60, keep=5, settle_s=1
    )
    assert peers.silence_changes(2000, CHILD) == []
    [(reading, silent)] = peers.silence_changes(3500, CHILD)
    assert (reading.peer, silent) == ("410102", True)
    assert peers.silence_changes(4000, CHILD) == []
    peers.heard(Beat("410102", "n", "county", 4000, 1.0), 4001)
    [(reading, silent)] = peers.silence_changes(4100, CHILD)
    assert (reading.peer, silent) == ("410102", False)
