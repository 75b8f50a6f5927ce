"""Targets, hop paths and the envelope headers: parsing, rendering and every way they can be wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.core.envelope import (
    CREATED_MS,
    ENVELOPE_HEADERS,
    GRADE,
    HOPS,
    RECORD_ID,
    RESOURCE,
    SHARING,
    SOURCE_DEPT,
    SOURCE_REGION,
    TARGET,
    Envelope,
    Hop,
    Mark,
    Sharing,
    Target,
    TargetKind,
    format_hops,
    header_texts,
    parse_hops,
)  # fmt: skip
from node.errors import EnvelopeError, NodeError

REPO = Path(__file__).resolve().parents[2]
ENVELOPE = Envelope(
    record_id="5f0c1c2e-0000-4000-8000-000000000001", resource="410102-PSB-00001",
    source_region="410102", source_dept="PSB", target=Target(TargetKind.SUBTREE, "410100"),
    grade=3, sharing=Sharing.CONDITIONAL, created_ms=1_790_000_000_000,
    hops=(Hop("410102", Mark.UP), Hop("410100", Mark.DOWN)),
)  # fmt: skip

region_codes = st.from_regex(r"[0-9]{6}", fullmatch=True)
tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)
"""Values the token headers accept: 1-64 printable ASCII characters, no space."""
targets = st.builds(
    Target, st.sampled_from([TargetKind.REGION, TargetKind.SUBTREE]), region_codes
) | st.builds(Target, st.just(TargetKind.LEVEL), tokens)
hop_paths = st.lists(st.builds(Hop, region_codes, st.sampled_from(list(Mark))), max_size=8).map(
    tuple
)
envelopes = st.builds(
    Envelope,
    record_id=tokens, resource=tokens, source_region=region_codes, source_dept=tokens,
    target=targets, grade=st.integers(1, 4), sharing=st.sampled_from(list(Sharing)),
    created_ms=st.integers(0, 2**63 - 1), hops=hop_paths,
)  # fmt: skip


# ---- targets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [("region:410102", TargetKind.REGION, "410102"), ("subtree:000000", TargetKind.SUBTREE, "000000"),
     ("level:province", TargetKind.LEVEL, "province"), ("level:a:b", TargetKind.LEVEL, "a:b")],
)  # fmt: skip
def test_good_targets_parse(text: str, kind: TargetKind, value: str) -> None:
    """Each kind of target parses into its kind and value (a level name may itself hold a colon)."""
    assert Target.parse(text) == Target(kind, value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [("410102", "KIND:VALUE"), ("", "KIND:VALUE"), ("planet:earth", "unknown kind"),
     ("Region:410102", "unknown kind"), (":410102", "unknown kind"), ("region:41", "six-digit"),
     ("region:4101020", "six-digit"), ("region:", "six-digit"), ("subtree:abcdef", "six-digit"),
     ("region: 410102", "six-digit"), ("region:410102:x", "six-digit"),
     ("subtree:\uff14\uff11\uff10\uff11\uff10\uff12", "six-digit"), ("level:", "level name"),
     ("level:city hall", "level name"), ("level:" + "x" * 65, "level name"), ("level:\u5e02", "level name")],
)  # fmt: skip
def test_bad_targets_raise_envelope_errors_naming_cx_target(text: str, needle: str) -> None:
    """Each malformed target raises EnvelopeError naming ``cx-target`` and the problem."""
    with pytest.raises(EnvelopeError, match=needle) as caught:
        Target.parse(text)
    assert caught.value.header == TARGET
    assert str(caught.value).startswith("header cx-target: ")


@given(targets)
def test_targets_round_trip_through_text(target: Target) -> None:
    """str(target) parses back to an equal target."""
    assert Target.parse(str(target)) == target


def test_envelope_errors_are_node_errors_and_not_retriable() -> None:
    """A bad envelope is refused, never retried."""
    error = EnvelopeError(TARGET, "missing")
    assert isinstance(error, NodeError)
    assert error.retriable is False


# ---- hop paths -----------------------------------------------------------------------------


def test_an_empty_hop_path_is_a_fresh_record() -> None:
    """No hops parse from the empty header and format back to it."""
    assert parse_hops("") == ()
    assert format_hops(()) == ""


def test_hop_paths_parse_in_order() -> None:
    """Each comma-separated entry becomes a hop with its region and mark, in order."""
    assert parse_hops("410102^,410100^,410000v,410100.") == (
        Hop("410102", Mark.UP), Hop("410100", Mark.UP), Hop("410000", Mark.DOWN),
        Hop("410100", Mark.DELIVERED),
    )  # fmt: skip
    assert format_hops([Hop("410102", Mark.UP), Hop("410100", Mark.DELIVERED)]) == "410102^,410100."


@pytest.mark.parametrize(
    "text",
    ["410102", "410102x", "41010^", "4101020^", ",", "410102^,", ",410102^", "410102^,,410100^",
     " 410102^", "410102^ ", "410102^;410100^", "410102^^", "^410102", "abcdef^", "410102v.",
     "\uff14\uff11\uff10\uff11\uff10\uff12^"],
)  # fmt: skip
def test_malformed_hop_paths_raise_envelope_errors_naming_cx_hops(text: str) -> None:
    """Missing marks, bad regions, stray commas and blanks are refused, naming ``cx-hops``."""
    with pytest.raises(EnvelopeError) as caught:
        parse_hops(text)
    assert caught.value.header == HOPS


@settings(max_examples=100)
@given(hop_paths)
def test_hop_paths_round_trip(hops: tuple[Hop, ...]) -> None:
    """Formatting then parsing a hop path gives it back."""
    assert parse_hops(format_hops(hops)) == hops


@settings(max_examples=100)
@given(st.text(st.sampled_from("0123456789^v.,x "), max_size=30) | hop_paths.map(format_hops))
def test_hop_parsing_accepts_exactly_the_hop_grammar(text: str) -> None:
    """Text of comma-separated ``REGION`` + mark entries parses and formats back; anything else names cx-hops."""
    if text == "" or all(re.fullmatch(r"[0-9]{6}[\^v.]", entry) for entry in text.split(",")):
        assert format_hops(parse_hops(text)) == text
    else:
        with pytest.raises(EnvelopeError) as caught:
            parse_hops(text)
        assert caught.value.header == HOPS


# ---- envelope headers ----------------------------------------------------------------------


def test_headers_are_the_envelope_fields_in_order_as_ascii() -> None:
    """to_headers renders one ASCII header per field, in ENVELOPE_HEADERS order."""
    assert ENVELOPE.to_headers() == [
        (RECORD_ID, b"5f0c1c2e-0000-4000-8000-000000000001"), (RESOURCE, b"410102-PSB-00001"),
        (SOURCE_REGION, b"410102"), (SOURCE_DEPT, b"PSB"), (TARGET, b"subtree:410100"),
        (GRADE, b"3"), (SHARING, b"conditional"), (CREATED_MS, b"1790000000000"),
        (HOPS, b"410102^,410100v"),
    ]  # fmt: skip


def test_envelope_round_trips_through_headers() -> None:
    """An envelope rendered as headers parses back equal."""
    assert Envelope.from_headers(ENVELOPE.to_headers()) == ENVELOPE


@settings(max_examples=100)
@given(envelopes)
def test_any_valid_envelope_round_trips_through_headers(envelope: Envelope) -> None:
    """For any valid field values, from_headers(to_headers(e)) == e."""
    assert Envelope.from_headers(envelope.to_headers()) == envelope


def test_a_freshly_published_record_carries_an_empty_hop_header() -> None:
    """An empty ``cx-hops`` is a fresh record; a missing one is a bad envelope like any other."""
    fresh = [(k, b"" if k == HOPS else v) for k, v in ENVELOPE.to_headers()]
    assert Envelope.from_headers(fresh).hops == ()
    with pytest.raises(EnvelopeError) as caught:
        Envelope.from_headers([(k, v) for k, v in fresh if k != HOPS])
    assert (caught.value.header, str(caught.value)) == (HOPS, "header cx-hops: missing")


def test_other_headers_are_ignored_and_the_last_value_wins() -> None:
    """Non-envelope headers do not matter; a repeated envelope header counts with its last value."""
    headers = [
        ("traceparent", "\u2603".encode()),
        *ENVELOPE.to_headers(),
        (GRADE, b"1"),
        ("x", b"\xff"),
    ]
    envelope = Envelope.from_headers(headers)
    assert envelope.grade == 1
    assert envelope.record_id == ENVELOPE.record_id


def with_header(name: str, value: Any) -> list[tuple[str, Any]]:
    """ENVELOPE's headers with header ``name`` set to ``value``."""
    return [(k, value if k == name else v) for k, v in ENVELOPE.to_headers()]


