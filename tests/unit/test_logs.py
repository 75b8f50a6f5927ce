"""Stdlib records go through structlog as rate-limited JSON lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from node.ops.logs import CHATTY_LIBRARIES, RateLimitFilter, configure_logging


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        """The current fake time in seconds."""
        return self.now


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the root logger, the library loggers and structlog back as they were."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    library_levels = {name: logging.getLogger(name).level for name in CHATTY_LIBRARIES}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lib_level in library_levels.items():
        logging.getLogger(name).setLevel(lib_level)
    structlog.reset_defaults()


def record(msg: str, name: str = "aiokafka.conn") -> logging.LogRecord:
    """A warning record from the named logger."""
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, None, None)


def json_lines(text: str) -> list[dict[str, object]]:
    """The JSON objects of the captured stdout, one per line."""
    return [json.loads(line) for line in text.splitlines()]


def test_limiter_lets_burst_through_then_suppresses() -> None:
    """The limiter passes N records of one template per window and drops the rest."""
    limiter = RateLimitFilter(burst=3, interval=10.0, clock=FakeClock())
    passed = [limiter.filter(record("Unable connect to node with id %s")) for _ in range(5)]
    assert passed == [True, True, True, False, False]
    assert limiter.filter(record("Got error produce response"))
    assert limiter.filter(record("Unable connect to node with id %s", name="aiohttp.client"))


def test_limiter_reports_suppressed_count_in_next_window() -> None:
    """The first record of the next window carries how many the closed window suppressed."""
    clock = FakeClock()
    limiter = RateLimitFilter(burst=2, interval=10.0, clock=clock)
    for _ in range(6):
        limiter.filter(record("Unable connect"))
    clock.now = 10.0
    first, second = record("Unable connect"), record("Unable connect")
    assert limiter.filter(first)
    assert limiter.filter(second)
    assert first.__dict__["suppressed"] == 4
    assert "suppressed" not in second.__dict__


def test_limiter_evicts_oldest_key() -> None:
    """Tracked keys are capped, so a flood of distinct templates cannot grow memory."""
    limiter = RateLimitFilter(burst=1, max_keys=2, clock=FakeClock())
    for msg in ("a", "b", "c"):
        assert limiter.filter(record(msg))
    assert limiter.filter(record("a"))
    assert not limiter.filter(record("c"))


def test_stdlib_record_is_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A stdlib logger's record comes out as one JSON line with logger, level and event."""
    configure_logging("json", "info")
    logging.getLogger("aiokafka.producer").warning("Got error produce response: %s", "timeout")
    [line] = json_lines(capsys.readouterr().out)
    assert line["logger"] == "aiokafka.producer"
    assert line["level"] == "warning"
    assert line["event"] == "Got error produce response: timeout"
    assert "timestamp" in line


def test_stdlib_flood_is_rate_limited(capsys: pytest.CaptureFixture[str]) -> None:
    """A flood of one template is cut to the default burst of five lines."""
    configure_logging("json", "info")
    for node_id in range(50):
        logging.getLogger("aiokafka.conn").error("Unable connect to node with id %s", node_id)
    assert len(json_lines(capsys.readouterr().out)) == 5


def test_aiokafka_info_is_filtered_at_info(capsys: pytest.CaptureFixture[str]) -> None:
    """An aiokafka INFO record is dropped when the node logs at info."""
    configure_logging("json", "info")
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Discovered coordinator")
    assert capsys.readouterr().out == ""


def test_structlog_events_still_json(capsys: pytest.CaptureFixture[str]) -> None:
    """The node's own structlog events keep their JSON shape and level filter."""
    configure_logging("json", "info")
    log = structlog.get_logger("node")
    log.debug("hidden")
    log.info("batch", records=3)
    [line] = json_lines(capsys.readouterr().out)
    assert line["event"] == "batch"
    assert line["records"] == 3
    assert line["level"] == "info"


def test_configure_twice_writes_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Configuring twice leaves one handler, so each record is written once."""
    configure_logging("json", "info")
    configure_logging("json", "info")
    logging.getLogger("aiohttp.server").error("Error handling request")
    assert len(json_lines(capsys.readouterr().out)) == 1
