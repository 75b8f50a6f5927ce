"""Signed provenance: a batch signed once at the entry node, every record checked on its own later."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.core.decision import Decider
from node.core.envelope import HOPS, Envelope, Sharing, Target, TargetKind
from node.core.outcome import Delivered, Reason, Refused
from node.core.provenance import (
    PROVENANCE,
    SIGNED_FIELDS,
    Checker,
    Provenance,
    RootCache,
    Stamp,
    Stamper,
    signed_message,
)
from node.core.trust import TrustedKey, TrustStore
from node.signing import Ed25519Signer, Ed25519Verifier, Sm2Signer, sm2_available, verifiers
from tests.unit.test_decision import Seen, decider
from tests.unit.test_decision import record as fresh_record

SOURCE = "410102"
NOW = 1_700_000_000_000
SIGNER = Ed25519Signer.of(Ed25519PrivateKey.generate())


def trusted(signer: Ed25519Signer | Sm2Signer = SIGNER, **change: object) -> TrustedKey:
    """The trust store entry of ``signer`` for the source region."""
    key = TrustedKey(SOURCE, signer.key_id, signer.algorithm, signer.public_key, NOW - 1000)
    return dataclasses.replace(key, **change)  # type: ignore[arg-type]


def checker(*keys: TrustedKey, require: bool = True, cache: int = 16) -> Checker:
    """A checker trusting ``keys`` (the signer's key by default)."""
    return Checker(TrustStore(keys or (trusted(),)), verifiers(), require=require, cache_size=cache)


def headers(index: int, value: bytes = b"value") -> tuple[dict[str, bytes], bytes]:
    """The headers (as a mapping) and value of a fresh record."""
    envelope = Envelope(
        f"id-{index}", "R1", SOURCE, "HRSS", Target(TargetKind.REGION, "410000"), 2,
        Sharing.UNCONDITIONAL, NOW - 5,
    )  # fmt: skip
    return dict(envelope.to_headers()), value + bytes([index % 256])


def signed(count: int) -> list[tuple[dict[str, bytes], bytes]]:
    """``count`` records stamped in one batch, each passed on by one node (hops set)."""
    records = [headers(i) for i in range(count)]
    stamps = Stamper(SIGNER).stamp(records, NOW)
    for (found, _), stamp in zip(records, stamps, strict=True):
        found[PROVENANCE] = stamp
        found[HOPS] = b"410102^"
    return records


def check(check_with: Checker, record: tuple[Mapping[str, bytes], bytes | None]) -> Refused | None:
    """Check one record."""
    return check_with.check(record[0], record[1])


@pytest.mark.parametrize("count", [1, 2, 5, 100])
def test_every_record_of_a_signed_batch_is_vouched_for_with_one_signature_check(count: int) -> None:
    """Every record passes; the signature is verified once, the other records hit the cache."""
    checking = checker()
    for record in signed(count):
        assert check(checking, record) is None
    assert (checking.cache.misses, checking.cache.hits) == (1, count - 1)


def test_the_hop_path_and_unsigned_headers_may_change() -> None:
    """Hops grow at every node and other headers come and go: the signature still holds."""
    found, value = signed(3)[1]
    found[HOPS] = b"410102^,410100^"
    found["x-other"] = b"anything"
    assert check(checker(), (found, value)) is None


@pytest.mark.parametrize("field", SIGNED_FIELDS)
def test_altering_any_signed_field_is_refused(field: str) -> None:
    """Changing, adding or removing a signed field breaks the signature."""
    for change in (b"X", None):
        found, value = signed(4)[2]
        if change is None:
            if field not in found:
                continue
            found.pop(field)
        else:
            found[field] = found.get(field, b"") + change
        refused = check(checker(), (found, value))
        assert refused is not None
        assert refused.reason is Reason.PROVENANCE


def test_an_altered_or_missing_payload_is_refused() -> None:
    """One byte more, one byte changed, or no value: refused."""
    found, value = signed(4)[0]
    for altered in (value + b"!", b"X" + value[1:], None):
        refused = check(checker(), (found, altered))
        assert refused is not None
        assert "does not match" in refused.message or "proof" in refused.message


def test_tampering_any_byte_of_the_header_is_refused() -> None:
    """Every byte of cx-prov (version, key id, time, index, count, proof, signature) matters."""
    found, value = signed(5)[3]
    header = found[PROVENANCE]
    for position in range(len(header)):
        altered = bytearray(header)
        altered[position] ^= 0x01
        refused = check(checker(), ({**found, PROVENANCE: bytes(altered)}, value))
        assert isinstance(refused, Refused), position
        assert refused.reason is Reason.PROVENANCE


def test_a_truncated_or_empty_header_is_refused_as_malformed() -> None:
    """Cut anywhere, the header is refused with a message, never an exception."""
    found, value = signed(3)[0]
    header = found[PROVENANCE]
    for end in range(len(header)):
        refused = check(checker(), ({**found, PROVENANCE: header[:end]}, value))
        assert isinstance(refused, Refused)


def test_a_missing_signature_is_refused_only_when_required() -> None:
    """No cx-prov: refused under ``require``, passed otherwise."""
    found, value = headers(0)
    found[HOPS] = b"410102^"
    refused = check(checker(), (found, value))
    assert refused is not None
    assert "no cx-prov" in refused.message
    assert check(checker(require=False), (found, value)) is None


def test_a_key_trusted_for_another_region_is_refused() -> None:
    """The key of 410103 does not vouch for records of 410102."""
    refused = check(checker(trusted(region="410103")), signed(1)[0])
    assert refused is not None
    assert "not for source region 410102" in refused.message


def test_an_unknown_key_is_refused() -> None:
    """A key id nobody trusts is refused."""
    other = Ed25519Signer.of(Ed25519PrivateKey.generate())
    refused = check(checker(trusted(other)), signed(1)[0])
    assert refused is not None
    assert "not in the trust store" in refused.message


def test_a_key_is_accepted_only_within_its_validity() -> None:
    """Signed before valid_from or after valid_until: refused; at either bound: accepted."""
    record = signed(1)[0]
    assert check(checker(trusted(valid_from_ms=NOW, valid_until_ms=NOW)), record) is None
    for key in (trusted(valid_from_ms=NOW + 1), trusted(valid_until_ms=NOW - 1)):
        refused = check(checker(key), record)
        assert refused is not None
        assert "not at the signing time" in refused.message


def test_a_forged_signature_by_another_key_is_refused() -> None:
    """A stamp made with another private key under the trusted key's id does not verify."""
    other = Ed25519Signer.of(Ed25519PrivateKey.generate())
    impostor = dataclasses.replace(other, key_id=SIGNER.key_id, public_key=SIGNER.public_key)
    found, value = headers(0)
    found[PROVENANCE] = Stamper(impostor).stamp([(found, value)], NOW)[0]
    found[HOPS] = b"410102^"
    refused = check(checker(), (found, value))
    assert refused is not None
    assert "does not match" in refused.message


def test_a_bad_signature_is_never_cached() -> None:
    """A root whose signature fails is checked again next time (and fails again)."""
    found, value = signed(2)[0]
    stamp = Stamp.decode(found[PROVENANCE])
    bad = dataclasses.replace(stamp, signature=bytes(64)).encode()
    checking = checker()
    for _ in range(2):
        assert check(checking, ({**found, PROVENANCE: bad}, value)) is not None
    assert len(checking.cache) == 0


def test_the_root_cache_is_bounded_least_recently_used_out() -> None:
    """Beyond its size, or its node budget, the cache forgets the tree used longest ago."""
    cache = RootCache(2, max_nodes=5)
    first, second, third = ((bytes(32), SOURCE, i, 1, bytes(64)) for i in range(3))
    cache.add(first, [b"a"])
    cache.add(second, [b"b"])
    assert cache.nodes(first) == {b"a"}  # first is now the most recently used
    cache.add(third, [b"c"])
    assert len(cache) == 2
    assert cache.nodes(second) is None
    cache.add(third, [b"d", b"e", b"f", b"g"])  # 6 nodes > 5: the oldest tree goes
    assert cache.nodes(first) is None
    assert cache.nodes(third) == {b"c", b"d", b"e", b"f", b"g"}
    with pytest.raises(ValueError, match="at least one"):
        RootCache(0)


def test_a_forged_leaf_cannot_borrow_a_verified_batch() -> None:
    """With a batch's tree cached, a record whose leaf differs still needs its own signature."""
    checking = checker()
    records = signed(8)
    assert check(checking, records[0]) is None
    found, value = records[5]
    refused = check(checking, ({**found, "cx-grade": b"1"}, value))
    assert refused is not None
    assert "does not match" in refused.message
    assert check(checking, records[5]) is None


def test_header_sizes_grow_with_the_log_of_the_batch() -> None:
    """The header is 101 bytes for one record, plus 32 bytes per tree level."""
    sizes = {}
    for count in (1, 100, 2000):
        records = [headers(i) for i in range(count)]
        sizes[count] = max(map(len, Stamper(SIGNER).stamp(records, NOW)))
    assert sizes == {1: 101, 100: 101 + 7 * 32, 2000: 101 + 11 * 32}


def test_the_signed_message_binds_key_time_count_and_root() -> None:
    """Each part of the signed message changes it."""
    base = signed_message("k", 1, 2, bytes(32))
    others = [
        signed_message("j", 1, 2, bytes(32)), signed_message("k", 2, 2, bytes(32)),
        signed_message("k", 1, 3, bytes(32)), signed_message("k", 1, 2, b"\x01" * 32),
    ]  # fmt: skip
    assert base not in others


def test_the_ed25519_verifier_says_no_to_garbage() -> None:
    """A public key or signature of the wrong length is a no, not an exception."""
    verifier = Ed25519Verifier()
    assert not verifier.verify(b"short", b"m", bytes(64))
    assert not verifier.verify(SIGNER.public_key, b"m", b"short")


@pytest.mark.skipif(not sm2_available(), reason="the optional extra sm (gmssl) is not installed")
def test_sm2_signs_and_checks_a_batch_with_sm3_leaves() -> None:
    """An SM2 key signs a batch (SM3 tree); the records pass; a changed payload does not."""
    sm2 = Sm2Signer.of(123456789)
    records = [headers(i) for i in range(3)]
    for (found, _), stamp in zip(records, Stamper(sm2).stamp(records, NOW), strict=True):
        found[PROVENANCE] = stamp
        found[HOPS] = b"410102^"
    checking = checker(trusted(sm2))
    assert all(check(checking, record) is None for record in records)
    refused = check(checker(trusted(sm2)), (records[0][0], b"other"))
    assert refused is not None
    assert refused.reason is Reason.PROVENANCE


def test_the_decision_signs_fresh_records_and_refuses_forged_ones() -> None:
    """From below: a fresh delivered record gets cx-prov; a handed-up one without it is refused."""
    base = decider()
    with_provenance = Decider(
        base._router, base._policy, base._arrival, base._schemas, validate_ingress=False,
        provenance=Provenance(Stamper(SIGNER), checker()),
    )  # fmt: skip
    fresh = fresh_record()
    handed = Seen([*(h for h in fresh.headers if h[0] != HOPS), (HOPS, b"410103^")], fresh.value)
    outcomes, _ = with_provenance.decide([fresh, handed], now_ms=NOW)
    first, second = outcomes
    assert isinstance(first, Delivered)
    stamp = Stamp.decode(dict(first.annotations)[PROVENANCE])
    assert (stamp.key_id, stamp.signed_ms, stamp.index, stamp.count) == (SIGNER.key_id, NOW, 0, 1)
    assert isinstance(second, Refused)
    assert second.reason is Reason.PROVENANCE
