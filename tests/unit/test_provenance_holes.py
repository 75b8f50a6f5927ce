"""The provenance holes a review found, each closed: one test per way in."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from node.core.decision import Decider
from node.core.envelope import HOPS, RECORD_ID, REFUSAL_REASON, SOURCE_DEPT, SOURCE_REGION
from node.core.feedback import CORRECTS, VERSION
from node.core.outcome import Delivered, Outcome, Reason, Refused
from node.core.peers import PeerWatch
from node.core.policy import Policy, PolicySnapshot
from node.core.provenance import (
    DIGESTS,
    DOMAIN,
    PROVENANCE,
    SIGNED_FIELDS,
    Checker,
    Provenance,
    Stamp,
    Stamper,
    leaf,
    signed_message,
    vouch,
)
from node.core.routing import Arrival, Router
from node.core.topology import Topology
from node.core.trust import TrustedKey, TrustStore
from node.kafka.accounting import Watch
from node.kafka.bridge import Destinations, Link
from node.kafka.topics import level_writers
from node.ops.metrics import Metrics
from node.signing import Ed25519Signer, verifiers
from node.supervisor import Health
from node.transport import Partition
from tests.memory_transport import MemoryCluster, MemorySink, MemorySource, Stored
from tests.unit.test_decision import HERE, Seen, decider
from tests.unit.test_decision import record as fresh_record
from tests.unit.test_link_failures import (
    CATALOG,
    CITY,
    FAST,
    GROUP,
    OUTBOX,
    PROVINCE,
    SCHEMAS,
    TOPICS,
    UP,
    big_value,
    header,
    headers_of,
    publish,
    record_id,
)
from tests.unit.test_provenance import NOW, SIGNER, checker, headers, signed

PARENT = "410100"


def with_provenance(arrival: Arrival, provenance: Provenance) -> Decider:
    """The county decider of ``test_decision`` on the link from ``arrival``, with provenance."""
    base = decider(validate=False)
    return Decider(
        base._router, base._policy, arrival, base._schemas, validate_ingress=False,
        provenance=provenance,
    )  # fmt: skip


def annotated(outcome: Outcome) -> dict[str, bytes]:
    """The annotations of a delivered outcome."""
    assert isinstance(outcome, Delivered), outcome
    return dict(outcome.annotations)


def test_a_batch_verified_for_one_region_never_vouches_for_another() -> None:
    """A key published under another key's id: its verified tree is not the other key's.

    A node trusted for 410103 signs with its own key but names 410102's key id; after its own
    record verifies, 410102's record of the same batch must still be checked with 410102's key.
    """
    county = Ed25519Signer.of(Ed25519PrivateKey.generate())
    thief = Ed25519Signer.of(Ed25519PrivateKey.generate())
    store = TrustStore([
        TrustedKey("410102", county.key_id, "ed25519", county.public_key, 0),
        TrustedKey("410103", county.key_id, "ed25519", thief.public_key, 0),
    ])  # fmt: skip
    naming_the_county = dataclasses.replace(thief, key_id=county.key_id)
    own = {RECORD_ID: b"a", SOURCE_REGION: b"410103"}
    forged = {RECORD_ID: b"b", SOURCE_REGION: b"410102"}
    stamps = Stamper(naming_the_county).stamp([(own, b"x"), (forged, b"y")], 1000)
    checking = Checker(store, verifiers(), require=True, cache_size=16)
    assert checking.check({**own, HOPS: b"410103^", PROVENANCE: stamps[0]}, b"x") is None
    refused = checking.check({**forged, HOPS: b"410103^", PROVENANCE: stamps[1]}, b"y")
    assert refused is not None
    assert refused.reason is Reason.PROVENANCE
    assert "does not match" in refused.message


def test_the_link_from_above_refuses_a_record_without_a_hop_path_ending_at_the_parent() -> None:
    """Only the parent's node writes the link from above, and it always appends ``PARENTv``."""
    above = with_provenance(Arrival.FROM_ABOVE, Provenance(Stamper(SIGNER), checker()))
    fresh = fresh_record()
    assert dict(fresh.headers)[HOPS] == b""
    elsewhere = Seen([*(h for h in fresh.headers if h[0] != HOPS), (HOPS, b"410200v")], None)
    outcomes, _ = above.decide([fresh, elsewhere], now_ms=NOW)
    for outcome, hops in zip(outcomes, ("''", "'410200v'"), strict=True):
        assert isinstance(outcome, Refused)
        assert outcome.reason is Reason.FORGED
        assert outcome.message == (
            f"a record from above must have a hop path ending {PARENT}v, but cx-hops is {hops}"
        )


