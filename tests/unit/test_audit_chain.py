"""The audit chain: encoding, chaining, and the verifier naming the first tampered entry."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.core.audit import (
    GENESIS,
    EntryError,
    Fact,
    Gap,
    Located,
    Outcome,
    ProblemKind,
    Tip,
    chain,
    make_entry,
    parse_entry,
    payload_digest,
    verify,
)

T0 = 1_767_225_600_000


def fact(n: int, outcome: Outcome = Outcome.DELIVERED, **changes: str) -> Fact:
    """A fact about record ``r{n}``."""
    made = Fact(
        f"r{n}", "410100-HRSS-00001", "410102", "HRSS", "local:PSB", T0 + n, outcome,
        "", "", payload_digest(f"payload {n}".encode()),
    )  # fmt: skip
    return made if not changes else Fact(**{**_as_kwargs(made), **changes})  # type: ignore[arg-type]


def _as_kwargs(made: Fact) -> dict[str, object]:
    return dict(made._asdict())


def stored(lines: Sequence[bytes], per_record: int = 1) -> list[Located]:
    """Place lines as the writer does: ``per_record`` entries per Kafka record."""
    return [Located(i // per_record, i % per_record, line) for i, line in enumerate(lines)]


def lines_of(count: int) -> list[bytes]:
    """A chain of ``count`` entries, stored lines."""
    return [entry.encode() for entry in chain((fact(n) for n in range(count)), None)]


def rewrite(line: bytes, rehash: bool, **changes: object) -> bytes:
    """Change fields of a stored line; with ``rehash`` the tamperer also fixes its hash."""
    data = json.loads(line)
    data.update(changes)
    if rehash:
        entry = parse_entry(line)
        fields = _as_kwargs(entry.body)  # type: ignore[arg-type]
        for key, value in changes.items():
            fields[{"id": "record_id"}.get(key, key)] = (
                Outcome(str(value)) if key == "outcome" else value
            )
        body = Fact(**fields)  # type: ignore[arg-type]
        return make_entry(entry.seq, entry.prev, body).encode()
    return json.dumps(data).encode()


def test_an_entry_round_trips_and_its_hash_covers_seq_and_prev() -> None:
    """A stored line parses back to the same entry; the same body at another place hashes apart."""
    first, second = chain([fact(1), fact(1)], None)
    assert parse_entry(first.encode()) == first
    assert first.prev == GENESIS
    assert second.prev == first.hash
    assert first.body == second.body
    assert first.hash != second.hash
    assert make_entry(0, GENESIS, fact(1)).hash == first.hash


def test_the_encoding_is_canonical_ascii_json_without_the_payload() -> None:
    """One line, sorted keys, no spaces, ASCII; the payload is only its digest."""
    entry = chain([fact(1, detail="拒绝")], None)[0]
    line = entry.encode()
    assert b"\n" not in line
    assert b" " not in line
    assert line.isascii()
    data = json.loads(line)
    assert list(data) == [*sorted(set(data) - {"hash"}), "hash"]
    assert data["sha256"] == payload_digest(b"payload 1")
    assert b"payload 1" not in line
    assert data["detail"] == "拒绝"


def test_chain_continues_after_a_tip() -> None:
    """Chaining after the tip of a chain gives the entries a whole chain would have had."""
    whole = chain([fact(n) for n in range(5)], None)
    head = chain([fact(n) for n in range(2)], None)
    rest = chain([fact(n) for n in range(2, 5)], Tip(1, head[-1].hash))
    assert head + rest == whole


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"seq":1}', "no hash"),
    ],
)
def test_unreadable_lines_are_refused_with_a_reason(line: bytes, why: str) -> None:
    """A line that is not an entry raises EntryError saying why."""
    with pytest.raises(EntryError, match=why):
        parse_entry(line)


def test_an_intact_chain_with_a_gap_entry_verifies() -> None:
    """Every entry in turn, gaps counted, the tip reported."""
    entries = chain([fact(0), Gap(7, T0, T0 + 5), fact(8)], None)
    verdict = verify(stored([e.encode() for e in entries], per_record=2))
    assert verdict.intact
    assert verdict.entries == 3
    assert verdict.gaps == 1
    assert verdict.dropped == 7
    assert verdict.tip == Tip(2, entries[-1].hash)
    assert (
        verdict.describe()
        == "chain of 3 entries intact (1 gap entries: 7 entries dropped unwritten)"
    )


def test_an_empty_chain_is_intact() -> None:
    """No entries, no problem (unless the node says it wrote some)."""
    assert verify([]).describe() == "chain of 0 entries intact"
    problem = verify([], tip=Tip(3, "a" * 64)).problem
    assert problem is not None
    assert problem.kind is ProblemKind.REMOVED
    assert problem.seq == 0


def test_a_removed_entry_is_named_with_the_one_before() -> None:
    """Entry 41 removed: 'entry 41 missing after 40', at the offset where 42 now is."""
    lines = lines_of(50)
    del lines[41]
    problem = verify(stored(lines)).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.offset) == (ProblemKind.REMOVED, 41, 41)
    assert problem.message.startswith("entry 41 missing after 40")


def test_a_chain_cut_at_the_topic_start_verifies_from_its_first_entry() -> None:
    """Retention cut the first 20 records: intact from entry 20; from offset 0, a removal."""
    lines = lines_of(30)[20:]
    expired = [Located(20 + n, 0, line) for n, line in enumerate(lines)]
    verdict = verify(expired)
    assert verdict.intact
    assert (verdict.first, verdict.entries) == (20, 10)
    assert "from entry 20" in verdict.describe()
    assert verdict.to_json()["first_seq"] == 20
    problem = verify(stored(lines)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.REMOVED, 0)
    tampered = [*expired[:3], *expired[4:]]
    problem = verify(tampered).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.REMOVED, 23)


def test_an_altered_entry_is_named() -> None:
    """An outcome changed without fixing the hash: that entry is altered."""
    lines = lines_of(10)
    lines[6] = rewrite(lines[6], rehash=False, outcome="refused")
    problem = verify(stored(lines, per_record=4)).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.offset, problem.index) == (
        ProblemKind.ALTERED, 6, 1, 2,
    )  # fmt: skip
    assert "hash does not match" in problem.message


def test_an_entry_rewritten_with_a_fresh_hash_is_named_by_the_next_link() -> None:
    """A tamperer who fixes the hash is caught where the next entry was chained to the old one."""
    lines = lines_of(10)
    lines[3] = rewrite(lines[3], rehash=True, destination="up:410000")
    problem = verify(stored(lines)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.ALTERED, 3)


def test_two_swapped_entries_are_a_reordering() -> None:
    """Entries 4 and 5 swapped: entry 5 is found where 4 belongs."""
    lines = lines_of(10)
    lines[4], lines[5] = lines[5], lines[4]
    problem = verify(stored(lines)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.REORDERED, 5)
    assert "where entry 4 belongs" in problem.message


def test_a_repeated_entry_is_a_reordering() -> None:
    """An entry written twice goes backwards."""
    lines = lines_of(5)
    lines.insert(3, lines[1])
    problem = verify(stored(lines)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.REORDERED, 1)


def test_the_tip_catches_the_end_removed_or_rewritten() -> None:
    """Without the tip the end can be cut or rewritten; with it, both are named."""
    lines = lines_of(6)
    tip = verify(stored(lines)).tip
    assert tip is not None
    assert verify(stored(lines[:4])).intact
    cut = verify(stored(lines[:4]), tip=tip).problem
    assert cut is not None
    assert (cut.kind, cut.seq) == (ProblemKind.REMOVED, 4)
    assert cut.message == "entries 4-5 missing at the end: the node wrote up to entry 5"
    forged = [*lines[:5], rewrite(lines[5], rehash=True, outcome="refused")]
    assert verify(stored(forged)).intact
    caught = verify(stored(forged), tip=tip).problem
    assert caught is not None
    assert (caught.kind, caught.seq) == (ProblemKind.ALTERED, 5)


# -- property tests: random chains, random single tamperings ------------------------------------

outcomes = st.sampled_from(list(Outcome))
texts = st.text(max_size=12)
facts = st.builds(
    Fact, texts, texts, texts, texts, texts, st.integers(0, 2**45), outcomes, texts, texts,
    st.binary(max_size=8).map(payload_digest),
)  # fmt: skip
bodies = st.one_of(
    facts, st.builds(Gap, st.integers(1, 10**6), st.integers(0, 2**45), st.integers(0, 2**45))
)
chains = st.lists(bodies, min_size=2, max_size=40).map(
    lambda b: [e.encode() for e in chain(b, None)]
)
per_record = st.integers(1, 5)


@given(chains, per_record)
def test_untouched_chains_verify(lines: list[bytes], per: int) -> None:
    """Any chain as written is intact, however many entries share a record."""
    verdict = verify(stored(lines, per))
    assert verdict.intact
    assert verdict.entries == len(lines)


@given(chains, per_record, st.data())
@settings(max_examples=300)
def test_one_removed_entry_is_always_named(
    lines: list[bytes], per: int, data: st.DataObject
) -> None:
    """Removing any entry but the last is caught as that entry removed."""
    k = data.draw(st.integers(0, len(lines) - 2))
    problem = verify(stored(lines[:k] + lines[k + 1 :], per)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.REMOVED, k)


@given(chains, per_record, st.data())
@settings(max_examples=300)
def test_one_altered_entry_is_always_named(
    lines: list[bytes], per: int, data: st.DataObject
) -> None:
    """Changing any field of any entry without fixing its hash is caught as that entry altered."""
    k = data.draw(st.integers(0, len(lines) - 1))
    original = json.loads(lines[k])
    key = data.draw(st.sampled_from(sorted(set(original) - {"hash"})))
    value = data.draw(
        st.one_of(st.integers(), st.text(max_size=5)).filter(lambda v: v != original[key])
    )
    lines[k] = rewrite(lines[k], rehash=False, **{key: value})
    problem = verify(stored(lines, per)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.ALTERED, k)


@given(chains, per_record, st.data())
@settings(max_examples=300)
def test_one_rehashed_entry_is_always_named(
    lines: list[bytes], per: int, data: st.DataObject
) -> None:
    """Rewriting a record entry's content with a fresh hash is caught at the next link, or by the tip."""
    tip = verify(stored(lines)).tip
    candidates = [i for i, line in enumerate(lines) if json.loads(line)["kind"] == "record"]
    if not candidates:
        return
    k = data.draw(st.sampled_from(candidates))
    old = json.loads(lines[k])["outcome"]
    lines[k] = rewrite(
        lines[k], rehash=True, outcome="refused" if old != "refused" else "delivered"
    )
    problem = verify(stored(lines, per), tip=tip).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.ALTERED, k)


