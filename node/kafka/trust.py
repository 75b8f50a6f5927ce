"""The trust store in Kafka: reading, publishing and relaying the public keys of regions.

Design (what is trusted for what, and why):

- Each node writes its own keys, and only it writes, to its cluster's compacted ``PREFIX.trust``
  (key ``REGION/KEY_ID``, value a ``TrustedKey`` as JSON), and hands up the keys of its whole
  subtree to its own topic on the parent's cluster, ``PREFIX.trust.from.REGION``. The writer of
  a topic is known from the topic (with the per-writer ACLs, only that node's principal can
  write it), so no key record needs a signature of its own.
- The parent reads ``trust.from.CHILD`` and accepts from child C only keys of regions inside
  C's subtree: a county cannot speak for another county or for its city. It republishes what it
  accepts into its own ``PREFIX.trust`` (for its children) and up (for its parent).
- A node reads its parent's ``PREFIX.trust`` and accepts only keys of regions *outside* its own
  subtree: the parent cannot replace a key of a region below this node (those came up through
  this node). It republishes them into its own ``PREFIX.trust`` for its children.
- A region's key thus reaches every node along the tree edges, each hop filtered by subtree,
  like grants (``node.kafka.grants``). A compromised node can vouch only for regions in its
  subtree as seen from above, and for regions outside it as seen from below: never for a region
  that lies between a verifier and the verifier's own path to the root.

Rotation: after reading its own ``PREFIX.trust`` to its end, the node publishes its current key
(open-ended) and cuts each previous key of its region to ``now + rotation_grace_s``
(``node.core.trust.rotation``); the later-issued version of a key wins everywhere.

Two loops share one ``TrustKeeper``: ``trust`` (the local cluster: own topic and the children's
hand-up topics; ``ready`` is set once they are read to their ends and the node's keys are
published, and the links wait for it) and ``trust-up`` (the parent's cluster: its
``PREFIX.trust``, and this node's hand-up topic). Either raises TransportError on a cluster
failure; the supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from node.core.envelope import HOPS
from node.core.provenance import PROVENANCE
from node.core.topology import Topology, contains
from node.core.trust import Origin, TrustedKey, TrustStore, acceptable, newer, rotation
from node.errors import TransportError
from node.kafka.closing import close_quietly
from node.kafka.connection import Connection, state_reader, topic_partitions
from node.kafka.topics import TopicNames
from node.ops.events import TrustKeyRefused, TrustUpdated, emit
from node.supervisor import Health, Loop
from node.transport import Clock, Message, Record, RecordSink

KEY_WAIT_S = 10.0
"""How long a link waits for a signing key it has not read yet before deciding anyway."""


@dataclass(frozen=True, slots=True)
class _Source:
    """A topic the keeper reads, and what its records may be trusted for."""

    topic: str
    origin: Origin
    writer: str | None = None


class TrustKeeper:
    """The node's trusted keys, as read from Kafka; hands each new ``TrustStore`` on."""

    def __init__(
        self,
        topology: Topology,
        own: TrustedKey,
        on_change: Callable[[TrustStore], None],
        *,
        grace_s: float,
        key_wait_s: float = KEY_WAIT_S,
        log: structlog.typing.FilteringBoundLogger,
        clock: Clock = time.time,
    ) -> None:
        self.topology = topology
        self.own = own
        self.ready = asyncio.Event()
        """Set once the local topics are read to their ends and this node's keys published."""
        self.book: dict[bytes, TrustedKey] = {}
        self.in_local_topic: dict[bytes, int] = {}
        """What this node's ``PREFIX.trust`` already holds: record key -> issued_ms."""
        self._on_change = on_change
        self._changed = asyncio.Event()
        self.key_wait_s = key_wait_s
        self._grace_ms = int(grace_s * 1000)
        self._clock = clock
        self._log = log

    def offer(self, key: TrustedKey, source: _Source) -> bool:
        """Take ``key`` if ``source`` may vouch for it and it is newer; tell if it changed."""
        if not acceptable(key, source.origin, self.topology.region, source.writer):
            if source.origin is Origin.CHILD:  # from the parent: the echo of what went up
                emit(self._log, TrustKeyRefused(source.topic, key.region, key.key_id))
            return False
        if source.origin is Origin.OWN:
            seen = self.in_local_topic.get(key.record_key, -1)
            self.in_local_topic[key.record_key] = max(seen, key.issued_ms)
        if not newer(self.book.get(key.record_key), key):
            return False
        self.book[key.record_key] = key
        return True

    def unreadable(self, topic: str) -> None:
        """Note a record of ``topic`` that is not a key record (it is skipped)."""
        emit(self._log, TrustKeyRefused(topic, "", "unreadable"))

    def publish(self) -> None:
        """Hand the current book to the checkers."""
        store = TrustStore(self.book.values())
        self._on_change(store)
        self._changed.set()
        self._changed = asyncio.Event()
        emit(self._log, TrustUpdated(len(store)))

    def key_wait(self, *, check_all: bool) -> KeyWait:
        """Make one link's wait for signing keys (``check_all``: the link from above)."""
        return KeyWait(self, check_all=check_all)

    def knows(self) -> set[bytes]:
        """Return the ids of every key in the book, as bytes (as ``cx-prov`` carries them)."""
        return {key.key_id.encode() for key in self.book.values()}

    async def changed(self, timeout_s: float) -> None:
        """Return when the book is next published, or after ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    def rotation(self) -> list[TrustedKey]:
        """Return the key records this node publishes for itself now (``trust.rotation``)."""
        mine = [key for key in self.book.values() if key.region == self.topology.region]
        return rotation(self.own, mine, int(self._clock() * 1000), self._grace_ms)

    def unpublished(self) -> list[TrustedKey]:
        """Keys of the book newer than what this node's ``PREFIX.trust`` holds."""
        return [
            key for key in self.book.values()
            if self.in_local_topic.get(key.record_key, -1) < key.issued_ms
        ]  # fmt: skip

    def subtree(self) -> list[TrustedKey]:
        """Keys of regions in this node's subtree (what it hands up)."""
        return [key for key in self.book.values() if contains(self.topology.region, key.region)]


