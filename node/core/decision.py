"""The whole decision over a batch: routing, the sharing rules, ingress checks and projection.

Returns, per record, an outcome that carries everything the shell needs to act: where each copy
goes and with which bytes (a projected value is made here), or why the record or a copy is
refused. The shell only produces what it is told. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from node.core.avro import SchemaSet
from node.core.envelope import (
    CREATED_MS,
    ENVELOPE_HEADERS,
    GRADE,
    HOPS,
    RECORD_ID,
    RESOURCE,
    SOURCE_DEPT,
    SOURCE_REGION,
    TARGET,
    Headers,
    Mark,
)  # fmt: skip
from node.core.ingress import admit
from node.core.outcome import Copy, Delivered, Outcome, Reason, Refused
from node.core.policy import Policy, PolicyKey
from node.core.provenance import Provenance, vouch
from node.core.quality import QUALITY_HEADER, Verdict
from node.core.routing import Arrival, RouteKey, Router
from node.errors import PayloadError


class Seen(Protocol):
    """What the decision reads of a record: its headers and its value."""

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]:
        """Headers in the order they were written."""

    @property
    def value(self) -> bytes | None:
        """The value bytes."""


class Facts(NamedTuple):
    """What the shell counts of a record besides its outcome (raw header values)."""

    created_ms: int
    """``cx-created-ms``, -1 if absent or malformed."""
    resource: bytes | None
    source_dept: bytes | None
    hops: bytes | None
    quality: Verdict | None = None
    """The quality verdict, where the record entered here and its resource has rules."""
    record_id: bytes | None = None
    source_region: bytes | None = None


class Decider:
    """Decides batches that arrive from one side of one node."""

    def __init__(
        self,
        router: Router,
        policy: Policy,
        arrival: Arrival,
        schemas: SchemaSet,
        *,
        validate_ingress: bool,
        provenance: Provenance | None = None,
    ) -> None:
        self._router = router
        self._policy = policy
        self._arrival = arrival
        self._schemas = schemas
        self._validate = validate_ingress and arrival is Arrival.FROM_BELOW
        self._provenance = provenance

    def decide(
        self,
        records: Sequence[Seen],
        *,
        now_ms: int,
        refused: Mapping[int, Refused] | None = None,
    ) -> tuple[list[Outcome], list[Facts]]:
        """Return each record's outcome and its facts (``now_ms`` times the quality checks).

        ``refused`` (by index) holds refusals the shell knew before deciding (a record forged
        for its topic's writer, one it could not read): they stand, and such a record is never
        signed. On the link from above, a record whose hop path does not end with the parent
        sending it down is refused as forged: only the parent's node writes there.
        """
        route_keys: list[RouteKey] = []
        policy_keys: list[PolicyKey] = []
        facts: list[Facts] = []
        doubled: list[int] = []
        new = tuple.__new__  # Facts from its fields in order, without the named tuple's own call
        for index, record in enumerate(records):
            headers = record.headers
            found = dict(headers)  # one C-level pass; a name written twice keeps its last value
            if len(found) != len(headers):
                doubled.append(index)
            get = found.get
            hops, resource, dept, source = (
                get(HOPS),
                get(RESOURCE),
                get(SOURCE_DEPT),
                get(SOURCE_REGION),
            )
            route_keys.append((get(TARGET), hops))
            policy_keys.append((resource, source, dept, get(GRADE)))
            facts.append(
                new(
                    Facts,
                    (millis(get(CREATED_MS)), resource, dept, hops, None, get(RECORD_ID), source),
                )
            )
        routed = self._router.route_batch(route_keys, self._arrival)
        outcomes = self._policy.apply_batch(policy_keys, routed)
        if self._validate:
            region = self._router.topology.region
            catalog = self._policy.snapshot.catalog
            for index, (record, (_, hops)) in enumerate(zip(records, route_keys, strict=True)):
                if not hops:
                    entered = admit(
                        record.headers, record.value, region, self._schemas, catalog, now_ms
                    )
                    if entered.verdict is not None:
                        facts[index] = facts[index]._replace(quality=entered.verdict)
                    if entered.refusal is not None:
                        outcomes[index] = entered.refusal
                    elif entered.verdict is not None:
                        outcomes[index] = _annotated(outcomes[index], entered.verdict)
        for index in doubled:
            refusal = doubled_envelope_header(records[index].headers)
            if refusal is not None:
                outcomes[index] = refusal
        self._finish(records, route_keys, outcomes, dict(refused or {}), now_ms)
        return outcomes, facts

    def _finish(
        self,
        records: Sequence[Seen],
        route_keys: Sequence[RouteKey],
        outcomes: list[Outcome],
        settled: dict[int, Refused],
        now_ms: int,
    ) -> None:
        """Apply the refusals known before deciding, project, then check and sign (last).

        Signing comes last so that a record refused for any reason is never signed.
        """
        entry = self._arrival is Arrival.FROM_BELOW  # check records from other nodes, sign fresh
        if not entry:
            settled.update(self._not_from_parent(route_keys, settled))
        for index, refusal in settled.items():
            outcomes[index] = refusal
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, Delivered) and outcome.projects:
                outcomes[index] = self._project(records[index].value, outcome)
        vouch(
            self._provenance, records, route_keys, outcomes, now_ms=now_ms, entry=entry,
            settled=settled,
        )  # fmt: skip

    def _not_from_parent(
        self, route_keys: Sequence[RouteKey], settled: Mapping[int, Refused]
    ) -> dict[int, Refused]:
        """Refuse records from above whose hop path does not end ``PARENTv``."""
        parent = self._router.topology.parent or ""
        last = f"{parent}{Mark.DOWN.value}".encode()
        found: dict[int, Refused] = {}
        for index, (_, hops) in enumerate(route_keys):
            if index in settled or (hops and (hops == last or hops.endswith(b"," + last))):
                continue
            shown = (hops or b"").decode("ascii", "replace")
            found[index] = Refused(
                Reason.FORGED,
                f"a record from above must have a hop path ending {last.decode()}, "
                f"but cx-hops is {shown!r}",
            )
        return found

    def _project(self, value: bytes | None, outcome: Delivered) -> Outcome:
        """Make each projected copy's value; a value that cannot be projected refuses that copy."""
        copies: list[Copy] = []
        withheld = list(outcome.withheld)
        for copy in outcome.copies:
            if copy.items is None:
                copies.append(copy)
                continue
            try:
                projected = self._schemas.project(value or b"", copy.items)
            except PayloadError as error:
                withheld.append((copy, Refused(Reason.BAD_PAYLOAD, str(error))))
                continue
            copies.append(Copy(copy.direction, copy.region, copy.hops, copy.department,
                               copy.items, projected))  # fmt: skip
        if not copies:
            if len(withheld) == 1:
                return withheld[0][1]
            return Refused(withheld[0][1].reason, "; ".join(r.message for _, r in withheld))
        return Delivered(tuple(copies), tuple(withheld), annotations=outcome.annotations)


def _annotated(outcome: Outcome, verdict: Verdict) -> Outcome:
    """Let every copy of a delivered record carry its quality verdict."""
    if not isinstance(outcome, Delivered):
        return outcome
    annotations = (*outcome.annotations, (QUALITY_HEADER, verdict.header()))
    return Delivered(outcome.copies, outcome.withheld, outcome.projects, annotations)


def doubled_envelope_header(headers: Headers) -> Refused | None:
    """Refuse a record that carries an envelope header more than once (which one would count?)."""
    seen: set[str] = set()
    for name, _ in headers:
        if name in seen and name in ENVELOPE_HEADERS:
            return Refused(Reason.BAD_ENVELOPE, f"header {name}: given more than once")
        seen.add(name)
    return None


def millis(value: bytes | None) -> int:
    """Parse a ``cx-created-ms`` value; -1 if absent or malformed."""
    if value is None:
        return -1
    try:
        return int(value)
    except ValueError:
        return -1
