"""The routing decision: an example for every case, and properties over random cascades.

The examples use Henan (410000) with Zhengzhou (410100) and two of its districts, under a national
node that also has Chongqing (500000), a municipality whose districts sit directly below it.
The properties build random trees, run one Router per node and follow every copy a record makes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.core.envelope import Mark, parse_hops
from node.core.outcome import Copy, Delivered, Direction, Outcome, Reason, Refused
from node.core.routing import Arrival, Router
from node.core.topology import Topology, contains

BELOW, ABOVE = Arrival.FROM_BELOW, Arrival.FROM_ABOVE
UP, DOWN, LOCAL = Direction.UP, Direction.DOWN, Direction.LOCAL
NATIONAL = Router(Topology("000000", "national", None, ("410000", "500000")))
PROVINCE = Router(Topology("410000", "province", "000000", ("410100", "410200")))
CITY = Router(Topology("410100", "city", "410000", ("410102", "410103")))
COUNTY = Router(Topology("410102", "county", "410100", ()))
MUNICIPALITY = Router(Topology("500000", "municipality", "000000", ("500101", "500103")))
DISTRICT = Router(Topology("500103", "county", "500000", ()))


def route(router: Router, target: str, hops: str = "", arrival: Arrival = BELOW) -> Outcome:
    """Route one record given its headers as text."""
    return router.route(target.encode(), hops.encode(), arrival)


def copies(outcome: Outcome) -> list[tuple[Direction, str, str]]:
    """The copies of a Delivered outcome as (direction, region, hops) tuples."""
    assert isinstance(outcome, Delivered), outcome
    assert outcome.withheld == ()
    return [(c.direction, c.region, c.hops.decode()) for c in outcome.copies]


def refusal(outcome: Outcome) -> Refused:
    """The outcome, which must be a refusal with a message."""
    assert isinstance(outcome, Refused), outcome
    assert outcome.message
    return outcome


# ---- up ------------------------------------------------------------------------------------


def test_county_publishing_to_the_province_sends_one_copy_up() -> None:
    """A region target outside the county's subtree goes up to its parent once, hops ``410102^``."""
    assert copies(route(COUNTY, "region:410000")) == [(UP, "410100", "410102^")]


def test_record_from_a_child_keeps_climbing_keeping_earlier_hops() -> None:
    """The city hands the county's record on up, appending itself to the hop path."""
    assert copies(route(CITY, "region:410000", "410102^")) == [(UP, "410000", "410102^,410100^")]


def test_record_reaching_its_region_from_below_is_delivered_there() -> None:
    """At the province the province-addressed record is delivered locally, and nowhere else."""
    assert copies(route(PROVINCE, "region:410000", "410102^,410100^")) == [
        (LOCAL, "410000", "410102^,410100^,410000.")
    ]


def test_record_for_a_sibling_province_climbs_to_the_national_node_and_turns() -> None:
    """Henan to a Chongqing district: up to national, then down through the municipality."""
    assert copies(route(PROVINCE, "region:500103", "410100^")) == [
        (UP, "000000", "410100^,410000^")
    ]
    assert copies(route(NATIONAL, "region:500103", "410100^,410000^")) == [
        (DOWN, "500000", "410100^,410000^,000000v")
    ]
    assert copies(route(MUNICIPALITY, "region:500103", "410000^,000000v", ABOVE)) == [
        (DOWN, "500103", "410000^,000000v,500000v")
    ]
    assert copies(route(DISTRICT, "region:500103", "000000v,500000v", ABOVE)) == [
        (LOCAL, "500103", "000000v,500000v,500103.")
    ]


# ---- down ----------------------------------------------------------------------------------


def test_city_routes_a_county_target_to_that_child_only() -> None:
    """A record for one county goes down to that county's node and to no other child."""
    assert copies(route(CITY, "region:410103", "410000v", ABOVE)) == [
        (DOWN, "410103", "410000v,410100v")
    ]


def test_city_publishing_to_its_own_county_sends_it_straight_down() -> None:
    """A record published at the city for one of its counties goes down, not up."""
    assert copies(route(CITY, "region:410102")) == [(DOWN, "410102", "410100v")]


def test_grandchild_target_goes_to_the_child_on_its_way() -> None:
    """The province hands a county's record to the county's city."""
    assert copies(route(PROVINCE, "region:410103")) == [(DOWN, "410100", "410000v")]


