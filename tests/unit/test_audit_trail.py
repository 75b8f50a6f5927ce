"""The audit trail's shell over the in-memory transport: facts from a real link, the writer, the gate.

A real Link carries the city's records up (as in ``test_link_failures``) with an audit queue
watching it; the writer chains what is queued into a memory cluster's audit topic, which is read
back and verified. Failures are injected on that cluster: lost writes, writes that land but
fail, a full queue (fail-open drops with a gap entry; fail-closed holds the link).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import structlog
import structlog.testing
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from node.cli import main
from node.core.audit import Entry, Fact, Gap, Located, Outcome, Tip, parse_entry, verify
from node.core.peers import PeerWatch
from node.core.policy import Policy, PolicySnapshot
from node.core.routing import Arrival, Router
from node.core.topology import Topology
from node.errors import TransportError
from node.kafka.accounting import Watch
from node.kafka.audit import AuditQueue, AuditWriter, split_record
from node.kafka.bridge import Destinations, Link
from node.kafka.topics import level_writers
from node.ops.audit_routes import AuditSource, add_audit_routes
from node.ops.metrics import Metrics
from node.supervisor import Health
from tests.memory_transport import MemoryCluster, MemorySink, MemorySource
from tests.unit.test_link_failures import (
    CATALOG,
    CITY,
    FAST,
    OUTBOX,
    PROVINCE,
    SCHEMAS,
    TOPICS,
    UP,
    publish,
    record_id,
)

AUDIT = TOPICS.audit("city")
GROUP = "exchange-node.city.local"
WAIT_S = 10.0
LOG = structlog.get_logger("test")


def chain_of(cluster: MemoryCluster) -> list[Located]:
    """The stored lines of the audit topic, in order."""
    return [
        line
        for record in cluster.records(AUDIT)
        for line in split_record(record.offset, record.value)
    ]


def entries_of(cluster: MemoryCluster) -> list[Entry]:
    """The audit topic's entries, parsed."""
    return [parse_entry(located.line) for located in chain_of(cluster)]


def tip_reader(cluster: MemoryCluster) -> object:
    """Read the last entry of the memory audit topic, as ``read_tip`` does on Kafka."""

    async def read() -> Tip | None:
        cluster.check_connected("reading the audit tip")
        lines = chain_of(cluster)
        if not lines:
            return None
        entry = parse_entry(lines[-1].line)
        return Tip(entry.seq, entry.hash)

    return read


def writer_for(cluster: MemoryCluster, queue: AuditQueue, per_record: int = 3) -> AuditWriter:
    """A writer flushing often, with short deadlines."""
    return AuditWriter(
        queue, MemorySink(cluster), AUDIT, tip_reader(cluster), Health(), node_id="city",  # type: ignore[arg-type]
        entries_per_record=per_record, flush_s=0.05, deadline_s=0.5,
    )  # fmt: skip


def facts(count: int, first: int = 0) -> list[Fact]:
    """Facts of delivered records ``r{first}``..."""
    return [
        Fact(
            f"r{n}", "res", CITY, "PSB", "local:PSB", 1000 + n, Outcome.DELIVERED, "", "", "0" * 64
        )
        for n in range(first, first + count)
    ]


def queue(max_pending: int = 1000, *, fail_closed: bool = False) -> AuditQueue:
    """An audit queue logging to the test logger."""
    return AuditQueue(max_pending, fail_closed=fail_closed, log=LOG)


async def run_once(writer: AuditWriter) -> None:
    """Run the writer until it wrote what is queued, then stop it."""
    writer.request_stop()
    await asyncio.wait_for(writer.run(), WAIT_S)


@dataclasses.dataclass
class AuditedLink:
    """The city's local link with an audit queue watching it."""

    local: MemoryCluster
    parent: MemoryCluster
    queue: AuditQueue
    link: Link
    health: Health
    task: asyncio.Task[None] | None = None

    def committed(self) -> int:
        """Records of the outbox committed so far."""
        return self.local.committed_total(GROUP, OUTBOX)


@pytest.fixture
async def audited() -> AsyncIterator[list[AuditedLink]]:
    """Links made by ``audited_link``; those still running are cancelled afterwards."""
    made: list[AuditedLink] = []
    yield made
    for rig in made:
        if rig.task is not None and not rig.task.done():
            rig.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rig.task


