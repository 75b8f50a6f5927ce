"""Worker processes: one node's links spread over several processes of one consumer group.

With ``flow.workers = N`` the node (the lead) runs its links as usual and starts N-1 workers.
A worker is a process of its own running only the links, with their own readers of the grants,
the feedback and the trust store, in the same consumer groups as the lead's links: Kafka shares
the source partitions out among all N, so each partition is still read by one process, in order.

A worker hands the lead what it did, over a pipe:

- each committed batch's ``Summary``, which the lead applies exactly as one of its own (the
  counters, the link's totals, heartbeats heard, statistics, quality, and the audit entries on
  the node's one chain);
- the state of each of its loops, so the lead's ``worker-K`` loop is down naming each of them
  that is down, with its reason;
- every second, its links' lags and their retry and gap counts.

The lead tells each worker, every second, when its grant relays were last confirmed current, so
a worker's grants fail closed exactly when the lead's do.

The lead keeps each worker running like any loop: a worker that exits or is killed makes
``worker-K`` down with its exit code, and it is started again after a backoff. A worker whose
lead is gone stops on its own (its end of the pipe closes). A soft stop asks each worker to
finish and commit; a worker still running when the stop is cut is killed by its process id.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any

import structlog

from node import heap
from node.config import NodeConfig
from node.errors import TransportError
from node.kafka.accounting import Summary
from node.kafka.grants import Current
from node.ops.events import WorkerExited, WorkerStarted, emit
from node.ops.logs import configure_logging
from node.ops.metrics import Metrics
from node.supervisor import Health, LoopState

REPORT_EVERY_S = 1.0
"""How often a worker tells the lead its links' lags and counts."""
JOIN_TIMEOUT_S = 5.0
"""How long the lead waits for a worker that closed its pipe to exit, before killing it."""
SHIPPED_COUNTERS = ("delivery_retries", "gaps", "gap_records")
"""Link counters of ``Metrics`` a worker counts on its own and the lead adds up."""
WORKER_LOOPS = frozenset({"local", "parent", "grants", "feedback", "trust", "trust-up"})
"""The loops a worker runs: the links and what they read while deciding."""


@dataclass(frozen=True, slots=True)
class Committed:
    """A batch a worker's link committed: the lead applies its summary."""

    link: str
    summary: Summary


@dataclass(frozen=True, slots=True)
class StateChanged:
    """One of a worker's loops went up or down."""

    loop: str
    up: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Report:
    """A worker's links' lags per partition, and their counters' totals so far."""

    lags: dict[str, dict[int, int]]
    counters: dict[tuple[str, str], float]  # (counter, link) -> total


@dataclass(frozen=True, slots=True)
class RelaysCurrent:
    """When each of the lead's grant relays was last confirmed current (None: not yet)."""

    times: dict[str, float | None]


STOP = "stop"
"""What the lead sends a worker to make it finish, commit and exit."""


@dataclass(slots=True)
class RelayMirror:
    """A worker's copy of one of the lead's grant relays' currency."""

    name: str
    current_at: float | None = None