@given(chains, per_record, st.data())
@settings(max_examples=300)
def test_two_swapped_entries_are_always_named(
    lines: list[bytes], per: int, data: st.DataObject
) -> None:
    """Swapping any two entries is caught as the later one found where the earlier belongs."""
    i = data.draw(st.integers(0, len(lines) - 2))
    j = data.draw(st.integers(i + 1, len(lines) - 1))
    lines[i], lines[j] = lines[j], lines[i]
    problem = verify(stored(lines, per)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.REORDERED, j)
    assert (problem.offset, problem.index) == divmod(i, per)


@given(chains, st.data())
def test_garbage_never_crashes_the_verifier(lines: list[bytes], data: st.DataObject) -> None:
    """Any bytes in place of an entry are named as that entry altered."""
    k = data.draw(st.integers(0, len(lines) - 1))
    junk = data.draw(st.binary(max_size=64))
    lines[k] = junk
    problem = verify(stored(lines)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.ALTERED, k)


texts = st.text(max_size=40)


@given(
    st.tuples(texts, texts, texts, texts, texts, st.integers(min_value=0, max_value=2**53)),
    st.sampled_from(list(Outcome)),
    st.tuples(texts, texts, texts),
    st.integers(min_value=0, max_value=2**53),
)
def test_the_fast_encoding_is_the_canonical_json(
    names: tuple[str, str, str, str, str, int],
    outcome: Outcome,
    said: tuple[str, str, str],
    seq: int,
) -> None:
    """Any text (quotes, control characters, non-ASCII): the bytes json makes, keys sorted."""
    body = Fact(*names, outcome, *said)
    entry = make_entry(seq, GENESIS, body)
    data = {**entry.fields(), "hash": entry.hash}
    assert (
        entry.canonical
        == json.dumps(
            entry.fields(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode()
    )
    assert json.loads(entry.encode()) == data
    assert parse_entry(entry.encode()) == entry