def test_national_node_reaches_a_district_of_a_municipality_through_it() -> None:
    """With the province level skipped, the municipality is the child on the way to its district."""
    assert copies(route(NATIONAL, "region:500101")) == [(DOWN, "500000", "000000v")]


def test_own_region_from_above_is_delivered_locally() -> None:
    """A record for the node's own region that came down is delivered to its inbox."""
    assert copies(route(COUNTY, "region:410102", "410100v", ABOVE)) == [
        (LOCAL, "410102", "410100v,410102.")
    ]


def test_own_region_published_here_is_delivered_here() -> None:
    """A record a department addresses to its own platform is delivered locally at once."""
    assert copies(route(CITY, "region:410100")) == [(LOCAL, "410100", "410100.")]


# ---- subtree -------------------------------------------------------------------------------


def test_subtree_target_at_the_city_fans_out_to_self_and_every_child() -> None:
    """A city-subtree record is delivered at the city and sent down once to each county."""
    assert copies(route(CITY, "subtree:410100", "410000v", ABOVE)) == [
        (LOCAL, "410100", "410000v,410100."),
        (DOWN, "410102", "410000v,410100v"),
        (DOWN, "410103", "410000v,410100v"),
    ]


def test_subtree_published_at_its_root_fans_out_there() -> None:
    """A subtree record published at the city itself fans out without going up."""
    assert [(d, r) for d, r, _ in copies(route(CITY, "subtree:410100"))] == [
        (LOCAL, "410100"), (DOWN, "410102"), (DOWN, "410103"),
    ]  # fmt: skip


def test_subtree_target_at_a_leaf_is_delivered_locally_only() -> None:
    """A county inside the subtree, with no children, just delivers."""
    assert copies(route(COUNTY, "subtree:410000", "410000v,410100v", ABOVE)) == [
        (LOCAL, "410102", "410000v,410100v,410102.")
    ]


def test_subtree_below_goes_only_towards_its_root() -> None:
    """A subtree rooted below the node travels down the one branch that holds its root."""
    assert copies(route(PROVINCE, "subtree:410100")) == [(DOWN, "410100", "410000v")]


def test_broadcast_rooted_above_climbs_then_comes_back_down_through_the_same_node() -> None:
    """A province-wide broadcast from a county climbs, and may then pass the city (and itself) going down."""
    assert copies(route(COUNTY, "subtree:410000")) == [(UP, "410100", "410102^")]
    assert copies(route(CITY, "subtree:410000", "410102^")) == [(UP, "410000", "410102^,410100^")]
    assert copies(route(PROVINCE, "subtree:410000", "410102^,410100^")) == [
        (LOCAL, "410000", "410102^,410100^,410000."),
        (DOWN, "410100", "410102^,410100^,410000v"),
        (DOWN, "410200", "410102^,410100^,410000v"),
    ]
    assert copies(route(CITY, "subtree:410000", "410102^,410100^,410000v", ABOVE)) == [
        (LOCAL, "410100", "410102^,410100^,410000v,410100."),
        (DOWN, "410102", "410102^,410100^,410000v,410100v"),
        (DOWN, "410103", "410102^,410100^,410000v,410100v"),
    ]
    assert copies(route(COUNTY, "subtree:410000", "410102^,410100^,410000v,410100v", ABOVE)) == [
        (LOCAL, "410102", "410102^,410100^,410000v,410100v,410102.")
    ]


# ---- level ---------------------------------------------------------------------------------


def test_level_target_stops_at_the_first_node_of_that_level() -> None:
    """``level:city`` from a county goes up once and is delivered at the city, not beyond."""
    assert copies(route(COUNTY, "level:city")) == [(UP, "410100", "410102^")]
    assert copies(route(CITY, "level:city", "410102^")) == [(LOCAL, "410100", "410102^,410100.")]


def test_level_target_of_the_publishing_node_is_delivered_there() -> None:
    """A level target naming the source's own level is delivered at the source (ancestor-or-self)."""
    assert copies(route(COUNTY, "level:county")) == [(LOCAL, "410102", "410102.")]


def test_level_target_skips_nodes_of_other_levels() -> None:
    """``level:national`` climbs past the city and the province."""
    assert copies(route(PROVINCE, "level:national", "410102^,410100^")) == [
        (UP, "000000", "410102^,410100^,410000^")
    ]
    assert copies(route(NATIONAL, "level:national", "410100^,410000^"))[0][:2] == (LOCAL, "000000")


