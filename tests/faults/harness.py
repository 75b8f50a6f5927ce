"""The fault harness: real clusters that can be stopped, nodes as processes, a counted stream.

A scenario runs a county → city cascade (county node 410102 hands up to the city cluster's
``up.410102``; the city node 410100, the root, delivers to its inbox), publishes records of known
ids (``k{key}-{seq}``, 50 keys) into the county departments' outboxes (each record to its
department's own), breaks something, and counts what reached the
city inbox and the refusal topics: sent, delivered, lost, duplicated, out of order, refused.

Resource handling: every node is an ``exchange-node run`` process stopped by its pid (SIGTERM,
then SIGKILL); every Kafka client is closed in a ``finally``; every wait has a deadline. Clusters
are stopped and restarted through deploy/local's ``localkafka`` (data dir and ports kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from department_client import Received
from sample_records import LEGAL_ENTITY, LICENCE, PERSON, sample

from node.codec import load_schemas, packaged_schema_dir
from node.config import parse_config
from node.core.heartbeat import is_heartbeat
from node.errors import ConfigError
from node.kafka.topics import TopicNames, ensure_topics

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "local"))
import localkafka  # lives in deploy/local, not in the package

REPO = Path(__file__).resolve().parents[2]
RESULTS_JSON = REPO / ".local" / "faults.json"
WORK_DIR = REPO / ".local" / "faults"
EXCHANGE_NODE = Path(sys.executable).with_name("exchange-node")
SCHEMAS = load_schemas(packaged_schema_dir())

COUNTY, CITY = "410102", "410100"
KEYS = 50
POISON_HEADER = "fault-poison"
"""A header the node ignores (not ``cx-``): names a poison record wherever it ends up."""
SHUTDOWN_TIMEOUT_S = 10.0
DELIVERY_TIMEOUT_S = 5.0
STREAM_REQUEST_TIMEOUT_MS = 5000
CLOSE_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 120.0
"""Generous: a node on a busy 2-core machine may take a minute to create topics and connect."""


@dataclass(frozen=True, slots=True)
class Durations:
    """How long each fault lasts: short (in the normal test run) or full (``make faults``)."""

    full: bool
    rate_per_s: int
    lead_s: float  # stream before the fault
    tail_s: float  # stream after recovery
    kills: int
    parent_outage_s: float
    parent_late_s: float
    local_outage_s: float
    pending_s: float  # parent down before SIGTERM
    takeover_s: float  # stream after one of two instances is killed
    drain_s: float  # at most, waiting for the last records
    stall_s: float  # give up waiting when nothing new arrives for this long
    test_timeout_s: float


SHORT = Durations(
    full=False, rate_per_s=1000, lead_s=2, tail_s=2, kills=2, parent_outage_s=15,
    parent_late_s=10, local_outage_s=5, pending_s=3, takeover_s=12, drain_s=150, stall_s=45,
    test_timeout_s=240,
)  # fmt: skip
FULL = Durations(
    full=True, rate_per_s=1000, lead_s=10, tail_s=10, kills=12, parent_outage_s=60,
    parent_late_s=30, local_outage_s=20, pending_s=10, takeover_s=30, drain_s=300, stall_s=90,
    test_timeout_s=900,
)  # fmt: skip


def durations() -> Durations:
    """The full durations when FAULTS_FULL is set (not empty, not 0), else the short ones."""
    return FULL if os.environ.get("FAULTS_FULL", "") not in ("", "0") else SHORT


def free_port() -> int:
    """Return a loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- clusters ----------------------------------------------------------------------------------


class FaultClusters:
    """The county and city clusters of the fault suite, each of which can be stopped and restarted."""

    def __init__(self, clusters: Sequence[localkafka.Cluster]) -> None:
        self._by_name = {cluster.spec.name: cluster for cluster in clusters}

    @classmethod
    def start(cls, directory: Path) -> FaultClusters:
        """Start the county and city clusters on free loopback ports (blocks until both answer)."""
        specs = [
            localkafka.ClusterSpec(name=name, port=free_port(), controller_port=free_port())
            for name in ("county", "city")
        ]
        return cls(localkafka.start_clusters(specs, directory))

    def bootstrap(self, name: str) -> str:
        """The bootstrap address of cluster ``name`` (it stays the same across restarts)."""
        return self._by_name[name].bootstrap

    def broker_pid(self, name: str) -> int | None:
        """The pid of cluster ``name``'s broker while it runs."""
        return localkafka.broker_pid(self._by_name[name])

    async def stop(self, name: str) -> None:
        """Stop cluster ``name`` (SIGTERM to its broker), keeping its data dir and ports."""
        await asyncio.to_thread(localkafka.stop_cluster, self._by_name[name])

    async def restart(self, name: str) -> None:
        """Start cluster ``name`` again on its data; return once it answers metadata requests."""
        restarted = await asyncio.to_thread(localkafka.restart_cluster, self._by_name[name])
        self._by_name[name] = restarted

    async def ensure_up(self) -> None:
        """Restart whichever cluster a previous scenario left stopped."""
        for name in list(self._by_name):
            if self.broker_pid(name) is None:
                await self.restart(name)

    def stop_all(self) -> None:
        """Stop every broker by pid (blocks)."""
        localkafka.stop_clusters(list(self._by_name.values()))