def audited_link(
    made: list[AuditedLink], audit: AuditQueue, *, gated: bool, after: AuditedLink | None = None
) -> AuditedLink:
    """A link from PSB's outbox up to the province, its batches audited (on ``after``'s clusters)."""
    if after is not None:
        local, parent = after.local, after.parent
    else:
        local, parent = MemoryCluster(), MemoryCluster()
        parent.watchers.append(local.notify)
    topology = Topology(CITY, "city", PROVINCE, ())
    health = Health()
    watch = Watch(
        PeerWatch(topology, 0, 5.0, bucket_s=60, keep=30, settle_s=120),
        on_audit=audit.add, gate=audit if gated else None,
    )  # fmt: skip
    link = Link(
        "local", MemorySource(local, OUTBOX, GROUP, 50), Arrival.FROM_BELOW, Router(topology),
        Policy(PolicySnapshot(CATALOG)),
        Destinations(MemorySink(local), TOPICS, MemorySink(parent), TOPICS, CITY),
        Metrics(CollectorRegistry(), ["local"]), health, schemas=SCHEMAS, settings=FAST,
        peer=CITY, log=LOG, watch=watch, writers=level_writers(TOPICS, CITY, ["PSB"], ()),
    )  # fmt: skip
    rig = AuditedLink(local, parent, audit, link, health)
    made.append(rig)
    return rig


async def test_a_link_audits_each_forwarded_copy_and_each_refusal(
    audited: list[AuditedLink],
) -> None:
    """Every record sent up has a forwarded entry, every refused one a refused entry; chain intact."""
    rig = audited_link(audited, queue(), gated=False)
    sent = publish(rig.local, 120)
    rig.local.produce(OUTBOX, b"k", b"junk", [("cx-id", b"bad-1")])  # no envelope: refused
    rig.task = asyncio.ensure_future(rig.link.run())
    await rig.local.wait_until(lambda: rig.committed() == 121, WAIT_S)
    rig.link.request_stop()
    await asyncio.wait_for(rig.task, WAIT_S)
    await run_once(writer_for(rig.local, rig.queue))

    entries = entries_of(rig.local)
    bodies = [entry.body for entry in entries]
    assert all(isinstance(body, Fact) for body in bodies)
    by_outcome = Counter(body.outcome for body in bodies if isinstance(body, Fact))
    assert by_outcome == {Outcome.FORWARDED: 120, Outcome.REFUSED: 1}
    forwarded = [b for b in bodies if isinstance(b, Fact) and b.outcome is Outcome.FORWARDED]
    assert sorted(b.record_id for b in forwarded) == sorted(sent)
    assert {b.destination for b in forwarded} == {f"up:{PROVINCE}"}
    assert {(b.source_region, b.source_dept) for b in forwarded} == {(CITY, "PSB")}
    landed = {r.value for r in rig.parent.records(UP)}
    assert len(landed) >= 1
    refused = next(b for b in bodies if isinstance(b, Fact) and b.outcome is Outcome.REFUSED)
    assert (refused.record_id, refused.reason) == ("bad-1", "bad_envelope")
    assert refused.detail
    verdict = verify(chain_of(rig.local))
    assert verdict.describe() == "chain of 121 entries intact"
    assert rig.local.count(AUDIT) == 41  # 3 entries a record


async def test_a_write_that_landed_but_failed_is_not_written_twice() -> None:
    """The restarted writer finds the landed entries at the tip and goes on after them."""
    cluster = MemoryCluster()
    pending = queue()
    writer = writer_for(cluster, pending)
    pending.add(facts(5))
    cluster.fail_next(1, "ack lost", landed=True)
    with pytest.raises(TransportError):
        await asyncio.wait_for(writer.run(), WAIT_S)
    assert not pending.is_open() or not pending.fail_closed
    pending.add(facts(4, first=5))
    await run_once(writer)
    entries = entries_of(cluster)
    assert [e.seq for e in entries] == list(range(9))
    assert [e.body.record_id for e in entries if isinstance(e.body, Fact)] == [
        f"r{n}" for n in range(9)
    ]
    assert verify(chain_of(cluster)).intact


async def test_a_new_writer_continues_the_chain_from_the_topic() -> None:
    """A restarted node reads its chain's last entry and continues the numbering and hashes."""
    cluster = MemoryCluster()
    first = queue()
    first.add(facts(4))
    await run_once(writer_for(cluster, first))
    second = queue()
    second.add(facts(3, first=4))
    await run_once(writer_for(cluster, second))
    verdict = verify(chain_of(cluster))
    assert verdict.describe() == "chain of 7 entries intact"