def test_level_target_with_no_such_ancestor_is_unroutable_at_the_root() -> None:
    """A level no ancestor has climbs to the root and is refused there, naming the level."""
    outcome = refusal(route(NATIONAL, "level:prefecture", "410102^,410100^,410000^"))
    assert outcome.reason is Reason.UNROUTABLE
    assert "prefecture" in outcome.message


def test_city_level_from_a_municipality_district_is_unroutable() -> None:
    """Under a municipality there is no city level: the district's ``level:city`` is refused at the root."""
    assert copies(route(MUNICIPALITY, "level:city", "500103^")) == [
        (UP, "000000", "500103^,500000^")
    ]
    assert refusal(route(NATIONAL, "level:city", "500103^,500000^")).reason is Reason.UNROUTABLE


@pytest.mark.parametrize("level", ["county", "city", "province", "410100", "410102"])
def test_level_target_coming_down_is_misrouted(level: str) -> None:
    """Level targets only travel up; one arriving from above is refused, even one named like a region code."""
    assert refusal(route(CITY, f"level:{level}", "410000v", ABOVE)).reason is Reason.MISROUTED


# ---- refusals ------------------------------------------------------------------------------


def test_target_outside_the_root_is_unroutable() -> None:
    """A target outside the whole cascade is refused at its root, naming the root."""
    root = Router(Topology("410000", "province", None, ("410100",)))
    outcome = refusal(route(root, "region:320000", "410102^,410100^"))
    assert outcome.reason is Reason.UNROUTABLE
    assert "410000" in outcome.message


def test_unknown_child_region_is_refused_naming_it() -> None:
    """A region below the city that no configured child serves is refused, not dropped."""
    outcome = refusal(route(CITY, "region:410199", "410000v", ABOVE))
    assert outcome.reason is Reason.UNKNOWN_REGION
    assert "410199" in outcome.message


def test_unknown_region_published_at_the_node_is_refused_at_once() -> None:
    """A county published for an unserved district of the municipality is refused there."""
    assert refusal(route(MUNICIPALITY, "region:500105")).reason is Reason.UNKNOWN_REGION


def test_subtree_rooted_at_a_region_no_node_serves_is_unknown() -> None:
    """The national node has no child for Beijing: a Beijing broadcast is refused, not lost."""
    assert refusal(route(NATIONAL, "subtree:110000")).reason is Reason.UNKNOWN_REGION


@pytest.mark.parametrize(
    "target", ["region:410200", "subtree:410200", "region:410000", "region:500101"]
)
def test_record_from_above_addressed_outside_the_subtree_is_misrouted(target: str) -> None:
    """A record handed down but addressed outside this subtree is refused, never sent back up."""
    outcome = refusal(route(CITY, target, "410000v", ABOVE))
    assert outcome.reason is Reason.MISROUTED
    assert "410100" in outcome.message


# ---- cycles --------------------------------------------------------------------------------


@pytest.mark.parametrize("hops", ["410100^", "410102^,410100^", "410100v", "410102^,410100."])
def test_node_seeing_itself_on_the_path_from_below_refuses_a_cycle(hops: str) -> None:
    """A record coming (back) up to a node already on its path is a cycle, whatever the mark."""
    outcome = refusal(route(CITY, "region:410000", hops))
    assert outcome.reason is Reason.CYCLE
    assert hops in outcome.message


def test_sending_up_to_a_node_already_passed_is_a_cycle() -> None:
    """A parent already on the path is not sent the record again."""
    assert refusal(route(CITY, "region:320000", "410000^")).reason is Reason.CYCLE


def test_two_nodes_naming_each_other_as_parent_end_in_a_cycle() -> None:
    """A's parent is B and B's parent is A: the record goes A to B once, then B refuses ``cycle``."""
    a = Router(Topology("410102", "county", "410100", ()))
    b = Router(Topology("410100", "city", "410102", ()))
    trace = simulate({"410102": a, "410100": b}, "410102", "region:320000")
    assert trace.calls == 2
    assert trace.delivered == []
    assert [(node, r.reason) for node, r in trace.refused] == [("410100", Reason.CYCLE)]


def test_a_node_that_is_its_own_parent_ends_in_a_cycle() -> None:
    """A node wired to itself as parent refuses the record the second time it sees it."""
    loop = Router(Topology("410100", "city", "410100", ()))
    trace = simulate({"410100": loop}, "410100", "region:320000")
    assert trace.calls == 2
    assert [r.reason for _, r in trace.refused] == [Reason.CYCLE]