class WorkerProcess:
    """The lead's loop ``worker-K``: starts worker K and applies what it says until it ends."""

    def __init__(
        self,
        index: int,
        config: NodeConfig,
        health: Health,
        *,
        apply: Callable[[str, Summary], None],
        count: Callable[[str, str, float], None],
        lagging: Callable[[str, Mapping[int, int] | None], None],
        relays: Sequence[Current],
        started_ms: int,
        target: Callable[[NodeConfig, int, Pipe, int, list[str]], None],
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.name = f"worker-{index}"
        self._index = index
        self._config = config
        self._health = health
        self._apply = apply
        self._count = count  # (counter, link, amount): add to the lead's counter
        self._lagging = lagging  # (link, lag per partition; None: the worker is gone)
        self._relays = relays
        self._started_ms = started_ms
        self._target = target  # the worker's entry point, importable by name (it is spawned)
        self._log = log.bind(worker=index)
        self._stopping = False
        self._pipe: Pipe | None = None

    def request_stop(self) -> None:
        """Ask the worker to finish, commit and exit; ``run`` returns once it has."""
        self._stopping = True
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.send(STOP)

    async def run(self) -> None:
        """Start the worker and apply what it says until its pipe closes.

        Raises TransportError when the worker ended without being asked to (it is started again
        after a backoff); kills it by its process id when this is cancelled (a hard stop).
        """
        if self._stopping:
            return
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited loop
        lead_end, worker_end = spawn.Pipe()
        process = spawn.Process(
            target=self._target, name=f"exchange-node-{self.name}", daemon=True,
            args=(
                self._config, self._index, worker_end, self._started_ms,
                [relay.name for relay in self._relays],
            ),
        )  # fmt: skip
        process.start()
        worker_end.close()  # only the worker holds its end: its exit closes the pipe here
        self._pipe = lead_end
        emit(self._log, WorkerStarted(self._index, process.pid or 0))
        heard = _Heard()
        telling = asyncio.ensure_future(self._tell_relays(lead_end))
        try:
            await self._read(lead_end, heard)
            await asyncio.to_thread(process.join, JOIN_TIMEOUT_S)
        finally:
            telling.cancel()
            self._pipe = None
            for link in heard.lagged:
                self._lagging(link, None)
            if process.is_alive():
                process.kill()  # a hard stop, or a worker that closed its pipe but hangs
                await asyncio.to_thread(process.join, JOIN_TIMEOUT_S)
            lead_end.close()
            emit(self._log, WorkerExited(self._index, process.pid or 0, process.exitcode))
        if not self._stopping:
            raise TransportError(f"{self.name} (pid {process.pid}) exited with {process.exitcode}")

    async def _tell_relays(self, pipe: Pipe) -> None:
        """Send the worker the relays' currency every second (its grants fail closed with ours)."""
        while True:
            with contextlib.suppress(OSError):
                pipe.send(RelaysCurrent({r.name: r.current_at for r in self._relays}))
            await asyncio.sleep(REPORT_EVERY_S)

    async def _read(self, pipe: Pipe, heard: _Heard) -> None:
        """Handle the worker's messages as they come, until it closes its end of the pipe."""
        loop = asyncio.get_running_loop()
        ended = loop.create_future()

        def readable() -> None:
            try:
                while pipe.poll():
                    self._handle(pipe.recv(), heard)
            except (EOFError, OSError):
                if not ended.done():
                    ended.set_result(None)

        loop.add_reader(pipe.fileno(), readable)
        try:
            await ended
        finally:
            loop.remove_reader(pipe.fileno())

    def _handle(self, message: Any, heard: _Heard) -> None:
        if isinstance(message, Committed):
            self._apply(message.link, message.summary)
        elif isinstance(message, StateChanged):
            heard.states[message.loop] = (message.up, message.reason)
            down = [(loop, why) for loop, (up, why) in sorted(heard.states.items()) if not up]
            if down:
                self._health.down(self.name, "; ".join(f"{loop}: {why}" for loop, why in down))
            else:
                self._health.up(self.name)
        elif isinstance(message, Report):
            for link, lags in message.lags.items():
                self._lagging(link, lags)
                heard.lagged.add(link)
            for key, total in message.counters.items():
                before = heard.counted.get(key, 0.0)
                if total > before:
                    self._count(*key, total - before)
                    heard.counted[key] = total


@dataclass(slots=True)
class _Heard:
    """What the lead heard from one run of a worker: loop states, counter totals, lagged links."""

    states: dict[str, tuple[bool, str]] = field(default_factory=dict)
    counted: dict[tuple[str, str], float] = field(default_factory=dict)
    lagged: set[str] = field(default_factory=set)


class WorkerSide:
    """What a worker's ``run_node`` hands the lead: committed batches, loop states, reports."""

    def __init__(self, index: int, pipe: Pipe, started_ms: int, relays: Sequence[str]) -> None:
        self.index = index
        self.started_ms = started_ms
        self.relays = [RelayMirror(name) for name in relays]
        """The lead's grant relays the worker's grant store waits for, as the lead tells them."""
        self._pipe = pipe

    def heard(self, message: object) -> bool:
        """Take a message from the lead; True if it says stop."""
        if isinstance(message, RelaysCurrent):
            for relay in self.relays:
                relay.current_at = message.times.get(relay.name)
        return message == STOP

    def committed(self, link: str, summary: Summary) -> None:
        """Hand a committed batch's summary to the lead."""
        self._send(Committed(link, summary))

    def state(self, loop: str, state: LoopState) -> None:
        """Tell the lead that one of this worker's loops went up or down."""
        self._send(StateChanged(loop, state.up, state.reason))

    def report(
        self,
        lags: Mapping[str, Callable[[], Mapping[int, int]]],
        counters: Mapping[tuple[str, str], float],
    ) -> None:
        """Tell the lead the links' lags and the counters' totals."""
        self._send(Report({link: dict(read()) for link, read in lags.items()}, dict(counters)))

    def _send(self, message: object) -> None:
        with contextlib.suppress(OSError):  # the lead is gone: the worker is stopping anyway
            self._pipe.send(message)


class WorkerReporter:
    """The worker's loop ``report``: tells the lead its lags and counts every second."""

    name = "report"

    def __init__(
        self, side: WorkerSide, lags: Mapping[str, Callable[[], Mapping[int, int]]],
        counters: Callable[[], dict[tuple[str, str], float]], health: Health,
    ) -> None:  # fmt: skip
        self._side = side
        self._lags = lags
        self._counters = counters
        self._health = health
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        """Send a last report and return from ``run``."""
        self._stopping.set()

    async def run(self) -> None:
        """Report every ``REPORT_EVERY_S`` until stopped, then once more."""
        self._health.up(self.name)
        while not self._stopping.is_set():
            self._side.report(self._lags, self._counters())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), REPORT_EVERY_S)
        self._side.report(self._lags, self._counters())