async def test_fail_open_drops_the_oldest_and_says_so_in_a_gap_entry() -> None:
    """Past max_pending the oldest facts go; the chain records how many, and of which period."""
    cluster = MemoryCluster()
    dropped: list[int] = []
    pending = AuditQueue(10, fail_closed=False, log=LOG, on_dropped=dropped.append)
    writer = writer_for(cluster, pending)
    cluster.fail_next(1, "audit topic unreachable")
    pending.add(facts(2))
    with pytest.raises(TransportError):
        await asyncio.wait_for(writer.run(), WAIT_S)  # those 2 stay in flight, kept
    pending.add(facts(25, first=2))
    assert sum(dropped) == 15
    assert pending.is_open()  # fail-open never holds the links
    await run_once(writer)
    entries = entries_of(cluster)
    gaps = [e.body for e in entries if isinstance(e.body, Gap)]
    assert gaps == [Gap(15, 1002, 1016)]
    kept = [e.body.record_id for e in entries if isinstance(e.body, Fact)]
    assert kept == ["r0", "r1"] + [f"r{n}" for n in range(17, 27)]
    assert verify(chain_of(cluster)).describe() == (
        "chain of 13 entries intact (1 gap entries: 15 entries dropped unwritten)"
    )


async def test_fail_closed_says_holding_for_faults_not_for_its_start() -> None:
    """Held until the writer first reads its tip, silently; a writer that fails is an error."""
    with structlog.testing.capture_logs() as logs:
        held: list[bool] = []
        audit = AuditQueue(10, fail_closed=True, log=structlog.get_logger(), on_holding=held.append)
        assert not audit.is_open()
        assert audit.why_closed() == "the audit loop has not started"
        audit.writer_up()
        assert audit.is_open()
        assert logs == []
        assert held == [True, False]  # the gauge still shows the start-up hold
        audit.writer_down("audit topic unreachable")
        audit.writer_down("audit topic still unreachable")  # said once until resumed
        audit.writer_up()
        audit.add(facts(10))  # full: held again, and said
    said = [(log["event"], log["log_level"], log.get("why")) for log in logs]
    assert said == [
        ("audit_holding", "error", "audit topic unreachable"),
        ("audit_resumed", "info", None),
        ("audit_holding", "error", "audit queue full"),
    ]


async def test_fail_closed_that_cannot_write_from_the_start_says_so() -> None:
    """A writer down before it was ever up holds the links with an error naming why."""
    with structlog.testing.capture_logs() as logs:
        audit = AuditQueue(10, fail_closed=True, log=structlog.get_logger())
        audit.writer_down("audit topic does not exist")
    assert [(log["event"], log.get("why")) for log in logs] == [
        ("audit_holding", "audit topic does not exist")
    ]
    assert not audit.is_open()


async def test_fail_closed_holds_the_link_until_entries_can_be_written(
    audited: list[AuditedLink],
) -> None:
    """No writer, no forwarding; the writer up, everything moves; a failing writer holds it again."""
    audit = queue(max_pending=500, fail_closed=True)
    rig = audited_link(audited, audit, gated=True)
    publish(rig.local, 100)
    rig.task = asyncio.ensure_future(rig.link.run())
    with pytest.raises(TimeoutError):  # held: nothing is fetched while no writer runs
        await rig.local.wait_until(lambda: rig.committed() > 0, 0.5)
    assert rig.parent.count(UP) == 0

    writer = writer_for(rig.local, audit, per_record=50)
    running = asyncio.ensure_future(writer.run())
    await rig.local.wait_until(lambda: rig.committed() == 100, WAIT_S)
    await rig.local.wait_until(lambda: len(audit) == 0 and rig.local.count(AUDIT) >= 2, WAIT_S)

    rig.local.reject_size(AUDIT, 100)  # the audit topic refuses every write from now on
    publish(rig.local, 1, first=100)
    with contextlib.suppress(TransportError):
        await asyncio.wait_for(running, WAIT_S)  # it failed writing that record's entry
    assert not audit.is_open()
    publish(rig.local, 99, first=101)
    with pytest.raises(TimeoutError):  # held: the 99 are not fetched
        await rig.local.wait_until(lambda: rig.committed() > 101, 0.5)
    assert rig.parent.count(UP) == 101

    rig.local.reject_size(AUDIT, 1_000_000)
    running = asyncio.ensure_future(writer.run())
    await rig.local.wait_until(lambda: rig.committed() == 200, WAIT_S)
    writer.request_stop()
    await asyncio.wait_for(running, WAIT_S)
    rig.link.request_stop()
    await asyncio.wait_for(rig.task, WAIT_S)
    ids = {e.body.record_id for e in entries_of(rig.local) if isinstance(e.body, Fact)}
    assert len(ids) == 200
    assert verify(chain_of(rig.local)).describe() == "chain of 200 entries intact"