def test_coming_down_twice_to_the_same_node_is_a_cycle() -> None:
    """A node that already handed down or delivered a record refuses it when it comes down again."""
    assert (
        refusal(route(CITY, "region:410102", "410000v,410100v,410000v", ABOVE)).reason
        is Reason.CYCLE
    )
    assert refusal(route(COUNTY, "region:410102", "410102.,410100v", ABOVE)).reason is Reason.CYCLE


def test_fanning_out_to_a_child_already_passed_down_is_a_cycle() -> None:
    """A city whose child list wrongly holds the province does not send the broadcast back to it."""
    odd = Router(Topology("410100", "city", "410000", ("410102", "410000")))
    assert refusal(route(odd, "subtree:000000", "000000v,410000v", ABOVE)).reason is Reason.CYCLE


# ---- bad envelopes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "hops"),
    [(None, b""), (None, None), (b"", b""), (b"region:4101", b""), (b"planet:earth", b""),
     (b"region:410000", b"410102?"), (b"region:410000", b"410102^,"), (b"region:\xff", b""),
     (b"region:410000", "\u90d1\u5dde^".encode()), (b"level:", b""), (b"region:410000 ", b"")],
)  # fmt: skip
@pytest.mark.parametrize("arrival", list(Arrival))
def test_missing_or_malformed_headers_are_bad_envelopes(
    target: bytes | None, hops: bytes | None, arrival: Arrival
) -> None:
    """No target, a bad target or a bad hop path is refused as ``bad_envelope``, from either side."""
    outcome = refusal(CITY.route(target, hops, arrival))
    assert outcome.reason is Reason.BAD_ENVELOPE


def test_a_missing_hop_header_is_a_fresh_record() -> None:
    """A record without ``cx-hops`` routes as one with an empty hop path."""
    assert CITY.route(b"region:410000", None, BELOW) == CITY.route(b"region:410000", b"", BELOW)


# ---- batches and the memo ------------------------------------------------------------------


def test_batch_gives_one_outcome_per_record_in_order() -> None:
    """route_batch returns exactly the outcomes route gives, one per key, in order."""
    keys = [
        (b"region:410000", b""),
        (None, b""),
        (b"subtree:410100", b"410000v"),
        (b"level:city", b""),
    ]
    batch = CITY.route_batch(keys, BELOW)
    assert len(batch) == len(keys)
    assert batch == [CITY.route(t, h, BELOW) for t, h in keys]


def test_empty_batch_gives_no_outcomes() -> None:
    """An empty batch is decided as an empty list."""
    assert Router(CITY.topology).route_batch([], BELOW) == []


def test_memo_returns_equal_outcomes_for_equal_headers() -> None:
    """A repeated key is decided once: later records get an equal (indeed the same) outcome."""
    router = Router(CITY.topology)
    first, second = router.route_batch([(b"region:410103", b"410000v")] * 2, ABOVE)
    assert first == second == router.route(b"region:410103", b"410000v", ABOVE)
    assert first is second
    assert router.route_batch([(b"region:410103", b"410000v")], ABOVE) == [first]


def test_memo_tells_the_arrival_sides_apart() -> None:
    """The same headers arriving from below and from above are decided separately."""
    router = Router(CITY.topology)
    key = [(b"level:city", b"")]
    below, above = router.route_batch(key, BELOW), router.route_batch(key, ABOVE)
    assert isinstance(below[0], Delivered)
    assert refusal(above[0]).reason is Reason.MISROUTED


@pytest.mark.parametrize("size", [1, 8, 64])
def test_memo_stays_bounded_and_correct(size: int) -> None:
    """However many distinct keys pass, the memo never exceeds its size and answers stay right."""
    router = Router(CITY.topology, memo_size=size)
    keys = [(f"region:4101{i % 100:02d}".encode(), b"410000v") for i in range(500)]
    for start in range(0, len(keys), 37):
        chunk = keys[start : start + 37]
        assert router.route_batch(chunk, ABOVE) == [router.route(t, h, ABOVE) for t, h in chunk]
        assert len(router._memo) <= size  # the bound is the point