class KeyWait:
    """One link's bounded wait for signing keys it has not read yet (call it with a batch).

    A record signed with a key this node has not read yet (a neighbour's new key travels through
    the trust topics while its records travel through the links) would otherwise be refused.
    Only records the link will check can make it wait: those with a hop path, or every record
    on the link from above (``check_all``); a fresh record from a department is signed here,
    never checked, so its ``cx-prov`` means nothing. The link waits at most ``key_wait_s``; a wait
    that runs out (keys that never come, made-up ids) is followed by ``key_wait_s`` in which it
    does not wait again, whatever the key ids, so made-up ids cannot hold the link up for more
    than half of the time. A wait that ends with its keys read is not: a new cascade's keys come
    one by one, and the next record signed with one not read yet is waited for too.
    """

    def __init__(self, keeper: TrustKeeper, *, check_all: bool) -> None:
        self._keeper = keeper
        self._check_all = check_all
        self._quiet_until = 0.0  # monotonic time before which this link does not wait again

    async def __call__(self, records: Sequence[Record]) -> None:
        """Wait until the keys that sign the checked ``records`` are known, bounded."""
        now = time.monotonic()
        if now < self._quiet_until:
            return
        keeper = self._keeper
        known = keeper.knows()
        missing: set[bytes] = set()
        check_all = self._check_all
        for record in records:
            stamp: bytes | None = None
            checked = check_all
            for name, value in record.headers:
                if name == PROVENANCE:
                    stamp = value
                elif name == HOPS and value:
                    checked = True
            if checked and stamp is not None and len(stamp) > 2:
                key_id = stamp[2 : 2 + stamp[1]]
                if key_id not in known:
                    missing.add(key_id)
        if not missing:
            return
        until = now + keeper.key_wait_s
        while missing - keeper.knows():
            left = until - time.monotonic()
            if left <= 0:
                self._quiet_until = time.monotonic() + keeper.key_wait_s
                return
            await keeper.changed(left)


class TrustLocal:
    """The loop ``trust``: reads this cluster's trust topics, publishes and relays into its own."""

    def __init__(
        self,
        keeper: TrustKeeper,
        bootstrap: Connection,
        topics: TopicNames,
        sink: RecordSink,
        health: Health,
        *,
        deadline_s: float,
        poll_ms: int = 200,
    ) -> None:
        self.name = "trust"
        self._keeper = keeper
        self._bootstrap = bootstrap
        self._topic = topics.trust
        self._sources = [_Source(topics.trust, Origin.OWN)] + [
            _Source(topics.trust_from(child), Origin.CHILD, child)
            for child in keeper.topology.children
        ]
        self._sink = sink
        self._health = health
        self._deadline_s = deadline_s
        self._poll_ms = poll_ms
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        """Return from run() after the current poll."""
        self._stopping.set()

    async def run(self) -> None:
        """Read to the ends, publish this node's keys, then follow and relay until stopped."""
        keeper = self._keeper
        consumer = state_reader(self._bootstrap)
        try:
            await consumer.start()
            by_topic = {source.topic: source for source in self._sources}
            await _read_to_end(consumer, self._sources, keeper)
            await self._write([*keeper.rotation()])
            while not self._stopping.is_set():
                changed = await _apply_batch(consumer, by_topic, keeper, self._poll_ms)
                fresh = keeper.unpublished()
                if fresh:
                    await self._write(fresh)
                if changed or not keeper.ready.is_set():
                    keeper.publish()
                if not keeper.ready.is_set() and keeper.own.record_key in keeper.in_local_topic:
                    keeper.ready.set()  # its own key read back: every link may start
                    self._health.up(self.name)
        except KafkaError as error:
            raise TransportError(f"reading trust topics: {error!r}") from error
        finally:
            await close_quietly(consumer.stop())

    async def _write(self, keys: Sequence[TrustedKey]) -> None:
        messages = [Message(self._topic, key.record_key, key.to_json(), []) for key in keys]
        await _deliver(self._sink, messages, self._deadline_s, self._topic)