def test_the_link_from_above_checks_every_record_it_delivers() -> None:
    """From above: unsigned is refused, signed is delivered and never signed again."""
    above = with_provenance(Arrival.FROM_ABOVE, Provenance(Stamper(SIGNER), checker()))
    fresh = fresh_record()
    found = dict(fresh.headers)
    stamp = Stamper(SIGNER).stamp([(found, fresh.value)], NOW)[0]
    path = (HOPS, f"{HERE}^,{PARENT}v".encode())
    kept = [h for h in fresh.headers if h[0] != HOPS]
    unsigned = Seen([*kept, path], fresh.value)
    vouched = Seen([*kept, path, (PROVENANCE, stamp)], fresh.value)
    outcomes, _ = above.decide([unsigned, vouched], now_ms=NOW)
    assert isinstance(outcomes[0], Refused)
    assert outcomes[0].reason is Reason.PROVENANCE
    assert PROVENANCE not in annotated(outcomes[1])


def test_vouch_checks_a_fresh_looking_record_on_the_link_from_above() -> None:
    """Without ``entry`` even a record with no hop path is checked, and refused unsigned."""
    fresh = fresh_record()
    outcomes: list[Outcome] = [Delivered(())]
    provenance = Provenance(Stamper(SIGNER), checker(require=True))
    vouch(provenance, [fresh], [(b"", b"")], outcomes, now_ms=NOW, entry=False)
    assert isinstance(outcomes[0], Refused)
    assert outcomes[0].message == "record carries no cx-prov signature"


def test_a_record_refused_before_deciding_is_never_signed() -> None:
    """A record forged for its writer is refused and left out of the signed tree.

    Else its proof could be rebuilt from a sibling's cx-prov and pass upstream.
    """
    below = with_provenance(Arrival.FROM_BELOW, Provenance(Stamper(SIGNER), None))
    legit = fresh_record(cx_id=b"legit-1")
    forged = fresh_record(cx_source_dept=b"PSB", cx_id=b"forged-1")
    known = Refused(Reason.FORGED, "topic cascade.outbox.HRSS is department HRSS's")
    outcomes, _ = below.decide([legit, forged], now_ms=NOW, refused={1: known})
    assert outcomes[1] == known
    stamp = Stamp.decode(annotated(outcomes[0])[PROVENANCE])
    assert (stamp.index, stamp.count) == (0, 1)
    digest = DIGESTS["ed25519"]
    sibling = leaf({**dict(legit.headers), **annotated(outcomes[0])}, legit.value, digest)
    rebuilt = Stamp(stamp.key_id, stamp.signed_ms, 1, 2, sibling, stamp.signature).encode()
    upstream = checker(
        TrustedKey(HERE, SIGNER.key_id, "ed25519", SIGNER.public_key, 0), require=True
    )
    found = {**dict(forged.headers), HOPS: f"{HERE}^".encode(), PROVENANCE: rebuilt}
    refused = upstream.check(found, forged.value)
    assert refused is not None
    assert refused.reason is Reason.PROVENANCE


def test_a_record_refused_by_its_projection_is_never_signed() -> None:
    """Signing comes after every refusal the decision makes, projection included."""
    below = with_provenance(Arrival.FROM_BELOW, Provenance(Stamper(SIGNER), None))
    broken = fresh_record(b"\x00not avro", cx_id=b"broken-1")
    outcomes, _ = below.decide([fresh_record(), broken], now_ms=NOW)
    assert isinstance(outcomes[1], Refused)
    assert outcomes[1].reason is Reason.BAD_PAYLOAD
    stamp = Stamp.decode(annotated(outcomes[0])[PROVENANCE])
    assert (stamp.index, stamp.count) == (0, 1)


def test_the_correction_fields_are_signed_under_a_new_domain() -> None:
    """cx-version and cx-corrects are signed (absent as absent); v1 headers never verify."""
    assert {VERSION, CORRECTS} <= set(SIGNED_FIELDS)
    assert DOMAIN == b"cx-provenance-root-v2\x00"
    assert signed_message("k", 1, 1, bytes(32)).startswith(DOMAIN)
    found, value = signed(2)[1]
    checking = checker()
    assert checking.check(found, value) is None
    for field in (VERSION, CORRECTS):
        refused = checker().check({**found, field: b"2"}, value)
        assert refused is not None
        assert "does not match" in refused.message
    header = bytearray(found[PROVENANCE])
    header[0] = 1
    refused = checking.check({**found, PROVENANCE: bytes(header)}, value)
    assert refused is not None
    assert "version 01 is not 2" in refused.message