def link_counts(metrics: Metrics, links: Iterable[str]) -> dict[tuple[str, str], float]:
    """Return the totals of ``SHIPPED_COUNTERS`` per link, keyed (counter, link)."""
    wanted = set(links)
    counts: dict[tuple[str, str], float] = {}
    for counter in SHIPPED_COUNTERS:
        for family in getattr(metrics, counter).collect():
            for sample in family.samples:
                link = sample.labels.get("link")
                if sample.name.endswith("_total") and link in wanted:
                    counts[(counter, link)] = sample.value
    return counts


RunNode = Callable[..., Awaitable[None]]
"""``node.app.run_node``: what a worker runs, with ``worker=`` its side."""


def serve_worker(
    config: NodeConfig,
    index: int,
    pipe: Pipe,
    started_ms: int,
    relays: Sequence[str],
    run_node: RunNode,
) -> None:
    """Run worker ``index`` of the node until the lead says stop or goes away.

    SIGINT and SIGTERM are ignored: a terminal's Ctrl-C or a group-wide SIGTERM reaches the lead
    too, which stops its workers softly (they commit) and kills one that is still running late.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(config.log.format, config.log.level)

    async def serve() -> None:
        stop = asyncio.Event()
        side = WorkerSide(index, pipe, started_ms, relays)

        def readable() -> None:
            try:
                while pipe.poll():
                    if side.heard(pipe.recv()):
                        stop.set()
            except (EOFError, OSError):
                stop.set()  # the lead is gone

        asyncio.get_running_loop().add_reader(pipe.fileno(), readable)
        async with heap.paced():
            await run_node(config, stop, worker=side)

    asyncio.run(serve())
