"""Region codes (GB/T 2260), their prefixes and containment, and a node's view of the tree."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.core.topology import Topology, contains, is_region_code, region_prefix

codes = st.from_regex(r"[0-9]{6}", fullmatch=True)
"""Any six ASCII digits (not every one is a real division, which the functions must not care about)."""

shaped_codes = st.one_of(
    st.just("000000"),
    st.from_regex(r"[1-9][0-9]0000", fullmatch=True),
    st.from_regex(r"[1-9][0-9]0[1-9]00|[1-9][0-9][1-9][0-9]00", fullmatch=True),
    st.from_regex(r"[1-9][0-9]{3}0[1-9]|[1-9][0-9]{3}[1-9][0-9]", fullmatch=True),
)
"""National, province, city and county codes: the shapes a cascade uses."""


@pytest.mark.parametrize("code", ["410102", "000000", "500000", "659001", "419001"])
def test_six_ascii_digits_are_region_codes(code: str) -> None:
    """National, province, city, county and province-direct county codes are accepted."""
    assert is_region_code(code)


@pytest.mark.parametrize(
    "text",
    ["", "41010", "4101020", "41010x", " 41010", "410102 ", "41-102", "+41010",
     "\uff14\uff11\uff10\uff11\uff10\uff12",  # full-width digits
     "\u0664\u0661\u0660\u0661\u0660\u0662",  # Arabic-Indic digits (str.isdigit says yes)
     "41010\u00b2"],  # superscript two (str.isdigit says yes)
)  # fmt: skip
def test_anything_but_six_ascii_digits_is_not_a_region_code(text: str) -> None:
    """Short, long, lettered, padded and non-ASCII digit strings are refused."""
    assert not is_region_code(text)


@pytest.mark.parametrize(
    ("region", "prefix"),
    [("000000", ""), ("410000", "41"), ("500000", "50"), ("410100", "4101"), ("410102", "410102"),
     ("411000", "4110"), ("410110", "410110"), ("100000", "10"), ("400000", "40"), ("419001", "419001")],
)  # fmt: skip
def test_prefix_strips_trailing_zero_pairs_only(region: str, prefix: str) -> None:
    """Only whole ``00`` pairs are stripped: a single trailing zero belongs to the code."""
    assert region_prefix(region) == prefix


@given(codes)
def test_prefix_pads_back_to_the_code(region: str) -> None:
    """A prefix has even length, does not end in ``00`` and pads back to the code with zeros."""
    prefix = region_prefix(region)
    assert len(prefix) % 2 == 0
    assert not prefix.endswith("00")
    assert prefix.ljust(6, "0") == region


@pytest.mark.parametrize(
    ("ancestor", "region"),
    [("410000", "410102"), ("410000", "410100"), ("410100", "410102"), ("410100", "410110"),
     ("410000", "411000"), ("000000", "500101"), ("000000", "000000"), ("500000", "500101"),
     ("410102", "410102"), ("410000", "419001")],
)  # fmt: skip
def test_a_region_contains_itself_and_what_lies_below(ancestor: str, region: str) -> None:
    """Containment follows the code hierarchy, with the national code containing everything."""
    assert contains(ancestor, region)


@pytest.mark.parametrize(
    ("ancestor", "region"),
    [("410100", "410200"), ("410102", "410100"), ("410100", "410000"), ("410000", "420100"),
     ("410110", "410100"), ("410100", "411000"), ("500000", "000000"), ("410102", "410103")],
)  # fmt: skip
def test_nothing_beside_or_above_is_contained(ancestor: str, region: str) -> None:
    """Siblings, parents and codes that merely share leading digits are not contained."""
    assert not contains(ancestor, region)


@given(codes, codes)
def test_containment_is_antisymmetric(a: str, b: str) -> None:
    """Two codes that contain each other are the same code."""
    if contains(a, b) and contains(b, a):
        assert a == b


@settings(max_examples=100)
@given(codes, codes, codes)
def test_containment_is_transitive(a: str, b: str, c: str) -> None:
    """If a contains b and b contains c then a contains c."""
    if contains(a, b) and contains(b, c):
        assert contains(a, c)


@given(codes)
def test_national_contains_every_code_and_every_code_itself(region: str) -> None:
    """000000 is the ancestor of all, and containment is reflexive."""
    assert contains("000000", region)
    assert contains(region, region)


@given(shaped_codes, shaped_codes)
def test_containment_is_prefix_of_the_code(a: str, b: str) -> None:
    """Region a contains region b exactly when b starts with a's significant prefix."""
    assert contains(a, b) == b.startswith(region_prefix(a))