@pytest.mark.parametrize(
    ("header", "value"),
    [(RECORD_ID, b""), (RECORD_ID, b"a b"), (RECORD_ID, b"x" * 65), (RECORD_ID, "\u7f16\u53f7".encode()),
     (RESOURCE, b""), (RESOURCE, b"RES\t1"), (SOURCE_REGION, b"4101"), (SOURCE_REGION, b"41010x"),
     (SOURCE_DEPT, b""), (SOURCE_DEPT, b"P S B"), (TARGET, b"region:4101"), (TARGET, b"elsewhere"),
     (GRADE, b"0"), (GRADE, b"5"), (GRADE, b"x"), (GRADE, b"-1"), (GRADE, b" 3"), (GRADE, b""),
     (SHARING, b"open"), (SHARING, b"Unconditional"), (SHARING, b""), (CREATED_MS, b"-1"),
     (CREATED_MS, b"1.5"), (CREATED_MS, b""), (CREATED_MS, b"1e9"), (HOPS, b"410102"),
     (HOPS, b"410102^,"), (HOPS, "\u90d1\u5dde^".encode()), (SOURCE_REGION, b"\xff\xfe")],
)  # fmt: skip
def test_each_bad_header_is_named(header: str, value: bytes) -> None:
    """A bad value in any envelope header raises EnvelopeError naming that header."""
    with pytest.raises(EnvelopeError) as caught:
        Envelope.from_headers(with_header(header, value))
    assert caught.value.header == header
    assert header in str(caught.value)


