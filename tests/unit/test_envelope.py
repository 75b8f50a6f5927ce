"""Region codes, targets, hop paths and the envelope headers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.core.envelope import (
    ENVELOPE_HEADERS,
    Envelope,
    Hop,
    Mark,
    Sharing,
    Target,
    TargetKind,
    format_hops,
    parse_hops,
)  # fmt: skip
from node.core.topology import Topology, contains, is_region_code, region_prefix
from node.errors import EnvelopeError

REPO = Path(__file__).resolve().parents[2]
ENVELOPE = Envelope(
    record_id="5f0c1c2e-0000-4000-8000-000000000001", resource="RES-POP-0001",
    source_region="410102", source_dept="PSB", target=Target(TargetKind.SUBTREE, "410100"),
    grade=3, sharing=Sharing.CONDITIONAL, created_ms=1_790_000_000_000,
    hops=(Hop("410102", Mark.UP), Hop("410100", Mark.DOWN)),
)  # fmt: skip


def test_region_prefixes_strip_trailing_zero_pairs() -> None:
    """Province, city, county and national codes reduce to their significant prefix."""
    assert [region_prefix(r) for r in ("410000", "410100", "410102", "000000", "500000")] == [
        "41", "4101", "410102", "", "50",
    ]  # fmt: skip


def test_containment_follows_the_code_hierarchy() -> None:
    """A region contains itself and what lies below it, nothing beside or above it."""
    assert contains("410000", "410102")
    assert contains("410100", "410100")
    assert contains("000000", "500101")
    assert not contains("410100", "410200")
    assert not contains("410102", "410100")


def test_region_codes_are_six_ascii_digits() -> None:
    """Only six ASCII digits make a region code."""
    assert is_region_code("410102")
    assert not any(
        is_region_code(c)
        for c in ("41010", "4101020", "41010x", "\uff14\uff11\uff10\uff11\uff10\uff12")
    )


def test_child_towards_finds_the_child_on_the_way_at_any_depth() -> None:
    """A municipality's county children and a national node's province children are both found."""
    national = Topology("000000", "national", None, ("410000", "500000"))
    assert national.child_towards("410102") == "410000"
    assert national.child_towards("500101") == "500000"
    assert national.child_towards("320100") is None
    municipality = Topology("500000", "municipality", "000000", ("500101", "500103"))
    assert municipality.child_towards("500103") == "500103"
    assert municipality.child_towards("500105") is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [("410102", "KIND:VALUE"), ("planet:earth", "unknown kind"), ("region:41", "six-digit"),
     ("subtree:abcdef", "six-digit"), ("level:", "level name")],
)  # fmt: skip
def test_bad_targets_say_what_is_wrong(text: str, needle: str) -> None:
    """Each malformed target raises EnvelopeError naming cx-target and the problem."""
    with pytest.raises(EnvelopeError, match=needle) as caught:
        Target.parse(text)
    assert caught.value.header == "cx-target"


@given(st.lists(st.tuples(st.from_regex(r"[0-9]{6}", fullmatch=True), st.sampled_from(list(Mark)))))
def test_hop_paths_round_trip(entries: list[tuple[str, Mark]]) -> None:
    """Formatting then parsing a hop path gives it back."""
    hops = tuple(Hop(region, mark) for region, mark in entries)
    assert parse_hops(format_hops(hops)) == hops


def test_envelope_round_trips_through_headers() -> None:
    """An envelope rendered as headers parses back equal."""
    assert Envelope.from_headers(ENVELOPE.to_headers()) == ENVELOPE


@pytest.mark.parametrize(
    ("header", "value"),
    [("cx-grade", b"5"), ("cx-grade", b"x"), ("cx-sharing", b"open"), ("cx-created-ms", b"-1"),
     ("cx-source-region", b"4101"), ("cx-id", b""), ("cx-id", "编号".encode()), ("cx-hops", b"410102")],
)  # fmt: skip
def test_each_bad_header_is_named(header: str, value: bytes) -> None:
    """A bad value in any envelope header raises EnvelopeError naming that header."""
    headers = [(k, value if k == header else v) for k, v in ENVELOPE.to_headers()]
    with pytest.raises(EnvelopeError) as caught:
        Envelope.from_headers(headers)
    assert caught.value.header == header


def test_a_missing_header_is_named() -> None:
    """Leaving out cx-resource is reported as missing."""
    headers = [(k, v) for k, v in ENVELOPE.to_headers() if k != "cx-resource"]
    with pytest.raises(EnvelopeError, match="cx-resource: missing"):
        Envelope.from_headers(headers)


def test_envelope_schema_matches_the_headers() -> None:
    """schemas/envelope.avsc names exactly the headers the code reads, in order."""
    schema = json.loads((REPO / "schemas" / "envelope.avsc").read_text(encoding="utf-8"))
    names = ["cx-" + field["name"].replace("_", "-") for field in schema["fields"]]
    assert tuple(names) == ENVELOPE_HEADERS