NATIONAL = Topology("000000", "national", None, ("410000", "500000", "110100"))
"""A national node with a province, a municipality and (level skipped) a city directly below."""
MUNICIPALITY = Topology("500000", "municipality", "000000", ("500101", "500103", "500229"))
"""Chongqing: districts and counties directly under a province-level node (no city level)."""
PROVINCE = Topology("410000", "province", "000000", ("410100", "410200", "419001"))
"""Henan: two cities and a province-direct county-level city (Jiyuan, 419001)."""
CITY = Topology("410100", "city", "410000", ("410102", "410103", "410122"))


def test_topology_contains_its_own_region_and_below() -> None:
    """A node's subtree holds its own region and everything its code contains."""
    assert CITY.contains("410100")
    assert CITY.contains("410199")  # below, whether or not a node serves it
    assert not CITY.contains("410000")
    assert not CITY.contains("410200")
    assert NATIONAL.contains("659001")


@pytest.mark.parametrize(
    ("topology", "region", "child"),
    [(NATIONAL, "500000", "500000"), (NATIONAL, "500101", "500000"), (NATIONAL, "410102", "410000"),
     (NATIONAL, "410000", "410000"), (NATIONAL, "110105", "110100"), (MUNICIPALITY, "500103", "500103"),
     (MUNICIPALITY, "500229", "500229"), (PROVINCE, "419001", "419001"), (PROVINCE, "410122", "410100"),
     (PROVINCE, "410200", "410200"), (CITY, "410102", "410102")],
)  # fmt: skip
def test_child_towards_finds_the_child_on_the_way_at_any_depth(
    topology: Topology, region: str, child: str
) -> None:
    """The child whose subtree holds the region is found, whatever level the child is at."""
    assert topology.child_towards(region) == child


@pytest.mark.parametrize(
    ("topology", "region"),
    [(NATIONAL, "000000"), (NATIONAL, "320100"), (NATIONAL, "110000"), (NATIONAL, "110200"),
     (MUNICIPALITY, "500000"), (MUNICIPALITY, "500105"), (MUNICIPALITY, "500100"),
     (MUNICIPALITY, "410102"), (PROVINCE, "410300"), (PROVINCE, "419002"), (PROVINCE, "000000"),
     (CITY, "410100"), (CITY, "410000"), (CITY, "410201")],
)  # fmt: skip
def test_child_towards_is_none_without_a_child_for_the_region(
    topology: Topology, region: str
) -> None:
    """The node itself, regions above or beside it and unserved regions below have no child."""
    assert topology.child_towards(region) is None


def test_a_node_never_routes_towards_itself_as_its_own_child() -> None:
    """A node wrongly listing itself among its children still finds no child for its own region."""
    odd = Topology("410100", "city", "410000", ("410100", "410102"))
    assert odd.child_towards("410100") is None
    assert odd.child_towards("410102") == "410102"


@settings(max_examples=100)
@given(st.data())
def test_child_towards_returns_a_child_containing_the_region(data: st.DataObject) -> None:
    """Whatever the children, a child returned is one of them, other than the node, containing the region."""
    region = data.draw(shaped_codes)
    prefix = region_prefix(region)
    below = st.from_regex(r"[0-9]{2}([0-9]{2})?", fullmatch=True).map(
        lambda e: (prefix + e)[:6].ljust(6, "0")
    )
    children = tuple(data.draw(st.lists(below, max_size=5, unique=True)))
    topology = Topology(region, "any", None, children)
    target = data.draw(below | shaped_codes)
    child = topology.child_towards(target)
    if child is not None:
        assert child in children
        assert child != region
        assert contains(child, target)
    else:
        assert not any(contains(c, target) and c != region for c in children)


def test_topology_is_a_frozen_value() -> None:
    """Topologies compare and hash by their fields, and cannot be changed."""
    twin = Topology("410100", "city", "410000", ("410102", "410103", "410122"))
    assert twin == CITY
    assert hash(twin) == hash(CITY)
    assert twin != Topology("410100", "city", "410000", ("410102",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        CITY.parent = "000000"  # type: ignore[misc]