@pytest.mark.parametrize("header", [h for h in ENVELOPE_HEADERS if h != HOPS])
def test_each_missing_header_is_named(header: str) -> None:
    """Leaving out any required envelope header is reported as that header missing."""
    headers = [(k, v) for k, v in ENVELOPE.to_headers() if k != header]
    with pytest.raises(EnvelopeError, match=f"header {header}: missing") as caught:
        Envelope.from_headers(headers)
    assert caught.value.header == header


def _answer(headers: list[tuple[str, Any]], parse: Any) -> object:
    """What ``parse`` makes of ``headers``: the envelope, or the header and message it refuses."""
    try:
        return parse(headers)
    except EnvelopeError as error:
        return error.header, str(error)


@settings(max_examples=300)
@given(
    envelopes,
    st.sampled_from(ENVELOPE_HEADERS),
    st.none() | st.binary(max_size=12) | tokens.map(str.encode),
)
def test_checks_kept_per_kind_answer_as_the_full_parse_does(
    envelope: Envelope, header: str, value: bytes | None
) -> None:
    """Checks kept per kind of envelope give what the full parse gives, whatever one header says.

    The same envelope or the same first error, before and after what the change kept.
    """
    Envelope.from_headers(envelope.to_headers())  # what its kind shares is kept now
    changed = with_header_of(envelope, header, value)
    full = _answer(changed, lambda h: Envelope._parsed(header_texts(h)))
    assert _answer(changed, Envelope.from_headers) == full
    assert _answer(changed, Envelope.from_headers) == full  # and again, whatever it kept


def with_header_of(envelope: Envelope, name: str, value: Any) -> list[tuple[str, Any]]:
    """``envelope``'s headers with header ``name`` set to ``value``."""
    return [(k, value if k == name else v) for k, v in envelope.to_headers()]


def test_a_null_header_value_is_named_not_crashed_on() -> None:
    """A header whose value is null (Kafka allows it) is an EnvelopeError for that header."""
    with pytest.raises(EnvelopeError) as caught:
        Envelope.from_headers(with_header(SHARING, None))
    assert caught.value.header == SHARING


def test_header_texts_keeps_only_envelope_namespace() -> None:
    """header_texts decodes the ``cx-`` headers and leaves the others alone."""
    assert header_texts([("cx-grade", b"2"), ("other", b"\xff"), ("cx-id", b"a")]) == {
        "cx-grade": "2", "cx-id": "a",
    }  # fmt: skip


def test_envelope_schema_matches_the_headers() -> None:
    """schemas/envelope.avsc names exactly the headers the code reads, in order (``x_y`` is ``cx-x-y``)."""
    schema = json.loads((REPO / "schemas" / "envelope.avsc").read_text(encoding="utf-8"))
    names = ["cx-" + field["name"].replace("_", "-") for field in schema["fields"]]
    assert tuple(names) == ENVELOPE_HEADERS
    assert all(field["type"] == "string" for field in schema["fields"])  # headers are text