# --- node configuration ------------------------------------------------------------------------


def _delivery_timeout_accepted() -> bool:
    """Tell whether this node's config knows ``flow.delivery_timeout_s`` (being added now)."""
    probe = {
        "node": {"id": "probe", "level": "county", "region": COUNTY},
        "local": {"bootstrap": "127.0.0.1:9092"},
        "flow": {"delivery_timeout_s": DELIVERY_TIMEOUT_S},
    }
    try:
        parse_config(probe)
    except ConfigError as error:
        if error.path == "flow.delivery_timeout_s":
            return False
        raise
    return True


DELIVERY_TIMEOUT_ACCEPTED = _delivery_timeout_accepted()


def flow_settings() -> dict[str, Any]:
    """The [flow] table of every fault node: short fetches and backoffs, a 10 s soft stop."""
    flow: dict[str, Any] = {
        "fetch_timeout_ms": 100,
        "retry_backoff_s": 0.5,
        "shutdown_timeout_s": SHUTDOWN_TIMEOUT_S,
        "max_batch": 500,
    }
    if DELIVERY_TIMEOUT_ACCEPTED:
        flow["delivery_timeout_s"] = DELIVERY_TIMEOUT_S
    return flow


def county_settings(clusters: FaultClusters, prefix: str, admin_port: int) -> dict[str, Any]:
    """Config of the county node 410102 (its parent is the city 410100)."""
    return {
        "node": {"id": f"{prefix}-county", "level": "county", "region": COUNTY},
        "local": {"bootstrap": clusters.bootstrap("county"), "topic_prefix": prefix},
        "parent": {"bootstrap": clusters.bootstrap("city"), "region": CITY, "topic_prefix": prefix},
        "topics": {"create": True, "partitions": 3},
        "flow": flow_settings(),
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "log": {"format": "json", "level": "info"},
    }


def city_settings(clusters: FaultClusters, prefix: str, admin_port: int) -> dict[str, Any]:
    """Config of the city node 410100, the root of the fault cascade."""
    return {
        "node": {"id": f"{prefix}-city", "level": "city", "region": CITY, "children": [COUNTY]},
        "local": {"bootstrap": clusters.bootstrap("city"), "topic_prefix": prefix},
        "topics": {"create": True, "partitions": 3},
        "flow": flow_settings(),
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "log": {"format": "json", "level": "info"},
    }


def toml_text(settings: dict[str, Any]) -> str:
    """Render a config of tables of strings, numbers, booleans and string lists as TOML."""
    lines: list[str] = []
    for table, values in settings.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # ASCII only here: JSON and TOML basic strings agree
    return "[" + ", ".join(_toml_value(item) for item in value) + "]"


# --- node processes ----------------------------------------------------------------------------


class Readiness(NamedTuple):
    """One answer of a node's readiness endpoint (status 0: no answer)."""

    status: int
    body: Any