async def keep_writing(writer: AuditWriter) -> None:
    """Run the writer, restarting it after each failure (as the supervisor does), until stopped."""
    while True:
        try:
            await writer.run()
        except TransportError:
            await asyncio.sleep(0.05)
        else:
            return


def audited_ids(cluster: MemoryCluster) -> Counter[str]:
    """How many entries the chain in ``cluster`` holds per record id."""
    return Counter(e.body.record_id for e in entries_of(cluster) if isinstance(e.body, Fact))


@pytest.mark.parametrize("fault", ["stalled", "failing"])
async def test_fail_closed_commits_a_batch_only_once_its_entries_are_written(
    audited: list[AuditedLink], fault: str
) -> None:
    """Delivered but not audited: not committed, the link says why; recovered: each record once."""
    audit = queue(max_pending=500, fail_closed=True)
    rig = audited_link(audited, audit, gated=True)
    trail = MemoryCluster()  # the audit topic on its own cluster: only its writes fail
    writer = writer_for(trail, audit, per_record=50)
    writing = asyncio.ensure_future(keep_writing(writer))
    sent = publish(rig.local, 100)
    rig.task = asyncio.ensure_future(rig.link.run())
    await rig.local.wait_until(lambda: rig.committed() == 100, WAIT_S)
    await trail.wait_until(lambda: sum(audited_ids(trail).values()) == 100, WAIT_S)

    if fault == "stalled":
        trail.stall()  # writes hang until released
    else:
        trail.reject_size(AUDIT, 100)  # every write is rejected
    sent += publish(rig.local, 60, first=100)
    await rig.parent.wait_until(lambda: rig.parent.count(UP) >= 101, WAIT_S)  # delivered
    with pytest.raises(TimeoutError):  # ... but not committed: its entries are not written
        await rig.local.wait_until(lambda: rig.committed() > 100, 1.5)
    state = rig.health.snapshot()["local"]
    assert not state.up
    assert state.reason.startswith("holding: audit entries cannot be written: ")
    assert not audit.is_open()

    if fault == "stalled":
        trail.release()
    else:
        trail.reject_size(AUDIT, 1_000_000)
        trail.fail_next(1, "ack lost", landed=True)  # and the next write lands but fails
    await rig.local.wait_until(lambda: rig.committed() == 160, WAIT_S)
    assert rig.health.is_up("local")
    writer.request_stop()
    await asyncio.wait_for(writing, WAIT_S)
    rig.link.request_stop()
    await asyncio.wait_for(rig.task, WAIT_S)
    copies = Counter(record_id(record) for record in rig.parent.records(UP))
    assert copies == Counter(sent)  # every record delivered (and committed) once
    assert audited_ids(trail) == Counter(sent)  # every entry in the chain once
    assert verify(chain_of(trail)).describe() == "chain of 160 entries intact"


async def test_fail_closed_stopped_before_its_entries_are_written_loses_nothing(
    audited: list[AuditedLink],
) -> None:
    """Stopped while entries hang: the batch stays uncommitted; the next link audits it again."""
    audit = queue(max_pending=500, fail_closed=True)
    rig = audited_link(audited, audit, gated=True)
    trail = MemoryCluster()
    writer = writer_for(trail, audit, per_record=50)
    writing = asyncio.ensure_future(keep_writing(writer))
    sent = publish(rig.local, 40)
    rig.task = asyncio.ensure_future(rig.link.run())
    await rig.local.wait_until(lambda: rig.committed() == 40, WAIT_S)
    trail.stall()
    sent += publish(rig.local, 30, first=40)
    await rig.parent.wait_until(lambda: rig.parent.count(UP) >= 41, WAIT_S)
    rig.link.request_stop()  # gives up on the unwritten entries after delivery_timeout_s
    await asyncio.wait_for(rig.task, WAIT_S)
    assert rig.committed() == 40

    trail.release()
    again = audited_link(audited, audit, gated=True, after=rig)
    again.task = asyncio.ensure_future(again.link.run())
    await rig.local.wait_until(lambda: rig.committed() == 70, WAIT_S)
    again.link.request_stop()
    await asyncio.wait_for(again.task, WAIT_S)
    writer.request_stop()
    await asyncio.wait_for(writing, WAIT_S)
    entries = audited_ids(trail)
    assert set(entries) == set(sent)  # every record audited: some twice (delivered twice)
    assert all(entries[i] == 1 for i in sent[:40])
    assert verify(chain_of(trail)).intact


