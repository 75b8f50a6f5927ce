"""The trust keeper's bookkeeping: what it accepts, what it relays, what it hands up, how it waits."""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

import structlog

from node.core.envelope import HOPS
from node.core.provenance import PROVENANCE
from node.core.topology import Topology
from node.core.trust import Origin, TrustedKey, TrustStore
from node.kafka.trust import KeyWait, TrustKeeper, _Source

CITY = Topology("410100", "city", "410000", ("410102",))
NOW_MS = 1_700_000_000_000


def key(region: str, key_id: str, issued_ms: int = 1, until: int | None = None) -> TrustedKey:
    """A key record."""
    return TrustedKey(region, key_id, "ed25519", b"\x02" * 32, 0, until, issued_ms)


class Seen(NamedTuple):
    """A record as a link reads it."""

    headers: list[tuple[str, bytes]]


def keeper(stores: list[TrustStore], wait_s: float = 0.2) -> TrustKeeper:
    """A city's keeper whose own key is ``own``; each published store is appended to ``stores``."""
    return TrustKeeper(
        CITY, key("410100", "own"), stores.append, grace_s=60, key_wait_s=wait_s,
        log=structlog.get_logger("test"), clock=lambda: NOW_MS / 1000,
    )  # fmt: skip


def test_the_keeper_takes_keys_only_from_where_they_may_come() -> None:
    """A child's key of its subtree is taken, another region's is not; the parent's likewise."""
    stores: list[TrustStore] = []
    made = keeper(stores)
    child = _Source("p.trust.from.410102", Origin.CHILD, "410102")
    parent = _Source("parent.trust", Origin.PARENT)
    assert made.offer(key("410102", "county"), child)
    assert not made.offer(key("410103", "sibling"), child)
    assert not made.offer(key("410102", "county", issued_ms=0), child)  # older: ignored
    assert made.offer(key("410000", "province"), parent)
    assert not made.offer(key("410102", "echo"), parent)
    made.publish()
    assert stores[-1].known("county")
    assert stores[-1].known("province")
    assert not stores[-1].known("sibling")


def test_the_keeper_relays_what_its_topic_lacks_and_hands_up_its_subtree() -> None:
    """Keys newer than the local topic's are relayed; only the subtree's go up."""
    made = keeper([])
    own = _Source("p.trust", Origin.OWN)
    made.offer(key("410100", "own", issued_ms=5), own)
    made.offer(key("410102", "county"), _Source("t", Origin.CHILD, "410102"))
    made.offer(key("410000", "province"), _Source("t", Origin.PARENT))
    assert sorted(k.key_id for k in made.unpublished()) == ["county", "province"]
    assert sorted(k.key_id for k in made.subtree()) == ["county", "own"]


def test_rotation_cuts_the_previous_key_of_the_node() -> None:
    """A keeper that read an older key of its region publishes its own and cuts the older one."""
    made = keeper([])
    made.offer(key("410100", "old"), _Source("p.trust", Origin.OWN))
    published = {k.key_id: k.valid_until_ms for k in made.rotation()}
    assert published == {"own": None, "old": NOW_MS + 60_000}


def stamped(key_id: bytes, hops: bytes = b"410102^") -> Seen:
    """A record whose cx-prov names ``key_id`` (the rest is garbage), with ``hops``."""
    return Seen([(PROVENANCE, bytes((1, len(key_id))) + key_id + bytes(20)), (HOPS, hops)])


async def timed(wait: KeyWait, records: list[Seen]) -> float:
    """How long ``wait`` holds ``records`` up, in seconds."""
    started = time.monotonic()
    await wait(records)  # type: ignore[arg-type]
    return time.monotonic() - started


async def read_later(made: TrustKeeper, key_id: str, issued_ms: int = 1) -> None:
    """After 50 ms, ``made`` reads the county's key ``key_id`` from its trust topic."""
    await asyncio.sleep(0.05)
    made.offer(key("410102", key_id, issued_ms), _Source("t", Origin.CHILD, "410102"))
    made.publish()


async def test_a_link_waits_for_an_unknown_signing_key_until_it_is_read() -> None:
    """A checked record signed with an unknown key id waits until the key arrives."""
    made = keeper([], wait_s=0.3)
    waited, _ = await asyncio.gather(
        timed(made.key_wait(check_all=False), [stamped(b"county")]), read_later(made, "county")
    )
    assert 0.04 < waited < 0.25
    assert await timed(made.key_wait(check_all=False), [stamped(b"county")]) < 0.05


async def test_a_wait_that_found_its_key_does_not_stop_the_next_one() -> None:
    """Keys read one by one: a record signed with the second is waited for after the first came."""
    made = keeper([], wait_s=0.3)
    local = made.key_wait(check_all=False)
    for key_id in ("county", "county-2"):  # a newer key of the same region each time
        waited, _ = await asyncio.gather(
            timed(local, [stamped(key_id.encode())]), read_later(made, key_id, len(key_id))
        )
        assert 0.04 < waited < 0.25, key_id


async def test_a_link_waits_at_most_once_per_bound_whatever_the_key_ids() -> None:
    """Made-up key ids, a new one each batch: one bounded wait, then none for the bound."""
    made = keeper([], wait_s=0.3)
    local = made.key_wait(check_all=False)
    assert 0.25 < await timed(local, [stamped(b"ghost-1")]) < 1.0
    for batch in range(2, 5):
        assert await timed(local, [stamped(f"ghost-{batch}".encode())]) < 0.05
    assert 0.25 < await timed(made.key_wait(check_all=False), [stamped(b"ghost-5")]) < 1.0


async def test_a_fresh_record_never_holds_the_local_link_up() -> None:
    """A department's record has no hop path: it is signed here, not checked, so never waited for."""
    made = keeper([], wait_s=0.3)
    local = made.key_wait(check_all=False)
    for batch in range(3):
        assert await timed(local, [stamped(f"ghost-{batch}".encode(), hops=b"")]) < 0.05
    above = made.key_wait(check_all=True)  # the link from above checks every record
    assert 0.25 < await timed(above, [stamped(b"ghost-9", hops=b"")]) < 1.0
