"""Logging: structlog configured once at start-up, and stdlib logging routed through it.

JSON lines by default; readable console output when stdout is a terminal. Loops bind their context
(link, partition, offsets) and write one summary line per batch, never one per record.

Libraries (aiokafka, aiohttp, asyncio) log through stdlib `logging`: their records go through the
same renderer to the same stdout, at WARNING for aiokafka and aiohttp unless the node runs at debug,
and rate-limited per logger and message template so a broker outage cannot drown the node's events.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

HANDLER_NAME = "node.ops.logs"
CHATTY_LIBRARIES = ("aiokafka", "aiohttp")


@dataclass
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0


class RateLimitFilter(logging.Filter):
    """Let at most `burst` records per (logger, message template) through per `interval` seconds.

    The first record let through after a window that suppressed some carries `suppressed=<count>`.
    At most `max_keys` keys are tracked; the one whose window started longest ago is evicted first.
    """

    def __init__(
        self,
        burst: int = 5,
        interval: float = 10.0,
        max_keys: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._burst = burst
        self._interval = interval
        self._max_keys = max_keys
        self._clock = clock
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the record goes out; marks it with the count hidden in the previous window."""
        key = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.start >= self._interval:
                if window is not None and window.suppressed:
                    record.__dict__["suppressed"] = window.suppressed
                window = self._windows[key] = _Window(now)
                self._windows.move_to_end(key)
                while len(self._windows) > self._max_keys:
                    self._windows.popitem(last=False)
            if window.passed < self._burst:
                window.passed += 1
                return True
            window.suppressed += 1
            return False


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog and stdlib logging for the whole process (call from the entry point)."""
    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    levelno = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )

    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(HANDLER_NAME)
    handler.addFilter(RateLimitFilter())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=("suppressed",)),
                *shared,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(levelno)
    library_level = logging.INFO if levelno <= logging.DEBUG else max(levelno, logging.WARNING)
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(library_level)