def test_a_signed_correction_verifies_and_its_version_cannot_be_raised() -> None:
    """A correction signed with its version passes; raising the version is refused."""
    found, value = headers(0)
    found.update({VERSION: b"2", CORRECTS: b"report-1", SOURCE_DEPT: b"HRSS"})
    found[PROVENANCE] = Stamper(SIGNER).stamp([(found, value)], NOW)[0]
    found[HOPS] = b"410102^"
    assert checker().check(found, value) is None
    refused = checker().check({**found, VERSION: b"3"}, value)
    assert refused is not None
    assert refused.reason is Reason.PROVENANCE


class Outboxes(MemorySource):
    """Reads the outboxes of several departments as one consumer, as the local link does."""

    def __init__(self, cluster: MemoryCluster, topics: Sequence[str], group: str) -> None:
        super().__init__(cluster, topics[0], group, 50)
        self.topics = topics

    async def start(self) -> None:
        """Join every outbox at the group's committed offsets."""
        cluster = self._cluster
        self.positions = {
            Partition(topic, p): cluster.committed.get((self.group, Partition(topic, p)), 0)
            for topic in self.topics
            for p in range(len(cluster.topic(topic).partitions))
        }
        self._running = True

    def _waiting(self) -> bool:
        topic = self._cluster.topic
        return any(
            len(topic(tp.topic).partitions[tp.partition]) > at for tp, at in self.positions.items()
        )

    def _take(self) -> dict[Partition, list[Stored]]:
        batch: dict[Partition, list[Stored]] = {}
        for tp, at in sorted(self.positions.items()):
            records = self._cluster.topic(tp.topic).partitions[tp.partition][at:]
            if records:
                batch[tp] = records
                self.positions[tp] = at + len(records)
        return batch


async def test_a_link_never_signs_a_record_it_refuses_as_forged() -> None:
    """Over a real link: HRSS publishes a record as PSB next to PSB's own; it is not signed.

    The rules alone would deliver it (it is a valid PSB record); only its topic's writer gives
    it away, so it must be refused before the batch is signed.
    """
    local, parent = MemoryCluster(), MemoryCluster()
    topology = Topology(CITY, "city", PROVINCE, ())
    hrss = TOPICS.outbox("HRSS")
    link = Link(
        "local", Outboxes(local, [OUTBOX, hrss], GROUP), Arrival.FROM_BELOW, Router(topology),
        Policy(PolicySnapshot(CATALOG)),
        Destinations(MemorySink(local), TOPICS, MemorySink(parent), TOPICS, CITY),
        Metrics(CollectorRegistry(), ["local"]), Health(), schemas=SCHEMAS, settings=FAST,
        peer=CITY, log=structlog.get_logger("test"),
        watch=Watch(PeerWatch(topology, 0, 5.0, bucket_s=60, keep=30, settle_s=120)),
        writers=level_writers(TOPICS, CITY, ["PSB", "HRSS"], ()),
        provenance=Provenance(Stamper(SIGNER), None),
    )  # fmt: skip
    sent = publish(local, 3)
    local.produce(hrss, b"k", big_value(10), headers_of("forged-1"))

    def done() -> bool:
        return local.committed_total(GROUP, OUTBOX) + local.committed_total(GROUP, hrss) == 4

    task = asyncio.ensure_future(link.run())
    try:
        await local.wait_until(done, 10.0)
    finally:
        link.request_stop()
        await asyncio.wait_for(task, 10.0)
    landed = parent.records(UP)
    assert sorted(record_id(r) for r in landed) == sorted(sent)
    stamps = [Stamp.decode(header(r, PROVENANCE) or b"") for r in landed]
    assert sorted((s.index, s.count) for s in stamps) == [(0, 3), (1, 3), (2, 3)]
    [refused] = local.records(TOPICS.refused)
    assert (record_id(refused), header(refused, REFUSAL_REASON)) == ("forged-1", b"forged")
    assert header(refused, PROVENANCE) is None