class NodeProcess:
    """One node run as ``exchange-node run --config FILE``, restartable, stopped by its pid.

    Tracks the peak resident set (VmHWM) over every incarnation and the exit code of each one.
    """

    def __init__(
        self,
        name: str,
        directory: Path,
        settings: dict[str, Any],
        mark: Callable[[str], None] = lambda _: None,
    ) -> None:
        parse_config(settings)  # a typo fails here, with the field path, not in a child's log
        self.name = name
        self.mark = mark
        self.admin_port = int(settings["admin"]["port"])
        self.config_path = directory / f"{name}.toml"
        self.config_path.write_text(toml_text(settings))
        self.log_path = directory / f"{name}.log"
        self.exit_codes: list[int] = []
        self.peak_rss_kb = 0
        self.ready_path = "/readyz"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        """The pid of the running incarnation, if any."""
        return self._process.pid if self.alive() and self._process else None

    def start(self) -> None:
        """Start a new incarnation (the previous one must have ended)."""
        if self.alive():
            raise RuntimeError(f"node {self.name} is still running")
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self._process = subprocess.Popen(  # noqa: S603 - our entry point, our config
                [EXCHANGE_NODE, "run", "--config", self.config_path],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.mark(f"{self.name} node started")

    def workers(self) -> list[int]:
        """Pids of the running incarnation's worker processes (``flow.workers``), from /proc."""
        pid = self.pid
        if pid is None:
            return []
        found = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    command = Path(f"/proc/{child}/cmdline").read_bytes()
                    if b"spawn_main" in command:  # not multiprocessing's resource tracker
                        found.append(int(child))
        return found

    def alive(self) -> bool:
        """Tell whether the current incarnation runs; record its exit code once it has ended."""
        if self._process is None:
            return False
        code = self._process.poll()
        if code is None:
            return True
        self.exit_codes.append(code)
        self.mark(f"{self.name} node seen exited ({code})")
        self._process = None
        return False

    def sample_rss(self) -> None:
        """Fold the running incarnation's VmHWM (peak resident set) into ``peak_rss_kb``."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))

    def kill(self) -> None:
        """SIGKILL the running incarnation by pid and reap it."""
        self.sample_rss()
        if self._process is not None and self.alive():
            self.mark(f"{self.name} node: SIGKILL")
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)
            self.alive()

    async def terminate(self, patience_s: float) -> tuple[int | None, float]:
        """SIGTERM by pid; wait up to ``patience_s``, then SIGKILL.

        Returns the exit code (None if it had to be killed) and the seconds it took to exit.
        """
        self.sample_rss()
        process = self._process
        if process is None or not self.alive():
            return None, 0.0
        began = time.monotonic()
        self.mark(f"{self.name} node: SIGTERM")
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, patience_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None, time.monotonic() - began
        seconds = time.monotonic() - began
        self.alive()
        return process.returncode, seconds

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running incarnation's process, if any."""
        return self._process if self.alive() else None

    def log_since_start(self) -> str:
        """What the current (or last) incarnation wrote to the log."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode("utf-8", "replace")

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the node's log, for failure messages."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def readiness(self, session: aiohttp.ClientSession) -> Readiness:
        """Ask /readyz, or /healthz once /readyz has answered 404; status 0 when nothing answers."""
        for _ in range(2):
            url = f"http://127.0.0.1:{self.admin_port}{self.ready_path}"
            try:
                async with session.get(url) as response:
                    status = response.status
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError):
                return Readiness(0, None)
            if status == 404 and self.ready_path == "/readyz":
                self.ready_path = "/healthz"
                continue
            try:
                return Readiness(status, json.loads(text))
            except ValueError:
                return Readiness(status, text)
        return Readiness(0, None)

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> bool:
        """Poll readiness until 200; False if the node exits first or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        async with probe_session() as session:
            while time.monotonic() < deadline:
                if not self.alive():
                    return False
                if (await self.readiness(session)).status == 200:
                    self.mark(f"{self.name} node ready")
                    return True
                await asyncio.sleep(0.2)
        return False

    async def wait_delivering(self, timeout_s: float) -> bool:
        """Wait until this incarnation has logged a delivered batch; False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.alive():
            if '"event": "batch"' in self.log_since_start():
                return True
            await asyncio.sleep(0.2)
        return False


def probe_session() -> aiohttp.ClientSession:
    """An HTTP session for readiness probes: every request gives up after 2 s."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))


_DOWN_STATES = {"down", "failed", "failing", "stalled", "retrying", "backoff", "stopped", "error"}


def down_entries(body: Any, path: str = "") -> dict[str, str]:
    """Every part a readiness body reports as not up, by dotted name, with its own text.

    Reads the shapes a node may answer: ``{"links": {"parent": false}}`` (/healthz before
    /readyz), ``{"loops": {"parent": {"up": false, "reason": "..."}}}``, or a list of objects
    with ``name`` and ``state``/``up``. An entry's text is its own scalar fields (its reason), not
    what is nested in it, and only its strings (a reason, a state: no timestamps); the body as a
    whole (its overall ``ready``) is not an entry.
    """
    found: dict[str, str] = {}
    if isinstance(body, list):
        for item in body:
            found.update(down_entries(item, path))
        return found
    if not isinstance(body, dict):
        return found
    name = body.get("name")
    here = path if not isinstance(name, str) else f"{path}.{name}" if path else name
    state = body.get("state", body.get("status"))
    flags = [body.get(flag) for flag in _UP_FLAGS]
    if here and ((isinstance(state, str) and state.lower() in _DOWN_STATES) or False in flags):
        found[here] = json.dumps({k: v for k, v in body.items() if isinstance(v, str)})
    for key, value in body.items():
        child = f"{here}.{key}" if here else str(key)
        if value is False and key not in _UP_FLAGS:
            found[child] = "false"
        elif isinstance(value, dict | list):
            found.update(down_entries(value, child))
    return found


_UP_FLAGS = ("up", "ready", "ok", "healthy")


def names_parent_down(body: Any) -> bool:
    """Tell whether a readiness body names the parent link as down.

    That is: a part called ``parent`` (``loops.parent``, ``links.parent``) is down, or a down
    part's reason says ``parent``. A reason that merely holds the parent cluster's address does
    not count: every loop on that cluster would show it while a stalled parent link said "up".
    """
    return any("parent" in name or "parent" in text for name, text in down_entries(body).items())


@dataclass
class Sample:
    """One readiness answer of one node, at a time since the monitor started."""

    at_s: float
    node: str
    status: int
    body: Any


class Monitor:
    """Samples every node's readiness and peak RSS twice a second while in use.

    ``async with Monitor(nodes) as monitor:``; the samples are kept in ``monitor.samples``.
    """

    def __init__(self, nodes: Sequence[NodeProcess], interval_s: float = 0.5) -> None:
        self.nodes = list(nodes)
        self.samples: list[Sample] = []
        self.began = time.monotonic()
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def now(self) -> float:
        """Seconds since the monitor started."""
        return time.monotonic() - self.began

    async def __aenter__(self) -> Self:
        self.began = time.monotonic()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with probe_session() as session:
            while True:
                for node in self.nodes:
                    node.sample_rss()
                    if node.alive():
                        answer = await node.readiness(session)
                        self.samples.append(Sample(self.now(), node.name, *answer))
                await asyncio.sleep(self._interval_s)

    def of(self, node: str, since_s: float = 0.0, until_s: float = float("inf")) -> list[Sample]:
        """The samples of ``node`` taken between ``since_s`` and ``until_s``."""
        return [s for s in self.samples if s.node == node and since_s <= s.at_s <= until_s]

    def changes(self, node: str) -> list[tuple[float, int, dict[str, str]]]:
        """When ``node``'s readiness changed: time, status and the parts down with their text."""
        seen: list[tuple[float, int, dict[str, str]]] = []
        for taken in self.of(node):
            down = down_entries(taken.body)
            if not seen or (seen[-1][1], seen[-1][2]) != (taken.status, down):
                seen.append((round(taken.at_s, 1), taken.status, down))
        return seen


# --- the stream of records ---------------------------------------------------------------------


class Outgoing(NamedTuple):
    """One record to publish: its identity (cx-id or poison name), key, value and raw headers."""

    identity: str
    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes]]
    department: str = "PSB"
    """Who publishes it: the record goes to this department's outbox."""


