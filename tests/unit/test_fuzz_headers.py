"""Hostile headers: the envelope, the hop path, the routing decision and the quality header.

Every example starts from well-formed structure and breaks one thing (a header replaced by hostile
bytes, dropped, doubled or nulled; a hop path made deep, cyclic or malformed), so the parsers are
reached past their first check. Properties: nothing but the documented refusal escapes, and a
refusal names the header that is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.core.envelope import (
    ENVELOPE_HEADERS,
    HOPS,
    TARGET,
    Envelope,
    Hop,
    Mark,
    Target,
    format_hops,
    parse_hops,
)  # fmt: skip
from node.core.outcome import Delivered, Reason, Refused
from node.core.quality import HEADER_LIMIT, QUALITY_HEADER, Dimension, QualityHeader, Status
from node.core.quality import parse_header as parse_quality_header
from node.core.routing import Arrival, Router
from node.core.topology import Topology
from node.errors import EnvelopeError
from tests.unit.test_envelope import envelopes, region_codes

SCALE = float(os.environ.get("CX_FUZZ_SCALE", "1"))
"""Multiplies every property's example count: ``CX_FUZZ_SCALE=20`` for a long hunt."""


def fuzz(max_examples: int) -> settings:
    """Settings of one property: bounded examples; a slow example (``deadline`` ms) fails."""
    return settings(
        max_examples=max(1, round(max_examples * SCALE)),
        deadline=2000,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


FUZZ = fuzz(200)
"""The default: the whole fuzz suite runs in well under a minute on a slow machine."""
HANG_LIMIT_S = 60
"""A property that runs longer than this fails (a hang), whatever Hypothesis is doing."""
R = TypeVar("R")
E = TypeVar("E", bound=Exception)


def attempt(call: Callable[[], R], refusal: type[E]) -> R | E:
    """Return what ``call`` returns, or the documented ``refusal`` it raised; others propagate."""
    try:
        return call()
    except refusal as error:
        return error


huge_numbers = st.integers(1, 6000).map(lambda n: b"9" * n) | st.sampled_from(
    [b"1" * 4301, b"0" * 5000 + b"1", b"-1", b"+1", b"1_000", b" 1", b"1e3", b"0x10", b"1.5"]
)
"""Digit strings past Python's int conversion limit (4300 digits), and numbers int() half-accepts."""
unicode_digits = st.sampled_from(
    ["\u00b2", "\u0661\u0662", "\uff14\uff11\uff10\uff11\uff10\uff12", "\u2074\u00b9\u2070",
     "\u0664\u0661\u0660\u0661\u0660\u0662", "\U0001d7d2\U0001d7cf\U0001d7ce"]
).map(str.encode)  # fmt: skip
"""Characters ``str.isdigit`` accepts but ``int`` refuses or reads differently."""
hostile_bytes = st.one_of(
    st.binary(max_size=80),
    huge_numbers,
    unicode_digits,
    st.sampled_from([b"", b"\xff\xfe", b"\xc3\x28", b"\x00", b" ", b"\t1", b"region:", b":", b","]),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(65, 5000).map(lambda n: b"A" * n),
)


def _hop_entry(region: str, mark: str) -> str:
    return f"{region}{mark}"


valid_hop_texts = st.lists(
    st.tuples(region_codes, st.sampled_from("^v.")).map(lambda t: _hop_entry(*t)), max_size=300
).map(",".join)
"""Well-formed hop paths, up to 300 hops deep (a real cascade has a handful)."""
cyclic_hop_texts = st.tuples(region_codes, st.sampled_from("^v."), st.integers(2, 2000)).map(
    lambda t: ",".join([_hop_entry(t[0], t[1])] * t[2])
)
"""One node visited again and again."""
broken_hop_texts = st.one_of(
    valid_hop_texts.map(lambda t: t + ","),
    valid_hop_texts.map(lambda t: "," + t),
    valid_hop_texts.map(lambda t: t.replace("^", "^^", 1)),
    valid_hop_texts.map(lambda t: t.replace(",", ", ", 1)),
    valid_hop_texts.map(lambda t: t.replace(",", ",,", 1)),
    st.tuples(region_codes, st.text(max_size=3)).map(lambda t: t[0] + t[1]),
    st.tuples(unicode_digits, st.sampled_from("^v.")).map(lambda t: t[0].decode() + t[1]),
    st.text(alphabet="0123456789^v.,", max_size=60),
    st.text(max_size=30),
)
hop_texts = valid_hop_texts | cyclic_hop_texts | broken_hop_texts


def mutated(
    draw: st.DrawFn, valid: list[tuple[str, bytes]]
) -> tuple[list[tuple[str, Any]], str | None]:
    """``valid`` headers with one thing broken; returns the headers and the header hit (or None)."""
    headers: list[tuple[str, Any]] = list(valid)
    name = draw(st.sampled_from(ENVELOPE_HEADERS))
    hit: str | None = name
    index = next(i for i, (n, _) in enumerate(headers) if n == name)
    how = draw(st.sampled_from(["replace", "drop", "null", "double", "hops", "extra", "shuffle"]))
    if how == "replace":
        headers[index] = (name, draw(hostile_bytes))
    elif how == "drop":
        del headers[index]
    elif how == "null":
        headers[index] = (name, None)
    elif how == "double":
        headers.insert(draw(st.integers(0, len(headers))), (name, draw(hostile_bytes)))
    elif how == "hops":
        hit = HOPS
        headers = [(n, v) for n, v in headers if n != HOPS] + [
            (HOPS, draw(hop_texts).encode("utf-8", "surrogatepass"))
        ]
    elif how == "extra":
        headers.append((draw(st.sampled_from(["cx-unknown", "cx-", "x-cx-id", ""])), b"\xff"))
        hit = headers[-1][0] if headers[-1][0].startswith("cx-") else None
    else:
        headers = draw(st.permutations(headers))
        hit = None
    return headers, hit


@st.composite
def corrupted_headers(draw: st.DrawFn) -> tuple[list[tuple[str, Any]], str | None]:
    """A random valid envelope's headers with one thing broken, and the header hit."""
    return mutated(draw, draw(envelopes).to_headers())


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(corrupted_headers())
def test_a_corrupted_envelope_parses_or_is_refused_naming_the_header(
    case: tuple[list[tuple[str, Any]], str | None],
) -> None:
    """The envelope parses (and then round-trips) or an EnvelopeError names the broken header."""
    headers, hit = case
    envelope = attempt(lambda: Envelope.from_headers(headers), EnvelopeError)
    if isinstance(envelope, EnvelopeError):
        assert str(envelope).startswith(f"header {envelope.header}: ")
        assert len(str(envelope)) > len(f"header {envelope.header}: ")
        assert hit is None or envelope.header == hit, (headers, hit, envelope)
        return
    assert Envelope.from_headers(envelope.to_headers()) == envelope


@pytest.mark.timeout(HANG_LIMIT_S)
@pytest.mark.parametrize("name", ENVELOPE_HEADERS)
@fuzz(40)
@given(data=st.data())
def test_each_envelope_header_replaced_by_hostile_bytes_is_refused_by_name(
    name: str, data: st.DataObject
) -> None:
    """Per header: huge numbers, Unicode digits, non-ASCII, overlong values are refused by name."""
    value = data.draw(hostile_bytes)
    headers = [(n, value if n == name else v) for n, v in data.draw(envelopes).to_headers()]
    envelope = attempt(lambda: Envelope.from_headers(headers), EnvelopeError)
    if isinstance(envelope, EnvelopeError):
        assert envelope.header == name
        assert str(envelope).startswith(f"header {name}: ")
        return
    assert Envelope.from_headers(envelope.to_headers()) == envelope


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(hop_texts)
def test_a_hop_path_parses_and_formats_back_or_is_refused_naming_cx_hops(text: str) -> None:
    """Deep, cyclic or malformed: a hop path is either read exactly or refused as cx-hops."""
    hops = attempt(lambda: parse_hops(text), EnvelopeError)
    if isinstance(hops, EnvelopeError):
        assert hops.header == HOPS
        return
    assert all(isinstance(hop, Hop) and isinstance(hop.mark, Mark) for hop in hops)
    assert format_hops(hops) == text


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(st.text(max_size=80) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_any_target_text_parses_and_round_trips_or_is_refused_naming_cx_target(text: str) -> None:
    """Target.parse reads ``kind:value`` exactly or raises an EnvelopeError naming cx-target."""
    target = attempt(lambda: Target.parse(text), EnvelopeError)
    if isinstance(target, EnvelopeError):
        assert target.header == TARGET
        return
    assert str(target) == text


CITY = Topology("410100", "city", "410000", ("410102", "410103"))
target_bytes = st.one_of(
    st.builds(
        lambda k, r: f"{k}:{r}".encode(), st.sampled_from(["region", "subtree"]), region_codes
    ),
    st.sampled_from([b"level:province", b"level:city", b"level:county", b"level:national"]),
    hostile_bytes,
    st.none(),
)


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(
    target_bytes,
    hop_texts.map(lambda t: t.encode("utf-8", "surrogatepass")) | hostile_bytes | st.none(),
    st.sampled_from(list(Arrival)),
)
def test_routing_any_target_and_hop_path_never_loops_and_refuses_with_a_reason(
    target: bytes | None, hops: bytes | None, arrival: Arrival
) -> None:
    """The router decides every input; a copy never revisits this node; refusals say why."""
    outcome = Router(CITY).route(target, hops, arrival)
    if isinstance(outcome, Refused):
        assert isinstance(outcome.reason, Reason)
        assert outcome.message
        return
    assert isinstance(outcome, Delivered)
    assert outcome.copies
    earlier = parse_hops((hops or b"").decode("ascii"))
    me = CITY.region
    if arrival is Arrival.FROM_BELOW:
        assert all(hop.region != me for hop in earlier)
    else:
        assert all(hop.region != me or hop.mark is Mark.UP for hop in earlier)
    for copy in outcome.copies:
        extended = parse_hops(copy.hops.decode("ascii"))
        assert extended[:-1] == earlier
        assert extended[-1].region == me


marks = st.lists(
    st.tuples(st.sampled_from(list(Dimension)), st.text(min_size=1, max_size=40)), max_size=40
)
rendered_quality = st.builds(
    lambda status, found, omitted: QualityHeader(
        status,
        () if status is Status.PASSED else tuple(found),
        0 if status is Status.PASSED else omitted,
    ).render(),
    st.sampled_from(list(Status)),
    marks,
    st.integers(0, 10**6),
)
quality_bytes = st.one_of(
    rendered_quality,
    rendered_quality.map(lambda h: h + b" +" + b"9" * 600),
    rendered_quality.map(lambda h: h.replace(b" ", b"  ", 1)),
    rendered_quality.map(lambda h: h + b" \xff"),
    rendered_quality.map(lambda h: h + b" +0"),
    st.sampled_from([b"v1", b"v1 pass +1", b"v2 pass", b"v1 flag", b"v1 flag +\xd9\xa1"]),
    st.builds(lambda n: b"v1 flag +" + "²".encode() * n, st.integers(1, 3)),
    hostile_bytes,
)


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(quality_bytes)
def test_a_quality_header_parses_and_renders_back_or_is_refused_as_cx_quality(raw: bytes) -> None:
    """``cx-quality`` is read into a header that renders back to itself, or refused by name."""
    parsed = attempt(lambda: parse_quality_header(raw), EnvelopeError)
    if isinstance(parsed, EnvelopeError):
        assert parsed.header == QUALITY_HEADER
        return
    assert len(raw) <= HEADER_LIMIT
    assert parse_quality_header(parsed.render()) == parsed