async def test_a_handed_over_batch_is_told_when_its_entries_are_written() -> None:
    """Each future is done once its own facts are acked, not before; the writer does not linger."""
    cluster = MemoryCluster()
    pending = queue(fail_closed=True)
    writer = AuditWriter(
        pending, MemorySink(cluster), AUDIT, tip_reader(cluster), Health(), node_id="city",  # type: ignore[arg-type]
        entries_per_record=100, flush_s=60.0, deadline_s=0.5,
    )  # fmt: skip
    first, second = pending.hand_over(facts(3)), pending.hand_over(facts(2, first=3))
    assert pending.hand_over([]).done()
    assert not first.done()
    assert pending.awaited()
    cluster.stall()
    running = asyncio.ensure_future(writer.run())
    await cluster.wait_until(lambda: cluster.blocked_writes == 1, WAIT_S)
    assert not first.done()  # taken, not acked
    assert not second.done()
    cluster.release()
    await asyncio.wait_for(asyncio.gather(first, second), WAIT_S)
    third = pending.hand_over(facts(1, first=5))
    await asyncio.wait_for(third, WAIT_S)  # well before flush_s: a link waits for it
    writer.request_stop()
    await asyncio.wait_for(running, WAIT_S)
    assert [e.seq for e in entries_of(cluster)] == list(range(6))


def test_facts_are_made_only_when_the_trail_watches() -> None:
    """Without on_audit the summary carries no facts (no cost when the trail is off)."""
    assert Watch(PeerWatch(Topology(CITY, "city", PROVINCE, ()), 0, 5.0, bucket_s=60, keep=30,
                           settle_s=120)).on_audit is None  # fmt: skip


async def test_the_http_routes_verify_and_list_entries() -> None:
    """GET /audit/verify answers the verdict; /audit/entries pages by seq; errors are JSON."""
    cluster = MemoryCluster()
    pending = queue()
    pending.add(facts(6))
    writer = writer_for(cluster, pending)
    await run_once(writer)
    broken = False

    async def read() -> Sequence[Located]:
        if broken:
            raise TransportError("cluster down")
        return chain_of(cluster)

    app = web.Application()
    add_audit_routes(app, AuditSource(read, lambda: writer.tip))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        answer = await client.get("/audit/verify")
        assert answer.status == 200
        body = await answer.json()
        assert (body["intact"], body["entries"], body["last_seq"]) == (True, 6, 5)
        answer = await client.get("/audit/entries", params={"from_seq": "2", "limit": "3"})
        page = await answer.json()
        assert [e["seq"] for e in page["entries"]] == [2, 3, 4]
        assert page["entries"][0]["id"] == "r2"
        answer = await client.get("/audit/entries", params={"limit": "0"})
        assert answer.status == 400
        assert "limit" in (await answer.json())["error"]
        broken = True
        answer = await client.get("/audit/verify")
        assert answer.status == 503
        assert "cluster down" in (await answer.json())["error"]


def test_the_command_refuses_bad_arguments_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad timeout or an unreadable configuration exits 2 with a message naming it."""
    config = tmp_path / "node.toml"
    assert main(["audit", "verify", "--config", str(config)]) == 2
    assert "cannot read" in capsys.readouterr().err
    config.write_text('[node]\nid = "n"\nlevel = "city"\nregion = "410100"\n\n'
                      '[local]\nbootstrap = "127.0.0.1:1"\n')  # fmt: skip
    assert main(["audit", "verify", "--config", str(config), "--timeout", "0"]) == 2
    assert "--timeout" in capsys.readouterr().err
    assert main(["audit", "verify", "--config", str(config), "--timeout", "0.5"]) == 1
    assert "cascade.audit.n" in capsys.readouterr().err
