"""Hostile provenance, trust records and writers: what a forger controls, fuzzed.

A real batch is signed (Ed25519) and one record of it is then altered: a signed header, the value,
or the ``cx-prov`` bytes (truncated, extended, a byte flipped, the index, count, time or key id
changed). Checked by a fresh checker and by one whose cache already holds the batch's verified
nodes, the altered record must be refused whenever what it vouches for changed; nothing may raise.
Trust topic records and per-writer topic checks are fuzzed for crashes with null and hostile
header values.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from node.core.envelope import HOPS, SOURCE_DEPT, SOURCE_REGION, Envelope
from node.core.feedback import FEEDBACK, REPORT
from node.core.grants import Grant, GrantStatus
from node.core.heartbeat import HEARTBEAT
from node.core.outcome import Reason, Refused
from node.core.provenance import PROVENANCE, SIGNED_FIELDS, Checker, Stamp, Stamper
from node.core.trust import TrustedKey, TrustStore
from node.core.writers import Writer, Writers
from node.signing import Ed25519Signer, verifiers
from tests.unit.test_envelope import envelopes
from tests.unit.test_fuzz_headers import HANG_LIMIT_S, attempt, fuzz, hop_texts, hostile_bytes

FUZZ = fuzz(120)
SIGNER = Ed25519Signer.of(Ed25519PrivateKey.generate())
NOW = 1_800_000_000_000


def _checker() -> Checker:
    """A checker trusting the signer for both regions batches are published in."""
    keys = [TrustedKey(region, SIGNER.key_id, SIGNER.algorithm, SIGNER.public_key, 0)
            for region in ("410102", "410103")]  # fmt: skip
    return Checker(TrustStore(keys), verifiers(), require=True, cache_size=8)


@st.composite
def signed_batches(draw: st.DrawFn) -> tuple[list[tuple[dict[str, Any], bytes | None]], int]:
    """A batch of 1-6 records signed at once (each since passed on: hops set), and one index.

    Record ids are distinct, as in a real batch: of two identical records, each one's stamp
    vouches for the other as well (same leaf), so swapping their indexes changes nothing.
    """
    batch: list[tuple[dict[str, Any], bytes | None]] = []
    region = draw(st.sampled_from(["410102", "410103"]))
    drawn: list[Envelope] = draw(
        st.lists(envelopes, min_size=1, max_size=6, unique_by=lambda e: e.record_id)
    )
    for envelope in drawn:
        headers: dict[str, Any] = dict(envelope.to_headers())
        headers[SOURCE_REGION] = region.encode()
        batch.append((headers, draw(st.binary(max_size=40) | st.none())))
    for (headers, _), stamp in zip(batch, Stamper(SIGNER).stamp(batch, NOW), strict=True):
        headers[PROVENANCE] = stamp
        headers[HOPS] = f"{region}^".encode()
    return batch, draw(st.integers(0, len(batch) - 1))


def _restamped(stamp: bytes, draw: st.DrawFn) -> bytes:
    """``stamp`` with one of its fields or bytes changed."""
    parsed = Stamp.decode(stamp)
    how = draw(st.sampled_from(["index", "count", "time", "key", "flip", "cut", "extend", "proof"]))
    if how == "index":
        return Stamp(parsed.key_id, parsed.signed_ms, draw(st.integers(0, 2**32 - 1)), parsed.count,
                     parsed.proof, parsed.signature).encode()  # fmt: skip
    if how == "count":
        return Stamp(parsed.key_id, parsed.signed_ms, parsed.index, draw(st.integers(0, 2**32 - 1)),
                     parsed.proof, parsed.signature).encode()  # fmt: skip
    if how == "time":
        return Stamp(parsed.key_id, draw(st.integers(0, 2**64 - 1)), parsed.index, parsed.count,
                     parsed.proof, parsed.signature).encode()  # fmt: skip
    if how == "key":
        return Stamp(draw(st.text("0123456789abcdef:ed", min_size=1, max_size=80)), parsed.signed_ms,
                     parsed.index, parsed.count, parsed.proof, parsed.signature).encode()  # fmt: skip
    if how == "flip":
        at = draw(st.integers(0, len(stamp) - 1))
        return stamp[:at] + bytes([stamp[at] ^ draw(st.integers(1, 255))]) + stamp[at + 1 :]
    if how == "cut":
        return stamp[: draw(st.integers(0, len(stamp) - 1))]
    if how == "extend":
        return stamp + draw(st.binary(min_size=1, max_size=40))
    hashes = draw(st.integers(0, 40))
    return Stamp(parsed.key_id, parsed.signed_ms, parsed.index, parsed.count,
                 draw(st.binary(min_size=32 * hashes, max_size=32 * hashes)),
                 parsed.signature).encode()  # fmt: skip


@st.composite
def forgeries(
    draw: st.DrawFn,
) -> tuple[list[tuple[dict[str, Any], bytes | None]], int, bool, bool]:
    """A signed batch with one record altered, and what changed.

    Whether what it vouches for changed, and whether its fields or value did (not only its stamp).
    """
    batch, index = draw(signed_batches())
    headers, value = batch[index]
    altered = dict(headers)
    how = draw(st.sampled_from(["field", "drop", "value", "stamp", "unsigned", "none"]))
    if how == "field":
        name = draw(st.sampled_from(SIGNED_FIELDS))
        altered[name] = draw(hostile_bytes.filter(lambda b: b != headers.get(name)))
    elif how == "drop":
        name = draw(st.sampled_from([n for n in SIGNED_FIELDS if n in headers]))
        del altered[name]
    elif how == "value":
        value = draw((st.binary(max_size=40) | st.none()).filter(lambda v: v != batch[index][1]))
    elif how == "stamp":
        altered[PROVENANCE] = _restamped(headers[PROVENANCE], draw)
    elif how == "unsigned":
        altered[HOPS] = draw(hop_texts).encode()
        altered["x-trace"] = draw(hostile_bytes)
    batch[index] = (altered, value)
    vouched_changed = how in ("field", "drop", "value") or (
        how == "stamp" and altered[PROVENANCE] != headers[PROVENANCE]
    )
    return batch, index, vouched_changed, how in ("field", "drop", "value")


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(forgeries(), st.booleans())
def test_an_altered_record_never_passes_the_provenance_check(
    case: tuple[list[tuple[dict[str, Any], bytes | None]], int, bool, bool], warm: bool
) -> None:
    """An altered record is refused; an intact one passes.

    Altered signed fields or value are refused with or without the batch's verified nodes
    cached; an altered stamp is refused by a fresh checker (a warm one may stop its climb at a
    verified node before reading the altered part, which vouches for the same leaf).
    """
    batch, index, vouched_changed, fields_changed = case
    headers, value = batch[index]
    checker = _checker()
    if warm:
        for other, (found, data) in enumerate(batch):
            if other != index:
                assert checker.check(found, data) is None
    refused = checker.check(headers, value)
    if refused is None:
        assert not vouched_changed or (warm and not fields_changed), (headers, value)
        return
    assert refused.reason is Reason.PROVENANCE
    assert refused.message
    assert vouched_changed


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(st.binary(max_size=300) | st.builds(lambda k, rest: bytes([1, k]) + rest,
                                           st.integers(0, 255), st.binary(max_size=200)))  # fmt: skip
def test_any_cx_prov_bytes_decode_or_raise_value_error(data: bytes) -> None:
    """``Stamp.decode`` raises only ValueError, and what it reads encodes back to the same bytes."""
    stamp = attempt(lambda: Stamp.decode(data), ValueError)
    if isinstance(stamp, ValueError):
        assert str(stamp)
        return
    assert stamp.encode() == data


KEY = json.loads(TrustedKey("410102", SIGNER.key_id, "ed25519", SIGNER.public_key, 0).to_json())


@st.composite
def key_records(draw: st.DrawFn) -> bytes:
    """A trust topic record value: a real key record with one field broken, or junk."""
    body = dict(KEY)
    how = draw(st.sampled_from(["field", "drop", "bytes", "deep"]))
    if how == "bytes":
        junk: bytes = draw(hostile_bytes)
        return junk
    name = draw(st.sampled_from(sorted(body)))
    if how == "drop":
        del body[name]
        return json.dumps(body).encode()
    if how == "deep":
        depth = draw(st.integers(1, 100_000))
        return json.dumps({**body, name: "*"}).replace('"*"', "[" * depth + "]" * depth).encode()
    body[name] = draw(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20)
                      | st.floats() | st.lists(st.integers(), max_size=2))  # fmt: skip
    return json.dumps(body).encode()


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(key_records())
def test_a_trust_record_is_read_or_refused_with_value_error(value: bytes) -> None:
    """``TrustedKey.from_json`` returns a key or raises ValueError naming the field."""
    key = attempt(lambda: TrustedKey.from_json(value), ValueError)
    if isinstance(key, ValueError):
        assert str(key)
        return
    assert TrustedKey.from_json(key.to_json()) == key


BY_TOPIC = {
    "cascade.outbox.PSB": Writer("cascade.outbox.PSB", department="PSB"),
    "cascade.up.410102": Writer("cascade.up.410102", child="410102"),
}
WRITERS = Writers("410100", BY_TOPIC.values())
writer_header_values = st.sampled_from([b"", b"PSB", b"410100", b"410102", b"410102^", b"410102^,410100v"]) | hostile_bytes | st.none()  # fmt: skip


@st.composite
def written(draw: st.DrawFn) -> tuple[str, list[tuple[str, Any]], bytes | None]:
    """A record read from a per-writer topic, its writer-revealing headers of any value."""
    topic = draw(st.sampled_from(["cascade.outbox.PSB", "cascade.up.410102", "cascade.outbox.X"]))
    marks: list[list[tuple[str, Any]]] = [
        [],
        [(HEARTBEAT, b"1")],
        [(FEEDBACK, REPORT)],
        [(FEEDBACK, None)],
    ]
    first = draw(st.sampled_from(marks))
    names = st.sampled_from([HOPS, SOURCE_DEPT, SOURCE_REGION, "cx-id"])
    rest = draw(st.lists(st.tuples(names, writer_header_values), max_size=5))
    return topic, [*first, *rest], draw(hostile_bytes | st.none())


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(written())
def test_a_record_on_a_writer_topic_is_let_through_or_refused_as_forged(
    record: tuple[str, list[tuple[str, Any]], bytes | None],
) -> None:
    """``Writers.check`` returns None or Refused(FORGED) with a message, never raises."""
    topic, headers, value = record
    refused = WRITERS.check(BY_TOPIC.get(topic), topic, headers, value)
    assert refused is None or (isinstance(refused, Refused) and refused.reason is Reason.FORGED)
    assert refused is None or refused.message


GRANT = json.loads(
    Grant("G1", "410102-PSB-00001", "HRSS", "410100", ("id_number",), 2**45,
          GrantStatus.APPROVED, 3, "ok", "410100").to_json()
)  # fmt: skip


@st.composite
def grant_records(draw: st.DrawFn) -> bytes:
    """A grants topic value (relayed from a neighbour's cluster): one field broken, or junk."""
    body = dict(GRANT)
    how = draw(st.sampled_from(["field", "number", "drop", "bytes", "deep"]))
    if how == "bytes":
        junk: bytes = draw(hostile_bytes)
        return junk
    name = draw(st.sampled_from(sorted(body)))
    if how == "drop":
        del body[name]
        return json.dumps(body).encode()
    if how in ("number", "deep"):
        depth = draw(st.integers(1, 100_000))
        hostile = (
            draw(st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "1" * 4000, "1.5"]))
            if how == "number"
            else "[" * depth + "]" * depth
        )
        return json.dumps({**body, name: "*"}).replace('"*"', hostile).encode()
    body[name] = draw(st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                      | st.text(max_size=20) | st.lists(st.text(max_size=3), max_size=2))  # fmt: skip
    return json.dumps(body).encode()


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(grant_records())
def test_a_relayed_grant_is_read_or_refused_with_value_or_type_error(value: bytes) -> None:
    """``Grant.from_json`` returns a grant or raises what its callers catch."""
    grant = attempt(lambda: Grant.from_json(value), (ValueError, TypeError))  # type: ignore[arg-type]
    if isinstance(grant, ValueError | TypeError):
        assert str(grant)
        return
    assert Grant.from_json(grant.to_json()) == grant