_SCHEMAS_BY_KEY = (PERSON, LEGAL_ENTITY, LICENCE)
COUNTY_DEPARTMENTS = ("PSB", "SAMR", "DSB")
"""The sources of the county's person, legal entity and licence records: each publishes to its
own outbox."""
_TEMPLATES = [
    sample(SCHEMAS, _SCHEMAS_BY_KEY[key % 3], COUNTY, f"region:{CITY}", seed=key, created_ms=0)
    for key in range(KEYS)
]


def good_record(index: int) -> Outgoing:
    """The ``index``-th good record: key ``index % 50``, id ``k{key}-{seq}``, created now."""
    key, seq = index % KEYS, index // KEYS
    template = _TEMPLATES[key]
    record_id = f"k{key:02d}-{seq:06d}"
    envelope = dataclasses.replace(
        template.envelope, record_id=record_id, created_ms=int(time.time() * 1000)
    )
    return Outgoing(
        record_id, f"k{key:02d}".encode(), template.value, envelope.to_headers(),
        envelope.source_dept,
    )  # fmt: skip


def key_and_seq(identity: str) -> tuple[str, int] | None:
    """The key and sequence number of a good record's id; None for anything else."""
    key, sep, seq = identity.partition("-")
    return (key, int(seq)) if sep and key.startswith("k") and seq.isdigit() else None


def good_chunks(chunk_size: int) -> Iterator[list[Outgoing]]:
    """Good records, endlessly, in chunks."""
    index = 0
    while True:
        yield [good_record(i) for i in range(index, index + chunk_size)]
        index += chunk_size