@settings(max_examples=100)
@given(
    st.lists(
        st.tuples(
            st.none()
            | st.binary(max_size=20)
            | st.sampled_from(
                [b"region:410102", b"subtree:410000", b"level:city", b"region:320000"]
            ),
            st.none()
            | st.binary(max_size=20)
            | st.sampled_from([b"", b"410000v", b"410102^", b"410100^"]),
        ),
        max_size=30,
    ),
    st.sampled_from(list(Arrival)),
)
def test_any_headers_get_exactly_one_outcome_each(
    keys: list[tuple[bytes | None, bytes | None]], arrival: Arrival
) -> None:
    """Whatever the header bytes, each record gets one Delivered (with copies) or Refused (with a reason)."""
    router = Router(CITY.topology, memo_size=4)
    outcomes = router.route_batch(keys, arrival)
    assert len(outcomes) == len(keys)
    for outcome in outcomes:
        if isinstance(outcome, Delivered):
            assert outcome.copies
        else:
            assert isinstance(outcome, Refused)
            assert outcome.reason in Reason
            assert outcome.message


# ---- the simulation ------------------------------------------------------------------------


@dataclass
class Trace:
    """What happened to one record in a simulated cascade."""

    delivered: list[str] = field(default_factory=list)
    refused: list[tuple[str, Refused]] = field(default_factory=list)
    sent: list[tuple[str, str, Copy]] = field(default_factory=list)
    """Every copy made, with the node that made it and the hop path it arrived with."""
    calls: int = 0


def simulate(routers: dict[str, Router], source: str, target: str, max_calls: int = 5000) -> Trace:
    """Publish ``target`` at ``source`` and follow every copy through the nodes' routers.

    UP goes to the parent's router from below, DOWN to the child's router from above, LOCAL is a
    delivery; a copy for a region that runs no node is lost (only misconfigured wirings do that).
    """
    trace = Trace()
    pending: list[tuple[str, bytes, Arrival]] = [(source, b"", BELOW)]
    while pending:
        trace.calls += 1
        assert trace.calls <= max_calls, "routing did not terminate"
        node, hops, arrival = pending.pop()
        if node not in routers:
            continue
        router = routers[node]
        outcomes = router.route_batch([(target.encode(), hops)], arrival)
        assert len(outcomes) == 1, "one outcome per record"
        (outcome,) = outcomes
        assert outcome == router.route(target.encode(), hops, arrival)  # the memo changes nothing
        if isinstance(outcome, Refused):
            trace.refused.append((node, outcome))
            continue
        assert outcome.copies, "a delivery has at least one copy"
        for copy in outcome.copies:
            check_copy(router.topology, hops, copy)
            trace.sent.append((node, hops.decode(), copy))
            if copy.direction is LOCAL:
                trace.delivered.append(node)
            else:
                pending.append((copy.region, copy.hops, BELOW if copy.direction is UP else ABOVE))
    return trace


def check_copy(topology: Topology, incoming: bytes, copy: Copy) -> None:
    """A copy goes where its direction says, extends the hop path by one entry and keeps it loop-free."""
    me = topology.region
    mark = {UP: Mark.UP, DOWN: Mark.DOWN, LOCAL: Mark.DELIVERED}[copy.direction]
    entry = f"{me}{mark.value}".encode()
    assert copy.hops == (incoming + b"," + entry if incoming else entry)
    if copy.direction is UP:
        assert copy.region == topology.parent
    elif copy.direction is DOWN:
        assert copy.region in topology.children
    else:
        assert copy.region == me
    check_path(copy.hops.decode())


def check_path(text: str) -> None:
    """Marks run ``^``* then ``v``* then at most one final ``.``; no region twice in either phase."""
    hops = parse_hops(text)
    marks = "".join(hop.mark.value for hop in hops)
    assert marks.lstrip("^").lstrip("v") in ("", "."), f"phases out of order: {text}"
    up = [hop.region for hop in hops if hop.mark is Mark.UP]
    down = [hop.region for hop in hops if hop.mark is not Mark.UP]
    assert len(up) == len(set(up)), f"a node sent it up twice: {text}"
    assert len(down) == len(set(down)), f"a node handled it twice going down: {text}"


# ---- properties over random valid cascades -------------------------------------------------

MUNICIPALITIES = {"11", "12", "31", "50"}
LEVELS = ["national", "province", "municipality", "city", "county", "township"]


