"""The whole decision over a batch: the core says where each copy goes, with which bytes, or why not."""

from __future__ import annotations

import io
from typing import NamedTuple

from fastavro import schemaless_reader
from sample_records import PERSON, sample

from node.codec import HEADER_SIZE, load_schemas, packaged_schema_dir
from node.core.catalog import Catalog
from node.core.decision import Decider, doubled_envelope_header, millis
from node.core.envelope import Sharing
from node.core.grants import Grant, GrantBook, GrantStatus
from node.core.outcome import Delivered, Reason, Refused
from node.core.policy import Department, Policy, PolicySnapshot
from node.core.routing import Arrival, Router
from node.core.topology import Topology
from tests.unit.test_policy import resource

SCHEMAS = load_schemas(packaged_schema_dir())
HERE = "410102"
ASKED = "ASK"


class Seen(NamedTuple):
    """A record as the decision sees it."""

    headers: list[tuple[str, bytes]]
    value: bytes | None


def decider(*, validate: bool = True) -> Decider:
    """A county node whose department HRSS holds a grant for ``ASK`` limited to ``id_number``."""
    items = ("id_number",)
    conditional = resource(ASKED, sharing=Sharing.CONDITIONAL)
    grant = Grant(ASKED, ASKED, "HRSS", HERE, items, 2**62, GrantStatus.APPROVED, 1)
    snapshot = PolicySnapshot(
        Catalog({ASKED: conditional}),
        departments=(Department("HRSS", 4, frozenset({ASKED})),),
        grants=GrantBook([grant], 0),
    )
    router = Router(Topology(HERE, "county", "410100", ()))
    return Decider(router, Policy(snapshot), Arrival.FROM_BELOW, SCHEMAS, validate_ingress=validate)


def record(value: bytes | None = None, **replace: bytes) -> Seen:
    """A conditional person record published here for this region (so delivered locally)."""
    made = sample(SCHEMAS, PERSON, HERE, f"region:{HERE}", seed=3, created_ms=1_700_000_000_000,
                  resource=ASKED, source_dept="PSB")  # fmt: skip
    headers = [(name, replace.get(name.replace("-", "_"), data))
               for name, data in made.envelope.to_headers()]  # fmt: skip
    return Seen(headers, made.value if value is None else value)


def test_a_granted_copy_carries_its_projected_value() -> None:
    """The department's copy is projected to the granted items by the decision itself."""
    outcomes, facts = decider().decide([record()], now_ms=1_700_000_000_000)
    [outcome] = outcomes
    assert isinstance(outcome, Delivered)
    [copy] = outcome.copies
    assert (copy.department, copy.items) == ("HRSS", ("id_number",))
    projected = SCHEMAS.projection(PERSON, ("id_number",))
    assert copy.value is not None
    assert copy.value[2:HEADER_SIZE] == projected.fingerprint
    datum = schemaless_reader(io.BytesIO(copy.value[HEADER_SIZE:]), projected.parsed, None)
    assert isinstance(datum, dict)
    assert list(datum) == ["id_number"]
    assert [(f.created_ms, f.resource, f.source_dept, f.hops) for f in facts] == [
        (1_700_000_000_000, ASKED.encode(), b"PSB", b"")
    ]


def test_a_value_that_cannot_be_projected_is_refused_as_bad_payload() -> None:
    """Without ingress validation, an undecodable value meets the projection and is refused."""
    [outcome], _ = decider(validate=False).decide(
        [record(value=b"\xc3\x01" + b"\x00" * 8)], now_ms=0
    )
    assert isinstance(outcome, Refused)
    assert outcome.reason is Reason.BAD_PAYLOAD


def test_a_doubled_envelope_header_is_refused_whatever_its_values() -> None:
    """A record that names its target twice is refused, not decided on the last value."""
    seen = record()
    doubled = Seen([*seen.headers, ("cx-target", b"region:410000")], seen.value)
    [outcome], _ = decider().decide([doubled], now_ms=0)
    assert outcome == Refused(Reason.BAD_ENVELOPE, "header cx-target: given more than once")
    assert doubled_envelope_header([("x-note", b"a"), ("x-note", b"b")]) is None


def test_creation_time_is_read_or_minus_one() -> None:
    """A missing or malformed cx-created-ms reads as -1."""
    assert (millis(b"12"), millis(None), millis(b"soon")) == (12, -1, -1)