class Stream:
    """Publishes chunks of records into one topic in the background, at a steady pace.

    A chunk that fails (the cluster is down) is sent again, whole, until it is acked or the
    stream is stopped, so records may be written twice at the source; the harness counts the
    source topic itself, not these acks. ``async with Stream(...)`` starts it; leaving stops it.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: TopicNames,
        chunks: Iterator[list[Outgoing]],
        pace_s: float = 0.1,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.acked: list[str] = []
        self.failures = 0
        self.finished = asyncio.Event()
        self._chunks = chunks
        self._pace_s = pace_s
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 30)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def _run(self) -> None:
        producer: AIOKafkaProducer | None = None
        tick = time.monotonic()
        try:
            for chunk in self._chunks:
                if self._stopping.is_set():
                    break
                producer = await self._publish(producer, chunk)
                tick = max(tick + self._pace_s, time.monotonic() - 1.0)  # no catch-up bursts
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), tick - time.monotonic())
        finally:
            self.finished.set()
            if producer is not None:
                await _close(producer)

    async def _publish(
        self, producer: AIOKafkaProducer | None, chunk: list[Outgoing]
    ) -> AIOKafkaProducer | None:
        """Send ``chunk`` until it is acked, or give it up once the stream is stopping.

        Returns the producer to reuse (None after a failure: the next attempt makes a new one).
        """
        while True:
            try:
                if producer is None:
                    producer = AIOKafkaProducer(
                        bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                        linger_ms=5, request_timeout_ms=STREAM_REQUEST_TIMEOUT_MS,
                    )  # fmt: skip
                    await asyncio.wait_for(producer.start(), 10)
                await asyncio.wait_for(self._send(producer, chunk), 10)
            except (KafkaError, TimeoutError, OSError):
                self.failures += 1
                if producer is not None:
                    await _close(producer)
                producer = None
                if self._stopping.is_set():
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 0.5)
                continue
            self.acked.extend(record.identity for record in chunk)
            return producer

    async def _send(self, producer: AIOKafkaProducer, chunk: list[Outgoing]) -> None:
        futures = [
            await producer.send(
                self.topics.outbox(r.department), r.value, key=r.key, headers=r.headers
            )
            for r in chunk
        ]
        await asyncio.gather(*futures)


async def _close(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    """Stop a Kafka client; close its connections if that takes longer than CLOSE_TIMEOUT_S.

    A producer whose cluster is down stops once its pending batches expire (after its request
    timeout, which is shorter); until then its sender reconnects, so it must not be cut short.
    """
    try:
        await asyncio.wait_for(client.stop(), CLOSE_TIMEOUT_S)
    except (TimeoutError, KafkaError, OSError):
        connections = client.client if isinstance(client, AIOKafkaProducer) else client._client
        with contextlib.suppress(TimeoutError, KafkaError, OSError):
            await asyncio.wait_for(connections.close(), 5)


# --- reading back and counting -----------------------------------------------------------------


def identity(record: Received) -> str:
    """What a record is known by here: its poison name, else its cx-id."""
    return record.headers.get(POISON_HEADER) or record.record_id


class TopicTail:
    """Reads one topic from the beginning, a little at a time, with no consumer group."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.records: list[Received] = []
        self.identities: set[str] = set()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=16 * 1024 * 1024,
        )  # fmt: skip
        self._partitions: list[TopicPartition] = []

    async def __aenter__(self) -> Self:
        consumer = self._consumer
        try:
            partitions = await self._partitions_of_topic()
        except BaseException:
            await _close(consumer)
            raise
        if not partitions:
            await _close(consumer)
            raise LookupError(f"topic {self.topic} does not exist")
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await _close(self._consumer)

    async def _partitions_of_topic(self, timeout_s: float = 30.0) -> set[int] | None:
        """Start the consumer and wait for the topic's partitions in its metadata."""
        consumer = self._consumer
        await asyncio.wait_for(consumer.start(), timeout_s)
        deadline = time.monotonic() + timeout_s
        partitions: set[int] | None = consumer.partitions_for_topic(self.topic)
        while not partitions and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()  # aiokafka has no public refresh
            partitions = consumer.partitions_for_topic(self.topic)
        return partitions

    async def read(self, timeout_ms: int = 200) -> int:
        """Read what is there (waiting up to ``timeout_ms``); return how many records came."""
        batch = await self._consumer.getmany(timeout_ms=timeout_ms)
        count = 0
        for tp, records in batch.items():
            for r in records:
                if is_heartbeat(r.headers):
                    continue  # between nodes, never a department's record
                headers = {k: v.decode("utf-8", "replace") for k, v in r.headers or ()}
                received = Received(tp.partition, r.offset, r.key, r.value, headers)
                self.records.append(received)
                self.identities.add(identity(received))
                count += 1
        return count

    async def catch_up(self, timeout_s: float = 30.0) -> None:
        """Read up to the end the topic has now; raise TimeoutError after ``timeout_s``."""
        ends = await self._consumer.end_offsets(self._partitions)
        deadline = time.monotonic() + timeout_s
        while any([await self._consumer.position(tp) < end for tp, end in ends.items()]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {self.topic} to its end in {timeout_s} s")
            await self.read()


async def read_all(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[Received]:
    """Every record ``topic`` holds now."""
    async with TopicTail(bootstrap, topic) as tail:
        await tail.catch_up(timeout_s)
        return tail.records


@dataclass(frozen=True, slots=True)
class Tally:
    """What became of the records sent in one scenario."""

    sent: int
    delivered: int
    lost: int
    duplicated: int
    out_of_order: int
    refused: int
    lost_ids: tuple[str, ...]
    duplicated_ids: tuple[str, ...]
    out_of_order_ids: tuple[str, ...]
    acked_not_at_source: int
    source_duplicates: int
    split_keys: tuple[str, ...]
    """Keys whose records reached more than one inbox partition (their order is then lost)."""
    inbox: list[Received] = field(repr=False)
    refusals: list[Received] = field(repr=False)


def tally(
    acked: Sequence[str],
    source: Sequence[Received],
    inbox: Sequence[Received],
    refusals: Sequence[Received],
) -> Tally:
    """Count what the source topic held against what reached the inbox and the refusal topics.

    Duplicated counts copies beyond those at the source; out of order counts first arrivals of a
    key whose sequence number is below one that key delivered earlier.
    """
    at_source = Counter(identity(r) for r in source)
    arrived = Counter(identity(r) for r in inbox if identity(r) in at_source)
    refused = {identity(r) for r in refusals}
    lost = sorted(i for i in at_source if i not in arrived and i not in refused)
    doubled = sorted(i for i, n in arrived.items() if n > at_source[i])
    late = _late_first_arrivals(inbox)
    return Tally(
        sent=len(at_source),
        delivered=len(arrived),
        lost=len(lost),
        duplicated=sum(max(0, n - at_source[i]) for i, n in arrived.items()),
        out_of_order=len(late),
        refused=len(refused),
        lost_ids=tuple(lost[:20]),
        duplicated_ids=tuple(doubled[:20]),
        out_of_order_ids=tuple(late[:20]),
        acked_not_at_source=len(set(acked) - set(at_source)),
        source_duplicates=sum(n - 1 for n in at_source.values()),
        split_keys=_split_keys(inbox),
        inbox=list(inbox),
        refusals=list(refusals),
    )


def _split_keys(inbox: Sequence[Received]) -> tuple[str, ...]:
    """Keys of good records found in more than one partition of the inbox."""
    partitions: dict[str, set[int]] = {}
    for record in inbox:
        parsed = key_and_seq(identity(record))
        if parsed is not None:
            partitions.setdefault(parsed[0], set()).add(record.partition)
    return tuple(sorted(key for key, found in partitions.items() if len(found) > 1))


def _late_first_arrivals(inbox: Sequence[Received]) -> list[str]:
    """Ids whose first arrival came after a higher sequence number of the same key."""
    highest: dict[str, int] = {}
    seen: set[str] = set()
    late: list[str] = []
    for record in sorted(inbox, key=lambda r: (r.partition, r.offset)):
        name = identity(record)
        parsed = key_and_seq(name)
        if parsed is None or name in seen:
            continue
        seen.add(name)
        key, seq = parsed
        if seq < highest.get(key, -1):
            late.append(name)
        highest[key] = max(seq, highest.get(key, -1))
    return late


# --- one cascade per scenario ------------------------------------------------------------------


class Cascade:
    """The county → city cascade of one scenario: its topic prefix, nodes, stream and counts."""

    def __init__(self, clusters: FaultClusters, prefix: str, directory: Path) -> None:
        self.clusters = clusters
        self.prefix = prefix
        self.topics = TopicNames(prefix)
        self.directory = directory
        self.nodes: list[NodeProcess] = []
        self.notes: list[str] = []
        self.timeline: list[tuple[float, str]] = []
        self.began = time.monotonic()
        if not DELIVERY_TIMEOUT_ACCEPTED:
            self.notes.append("flow.delivery_timeout_s not accepted by node/config.py: left out")

    async def create_topics(self, city_outbox_config: dict[str, str] | None = None) -> None:
        """Create every topic of the cascade with 3 partitions.

        ``city_outbox_config`` configures the city's ``up.410102``, where the county hands up.
        """
        names = self.topics
        county = self.clusters.bootstrap("county")
        city = self.clusters.bootstrap("city")
        outboxes = [names.outbox(dept) for dept in COUNTY_DEPARTMENTS]
        await ensure_topics(county, [*outboxes, names.inbox, names.refused], 3, 1)
        await ensure_topics(county, [names.grants], 3, 1, {"cleanup.policy": "compact"})
        await ensure_topics(city, [names.up(COUNTY)], 3, 1, city_outbox_config)
        await ensure_topics(city, [names.inbox, names.refused, names.down(COUNTY)], 3, 1)
        await ensure_topics(city, [names.grants], 3, 1, {"cleanup.policy": "compact"})
        self.mark("topics created")

    async def stop_cluster(self, name: str) -> None:
        """Stop cluster ``name`` (data and ports kept), noting when it was down."""
        self.mark(f"stopping {name} cluster")
        await self.clusters.stop(name)
        self.mark(f"{name} cluster down")

    async def restart_cluster(self, name: str) -> None:
        """Start cluster ``name`` again, noting when it answered."""
        await self.clusters.restart(name)
        self.mark(f"{name} cluster back")

    def county_node(self, name: str = "county", *, workers: int = 1) -> NodeProcess:
        """A county node process (not started); several may share the node id."""
        settings = county_settings(self.clusters, self.prefix, free_port())
        settings["flow"]["workers"] = workers
        return self._add(NodeProcess(name, self.directory, settings, self.mark))

    def city_node(self) -> NodeProcess:
        """The city node process (not started)."""
        settings = city_settings(self.clusters, self.prefix, free_port())
        return self._add(NodeProcess("city", self.directory, settings, self.mark))

    def _add(self, node: NodeProcess) -> NodeProcess:
        self.nodes.append(node)
        return node

    def stream(self, rate_per_s: int) -> Stream:
        """A stream of good records into the county outboxes, ``rate_per_s`` records a second."""
        chunk = max(1, rate_per_s // 10)
        return Stream(self.clusters.bootstrap("county"), self.topics, good_chunks(chunk))

    async def count(
        self, acked: Sequence[str], *, delivering: Callable[[], bool], timing: Durations
    ) -> Tally:
        """Wait until every record at the source reached the inbox or a refusal topic, then count.

        Gives up waiting when ``delivering()`` turns false (the nodes that could deliver are
        gone), when nothing new arrives for ``timing.stall_s``, or after ``timing.drain_s``.
        """
        self.mark("counting")
        county, city = self.clusters.bootstrap("county"), self.clusters.bootstrap("city")
        source = [
            record
            for dept in COUNTY_DEPARTMENTS
            for record in await read_all(county, self.topics.outbox(dept))
        ]
        expected = {identity(r) for r in source}
        async with (
            TopicTail(city, self.topics.inbox) as inbox,
            TopicTail(county, self.topics.refused) as county_refused,
            TopicTail(city, self.topics.refused) as city_refused,
        ):
            tails = (inbox, county_refused, city_refused)
            deadline = time.monotonic() + timing.drain_s
            last_news = time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - last_news < timing.stall_s:
                if sum([await tail.read(100) for tail in tails]):
                    last_news = time.monotonic()
                if not expected.difference(*(tail.identities for tail in tails)):
                    break
                if not delivering():
                    self.notes.append("stopped waiting: no node left that could deliver")
                    break
            self.mark(
                "everything arrived"
                if not expected.difference(*(t.identities for t in tails))
                else "gave up waiting"
            )
            await asyncio.sleep(1.0)  # late duplicates
            for tail in tails:
                await tail.catch_up()
        return tally(acked, source, inbox.records, county_refused.records + city_refused.records)

    async def uncommitted(self, timeout_s: float = 30.0) -> int:
        """Records of the county outboxes its node has not committed, given ``timeout_s`` to.

        Once everything arrived, a node that commits what it delivered has committed every
        outbox to its end (0), so a restart would not deliver it again.
        """
        county = self.clusters.bootstrap("county")
        group = f"exchange-node.{self.prefix}-county.local"
        outboxes = {self.topics.outbox(dept) for dept in COUNTY_DEPARTMENTS}
        partitions = [TopicPartition(t, p) for t in sorted(outboxes) for p in range(3)]
        consumer = AIOKafkaConsumer(bootstrap_servers=county)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=county, client_id="faults-commits")
        await admin.start()
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                committed = await admin.list_consumer_group_offsets(group)
                behind = sum(
                    end - (committed[tp].offset if tp in committed else 0)
                    for tp, end in ends.items()
                )
                if behind <= 0 or time.monotonic() > deadline:
                    return max(0, int(behind))
                await asyncio.sleep(0.5)
        finally:
            await admin.close()

    def wall_s(self) -> float:
        """Seconds since the scenario began."""
        return time.monotonic() - self.began

    def mark(self, event: str) -> None:
        """Note when ``event`` happened, in seconds since the scenario began (for the report)."""
        self.timeline.append((round(self.wall_s(), 1), event))

    def stop_nodes(self) -> None:
        """Stop every node still running, by pid: SIGTERM to all, SIGKILL after 30 s (blocks)."""
        running = [node.process for node in self.nodes]
        localkafka.stop_processes([process for process in running if process is not None])
        for node in self.nodes:
            node.alive()  # records the exit codes


def seeded_random() -> tuple[random.Random, int]:
    """A random generator for fault moments, seeded from FAULTS_SEED or the clock (reported)."""
    seed = int(os.environ.get("FAULTS_SEED") or time.time_ns() % 1_000_000)
    return random.Random(seed), seed


# --- the table -----------------------------------------------------------------------------------


@dataclass
class FaultRow:
    """One scenario's figures, as printed and written to .local/faults.json."""

    scenario: str
    sent: int
    delivered: int
    lost: int
    duplicated: int
    out_of_order: int
    refused: int
    wall_s: float
    peak_rss_mb: float
    details: dict[str, Any] = field(default_factory=dict)


def row(scenario: str, cascade: Cascade, counted: Tally, **details: Any) -> FaultRow:
    """The figures of a finished scenario (peak RSS: the county node, over every incarnation)."""
    county_kb = max((n.peak_rss_kb for n in cascade.nodes if n.name != "city"), default=0)
    return FaultRow(
        scenario, counted.sent, counted.delivered, counted.lost, counted.duplicated,
        counted.out_of_order, counted.refused, round(cascade.wall_s(), 1),
        round(county_kb / 1024, 1),
        details={
            "peak_rss_mb_by_node": {n.name: round(n.peak_rss_kb / 1024, 1) for n in cascade.nodes},
            "readiness_endpoint_by_node": {n.name: n.ready_path for n in cascade.nodes},
            "exit_codes_by_node": {n.name: n.exit_codes for n in cascade.nodes},
            "timeline": cascade.timeline,
            "lost_ids": list(counted.lost_ids),
            "duplicated_ids": list(counted.duplicated_ids),
            "out_of_order_ids": list(counted.out_of_order_ids),
            "acked_not_at_source": counted.acked_not_at_source,
            "source_duplicates": counted.source_duplicates,
            "split_keys": list(counted.split_keys),
            "notes": cascade.notes,
            "logs": str(cascade.directory),
            **details,
        },
    )  # fmt: skip


_COLUMNS = (
    ("scenario", 44), ("sent", 7), ("delivered", 9), ("lost", 6), ("duplicated", 10),
    ("out-of-order", 12), ("refused", 7), ("wall s", 7), ("peak RSS MB", 11),
)  # fmt: skip


@dataclass
class FaultTable:
    """The rows of every scenario run in this session."""

    full: bool
    rows: list[FaultRow] = field(default_factory=list)

    def add(self, fault_row: FaultRow) -> FaultRow:
        """Keep a row (before the scenario's assertions run, so failures are tabled too)."""
        self.rows.append(fault_row)
        return fault_row

    def render(self) -> str:
        """The table as text, one line per scenario."""
        header = " ".join(f"{name:<{width}}" if i == 0 else f"{name:>{width}}"
                          for i, (name, width) in enumerate(_COLUMNS))  # fmt: skip
        lines = [f"fault scenarios ({'full' if self.full else 'short'} mode)", header]
        for r in self.rows:
            values = (r.scenario[:44], r.sent, r.delivered, r.lost, r.duplicated,
                      r.out_of_order, r.refused, f"{r.wall_s:.1f}", f"{r.peak_rss_mb:.1f}")  # fmt: skip
            lines.append(" ".join(f"{v:<{w}}" if i == 0 else f"{v!s:>{w}}"
                                  for i, (v, (_, w)) in enumerate(zip(values, _COLUMNS, strict=True))))  # fmt: skip
        return "\n".join(lines)

    def write_json(self, path: Path = RESULTS_JSON) -> None:
        """Write the rows, the mode and the machine's core count to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "mode": "full" if self.full else "short",
            "cores": os.cpu_count(),
            "delivery_timeout_s_accepted": DELIVERY_TIMEOUT_ACCEPTED,
            "scenarios": [dataclasses.asdict(r) for r in self.rows],
        }
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