@dataclass(frozen=True)
class Cascade:
    """A valid cascade: every region's parent (None at the root) and level."""

    parent: dict[str, str | None]
    level: dict[str, str]

    @property
    def root(self) -> str:
        """The one region without a parent."""
        (root,) = (r for r, p in self.parent.items() if p is None)
        return root

    def children(self, region: str) -> tuple[str, ...]:
        """The regions whose parent is ``region``."""
        return tuple(sorted(r for r, p in self.parent.items() if p == region))

    def routers(self, memo_size: int = 4096) -> dict[str, Router]:
        """One router per node, configured as that node would be."""
        return {
            r: Router(Topology(r, self.level[r], self.parent[r], self.children(r)), memo_size)
            for r in self.parent
        }

    def ancestors_or_self(self, region: str) -> list[str]:
        """The region and its ancestors, nearest first."""
        chain: list[str] = []
        current: str | None = region
        while current is not None:
            chain.append(current)
            current = self.parent[current]
        return chain


def shape_level(code: str) -> str:
    """The level a code's shape names (provinces that are municipalities get their own name)."""
    if code == "000000":
        return "national"
    if code.endswith("0000"):
        return "municipality" if code[:2] in MUNICIPALITIES else "province"
    return "city" if code.endswith("00") else "county"


@st.composite
def cascades(draw: st.DrawFn) -> Cascade:
    """A random valid tree under a random root, of depth one to four, with levels skipped anywhere.

    Codes are drawn national → provinces ``XX0000`` → cities ``XXYY00`` → counties ``XXYYZZ``;
    any code may be left out, and a node then hangs from its nearest present ancestor (a
    municipality's districts under the province-level node, a province-direct county, even a
    city straight under the national node). The root is national or, for a smaller cascade, a
    province, city or county.
    """
    codes: set[str] = set()
    for province in draw(
        st.sets(st.sampled_from(["11", "41", "42", "50", "65"]), min_size=1, max_size=3)
    ):
        if draw(st.integers(0, 4)):  # usually present
            codes.add(f"{province}0000")
        for city in draw(st.sets(st.sampled_from(["01", "02", "90"]), max_size=2)):
            if draw(st.booleans()):
                codes.add(f"{province}{city}00")
            codes.update(
                f"{province}{city}{county}"
                for county in draw(st.sets(st.sampled_from(["01", "02", "03"]), max_size=3))
            )
    # Mostly national; sometimes a smaller cascade under a province or city; rarely a lone county.
    roots = sorted(code for code in codes if code.endswith("00"))
    counties = sorted(code for code in codes if not code.endswith("00"))
    root = draw(st.sampled_from(["000000"] * 6 + roots + counties[:1]))
    members = {code for code in codes if contains(root, code)} | {root}
    parent: dict[str, str | None] = {}
    for code in members:
        ancestors = [
            a
            for a in (f"{code[:4]}00", f"{code[:2]}0000", "000000")
            if a != code and a in members and contains(a, code)
        ]
        parent[code] = ancestors[0] if code != root else None
    return Cascade(parent, {code: shape_level(code) for code in members})