class TrustUp:
    """The loop ``trust-up``: reads the parent's trust topic, hands this subtree's keys up."""

    def __init__(
        self,
        keeper: TrustKeeper,
        bootstrap: Connection,
        parent_topics: TopicNames,
        sink: RecordSink,
        health: Health,
        *,
        deadline_s: float,
        poll_ms: int = 200,
    ) -> None:
        self.name = "trust-up"
        self._keeper = keeper
        self._bootstrap = bootstrap
        self._source = _Source(parent_topics.trust, Origin.PARENT)
        self._up = parent_topics.trust_from(keeper.topology.region)
        self._sink = sink
        self._health = health
        self._deadline_s = deadline_s
        self._poll_ms = poll_ms
        self._sent: dict[bytes, int] = {}
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        """Return from run() after the current poll."""
        self._stopping.set()

    async def run(self) -> None:
        """Follow the parent's keys and hand this subtree's up until stopped."""
        keeper = self._keeper
        consumer = state_reader(self._bootstrap)
        self._sent.clear()  # a restart hands everything up again (compaction keeps one each)
        try:
            await consumer.start()
            await _read_to_end(consumer, [self._source], keeper)
            keeper.publish()
            self._health.up(self.name)
            by_topic = {self._source.topic: self._source}
            while not self._stopping.is_set():
                if await _apply_batch(consumer, by_topic, keeper, self._poll_ms):
                    keeper.publish()
                if keeper.ready.is_set():
                    await self._hand_up()
        except KafkaError as error:
            raise TransportError(f"reading the parent's trust topic: {error!r}") from error
        finally:
            await close_quietly(consumer.stop())

    async def _hand_up(self) -> None:
        keys = [k for k in self._keeper.subtree() if self._sent.get(k.record_key) != k.issued_ms]
        if not keys:
            return
        messages = [Message(self._up, key.record_key, key.to_json(), []) for key in keys]
        await _deliver(self._sink, messages, self._deadline_s, self._up)
        for key in keys:
            self._sent[key.record_key] = key.issued_ms


class AfterTrust:
    """A loop (a link) that starts once the trust store is ready.

    So no record is refused for a key that was merely not read yet.
    """

    def __init__(self, loop: Loop, ready: asyncio.Event) -> None:
        self.name = loop.name
        self._loop = loop
        self._ready = ready
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        """Stop waiting, or ask the loop to stop."""
        self._stopping.set()
        self._loop.request_stop()

    async def run(self) -> None:
        """Wait for the trust store (or a stop), then run the loop."""
        waits = [asyncio.ensure_future(event.wait()) for event in (self._ready, self._stopping)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if not self._stopping.is_set():
            await self._loop.run()


async def _read_to_end(
    consumer: AIOKafkaConsumer, sources: Sequence[_Source], keeper: TrustKeeper
) -> None:
    """Assign every partition of ``sources``, read each from its beginning to its end now."""
    partitions: list[TopicPartition] = []
    for source in sources:
        partitions += await topic_partitions(
            consumer, source.topic, f"trust topic {source.topic} does not exist"
        )
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    ends = await consumer.end_offsets(partitions)
    by_topic = {source.topic: source for source in sources}
    behind = [tp for tp in partitions if ends[tp] > 0]
    while behind:
        await _apply_batch(consumer, by_topic, keeper, 200, behind)
        behind = [tp for tp in behind if await consumer.position(tp) < ends[tp]]


async def _apply_batch(
    consumer: AIOKafkaConsumer,
    by_topic: dict[str, _Source],
    keeper: TrustKeeper,
    poll_ms: int,
    partitions: Sequence[TopicPartition] = (),
) -> bool:
    """Offer every key record of one fetch to the keeper; tell whether the book changed."""
    batch = await consumer.getmany(*partitions, timeout_ms=poll_ms)
    changed = False
    for tp, records in batch.items():
        source = by_topic[tp.topic]
        for record in records:
            if record.value is None:
                continue
            try:
                key = TrustedKey.from_json(record.value)
            except (ValueError, TypeError):
                keeper.unreadable(tp.topic)
                continue
            changed |= keeper.offer(key, source)
    return changed


async def _deliver(
    sink: RecordSink, messages: list[Message], deadline_s: float, topic: str
) -> None:
    try:
        results = await asyncio.wait_for(sink.deliver(messages), deadline_s)
    except TimeoutError as error:
        raise TransportError(f"{topic}: keys not acked within {deadline_s:g} s") from error
    if any(result is not None for result in results):
        raise TransportError(f"{topic} rejected a key record")
