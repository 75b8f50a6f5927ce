"""The demo's traffic: routes through the cascade, a generator of varied records, and the count.

Every record the generator publishes belongs to one route, which says where it must arrive (the
inboxes of some demo nodes) or why it must be refused. At the end the demo reads those topics back
and counts ids per route: delivered, missing, duplicated, refused as expected.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

from department_client import Published, Received
from sample_records import LEGAL_ENTITY, LICENCE, PERSON, Flaw, sample

from node.codec import SchemaSet


@dataclass(frozen=True)
class Route:
    """A kind of record the demo sends, and where it must end up."""

    title: str
    at_node: str  # the node at whose level it is published (to its department's outbox)
    source: str  # its source region
    target: str
    expect: tuple[str, ...]  # nodes whose inbox must receive it; () = refused at ``at_node``
    weight: int = 10
    refusal: str = (
        ""  # why it is refused: undecodable, not_shared, not_authoritative, quality, forged
    )
    gateway: bool = False  # posted as JSON to the node's HTTP gateway instead of Kafka
    writer: str = ""  # a department writing it to its own outbox in another's name (a forgery)


# fmt: off
ROUTES = (
    Route("up: county → province", "county", "410102", "region:410000", ("province",), 20),
    Route("up via the gateway: county → province", "county", "410102", "region:410000",
          ("province",), 10, gateway=True),
    Route("up: county → its city (level)", "county", "410102", "level:city", ("city",)),
    Route("across: county → sibling county", "county", "410102", "region:410103", ("county-b",)),
    Route("across: county → Jiyuan (no city)", "county", "410102", "region:419001", ("jiyuan",)),
    Route("up and down: Jiyuan → county", "jiyuan", "419001", "region:410102", ("county",)),
    Route("down: province → one county", "province", "410000", "region:410102", ("county",)),
    Route("down: province → city subtree", "province", "410000", "subtree:410100",
          ("city", "county", "county-b")),
    Route("refused: undecodable value", "county", "410102", "region:410000", (), 2, "undecodable"),
    Route("refused: not shared", "county", "410102", "region:410000", (), 2, "not_shared"),
    Route("refused: not the one source", "jiyuan", "419001", "region:410000", (), 2,
          "not_authoritative"),
    Route("refused: identity number check digit", "county", "410102", "region:410000", (), 2,
          "quality"),
    Route("refused: PSB publishing as SAMR", "county", "410102", "region:410000", (), 2,
          "forged", writer="PSB"),
)
# fmt: on
SCHEMAS = (PERSON, LEGAL_ENTITY, LICENCE)


@dataclass
class Sent:
    """What the generator published, by route."""

    ids: dict[Route, list[str]] = field(default_factory=dict)

    def add(self, route: Route, record_id: str) -> None:
        """Remember one published record."""
        self.ids.setdefault(route, []).append(record_id)

    def total(self) -> int:
        """Records published so far."""
        return sum(len(ids) for ids in self.ids.values())


class Generator:
    """Makes varied records: routes by weight, three schemas, distinct ids, created now."""

    def __init__(self, schemas: SchemaSet, seed: int = 2026) -> None:
        self._schemas = schemas
        self._rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
        self._seq = 0

    def make(self) -> tuple[Route, Published]:
        """Return the next record and its route."""
        route = self._rng.choices(ROUTES, weights=[r.weight for r in ROUTES])[0]
        self._seq += 1
        now = int(time.time() * 1000)
        schema = PERSON if route.gateway else self._rng.choice(SCHEMAS)  # the token is PSB's
        extra = {}
        if route.refusal == "not_shared":
            schema, extra = PERSON, {"resource": "410102-PSB-00009"}
        elif route.refusal == "not_authoritative":  # a department of the level, not the source
            extra = {"source_dept": {PERSON: "SAMR", LEGAL_ENTITY: "DSB", LICENCE: "PSB"}[schema]}
        elif route.refusal == "forged":  # SAMR's record, written into PSB's outbox
            schema = LEGAL_ENTITY
        elif route.refusal == "quality":
            schema, extra = PERSON, {"flaw": Flaw.ID_CHECK_CHAR}
        published = sample(
            self._schemas, schema, route.source, route.target, seed=self._seq * 7919,
            created_ms=now, **extra,  # type: ignore[arg-type]
        )  # fmt: skip
        if route.refusal == "undecodable":
            published = Published(published.envelope, b"\xc3\x01not-avro")
        return route, published


@dataclass(frozen=True)
class Outcome:
    """What became of one route's records."""

    route: Route
    sent: int
    delivered: int  # records that reached every expected inbox (or the refusal topic)
    missing: int
    duplicated: int
    reasons: Counter[str]


def count(route: Route, ids: list[str], found: dict[str, list[Received]]) -> Outcome:
    """Count ``route``'s ids in what was read back (``found``: place -> records read there)."""
    places = [f"{n}.inbox" for n in route.expect] or [f"{route.at_node}.refused"]
    wanted = set(ids)
    complete, duplicated = set(wanted), 0
    reasons: Counter[str] = Counter()
    for place in places:
        seen = Counter(r.record_id for r in found.get(place, []) if r.record_id in wanted)
        complete &= set(seen)
        duplicated += sum(n - 1 for n in seen.values())
        if not route.expect:
            reasons.update(
                r.headers.get("cx-refusal-reason", "?")
                for r in found.get(place, []) if r.record_id in wanted
            )  # fmt: skip
    return Outcome(route, len(ids), len(complete), len(wanted - complete), duplicated, reasons)