@dataclass(frozen=True)
class Case:
    """A cascade, where a record is published and what it is addressed to."""

    cascade: Cascade
    source: str
    target: str
    memo_size: int


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A random cascade, a source node in it and a target that may or may not name anyone."""
    cascade = draw(cascades())
    regions = sorted(cascade.parent)
    leaves = [r for r in regions if not cascade.children(r)]
    source = draw(st.sampled_from(leaves) | st.sampled_from(regions))  # counties publish most
    kind = draw(st.sampled_from(["region", "subtree", "level"]))
    if kind == "level":
        value = draw(st.sampled_from(LEVELS))
    else:
        near = sorted({a for r in regions for a in (r, f"{r[:4]}00", f"{r[:2]}0000", "000000")})
        outside = ["320000", "419999", "650101", "110200"]  # beyond the root or served by nobody
        value = draw(st.sampled_from(regions) | st.sampled_from(near) | st.sampled_from(outside))
    return Case(cascade, source, f"{kind}:{value}", draw(st.sampled_from([1, 3, 4096])))


def recipients(cascade: Cascade, source: str, target: str) -> set[str]:
    """Who a target names in this cascade (empty if nobody)."""
    kind, value = target.split(":")
    if kind == "region":
        return {value} & set(cascade.parent)
    if kind == "subtree":
        return {r for r in cascade.parent if contains(value, r)}
    matches = [r for r in cascade.ancestors_or_self(source) if cascade.level[r] == value]
    return set(matches[:1])  # the first ancestor-or-self of that level


def expected_refusal(case: Case) -> Reason | None:
    """The one refusal a record must meet in a valid cascade, or None if it must get through.

    A level target is unroutable when no ancestor-or-self has the level. A region or subtree
    target must name a node: if none serves it the record is unroutable when it lies outside the
    root, else refused as an unknown region by the lowest node above it (a subtree rooted at a
    region without a node is refused so too, even when nodes below that region exist).
    """
    kind, value = case.target.split(":")
    cascade = case.cascade
    if kind == "level":
        matches = recipients(cascade, case.source, case.target)
        return None if matches else Reason.UNROUTABLE
    if value in cascade.parent:
        return None
    return Reason.UNKNOWN_REGION if contains(cascade.root, value) else Reason.UNROUTABLE


@settings(max_examples=300)
@given(cases())
def test_records_reach_exactly_their_recipients_once_or_are_refused_with_a_reason(
    case: Case,
) -> None:
    """Following every copy through a valid cascade reaches exactly the named recipients, once each, in a short walk."""
    trace = simulate(case.cascade.routers(case.memo_size), case.source, case.target)
    # At most one router call per node going up and one going down.
    assert trace.calls <= 2 * len(case.cascade.parent)
    visits = Counter(copy.region for _, _, copy in trace.sent if copy.direction is not LOCAL)
    assert all(n <= 2 for n in visits.values())
    counts = Counter(trace.delivered)
    assert all(n == 1 for n in counts.values()), f"delivered twice: {counts}"
    reason = expected_refusal(case)
    if reason is None:
        assert trace.refused == []
        assert set(counts) == recipients(case.cascade, case.source, case.target)
    else:
        assert trace.delivered == []
        assert [r.reason for _, r in trace.refused] == [reason]


@settings(max_examples=150)
@given(cases())
def test_no_copy_goes_to_a_node_already_on_its_path_in_the_same_phase(case: Case) -> None:
    """An up copy never goes to a node already on the path; a down copy never to one that handled it going down."""
    trace = simulate(case.cascade.routers(case.memo_size), case.source, case.target)
    for _, incoming, copy in trace.sent:
        path = parse_hops(incoming)
        if copy.direction is UP:
            assert copy.region not in {hop.region for hop in path}
        elif copy.direction is DOWN:
            assert copy.region not in {hop.region for hop in path if hop.mark is not Mark.UP}


# ---- properties over any wiring, however wrong ---------------------------------------------

POOL = ["000000", "410000", "410100", "410102", "410103", "420000", "420100", "500000"]


@st.composite
def wirings(draw: st.DrawFn) -> dict[str, Router]:
    """Nodes from a small pool with arbitrary parents and children: cycles, self-loops, strangers."""
    nodes = draw(st.sets(st.sampled_from(POOL), min_size=1, max_size=len(POOL)))
    routers: dict[str, Router] = {}
    for region in sorted(nodes):
        parent = draw(st.none() | st.sampled_from(POOL))
        children = tuple(draw(st.lists(st.sampled_from(POOL), max_size=4, unique=True)))
        level = draw(st.sampled_from(LEVELS))
        routers[region] = Router(
            Topology(region, level, parent, children), draw(st.sampled_from([1, 4096]))
        )
    return routers


@settings(max_examples=200)
@given(
    wirings(),
    st.data(),
    st.sampled_from(
        ["region:410000", "region:410103", "region:500000", "subtree:000000", "subtree:410000",
         "subtree:420000", "region:110000", "level:city", "level:national", "subtree:410100"]
    ),
)  # fmt: skip
def test_any_wiring_however_wrong_terminates(
    routers: dict[str, Router], data: st.DataObject, target: str
) -> None:
    """Even cyclic or inconsistent parent/child wiring ends in deliveries and refusals, with short hop paths."""
    source = data.draw(st.sampled_from(sorted(routers)))
    trace = simulate(routers, source, target, max_calls=5000)
    for _, _, copy in trace.sent:
        # Each node appears at most once per phase, so a path is at most two entries per region:
        # this is why the record cannot circulate for ever.
        assert len(parse_hops(copy.hops.decode())) <= 2 * len(POOL)
    assert (
        trace.delivered
        or trace.refused
        or any(copy.region not in routers for _, _, copy in trace.sent)
    )
