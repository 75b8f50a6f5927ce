"""The trust keeper's bookkeeping: what it accepts, what it relays, what it hands up, how it waits."""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

import structlog

from node.core.provenance import PROVENANCE
from node.core.topology import Topology
from node.core.trust import Origin, TrustedKey, TrustStore
from node.kafka.trust import TrustKeeper, _Source

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


async def test_a_link_waits_for_an_unknown_signing_key_but_only_once() -> None:
    """An unknown key id is waited for (until learnt or the bound); a second time not at all."""
    made = keeper([], wait_s=0.3)
    header = bytes((1, 6)) + b"county" + bytes(20)
    records = [Seen([(PROVENANCE, header)])]

    async def learn() -> None:
        await asyncio.sleep(0.05)
        made.offer(key("410102", "county"), _Source("t", Origin.CHILD, "410102"))
        made.publish()

    started = time.monotonic()
    await asyncio.gather(made.await_keys(records), learn())  # type: ignore[arg-type]
    assert 0.04 < time.monotonic() - started < 0.25
    unknown = [Seen([(PROVENANCE, bytes((1, 5)) + b"ghost" + bytes(20))])]
    started = time.monotonic()
    await made.await_keys(unknown)  # type: ignore[arg-type]
    assert 0.25 < time.monotonic() - started < 1.0
    started = time.monotonic()
    await made.await_keys(unknown)  # type: ignore[arg-type]
    assert time.monotonic() - started < 0.05
