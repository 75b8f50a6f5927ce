"""The routing decision: examples for each case, and properties over random cascades."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from node.core.envelope import Mark, parse_hops
from node.core.outcome import Copy, Delivered, Direction, Outcome, Reason, Refused
from node.core.routing import Arrival, Router
from node.core.topology import Topology, contains

BELOW, ABOVE = Arrival.FROM_BELOW, Arrival.FROM_ABOVE
PROVINCE = Router(Topology("410000", "province", None, ("410100", "410200")))
CITY = Router(Topology("410100", "city", "410000", ("410102", "410103")))
COUNTY = Router(Topology("410102", "county", "410100", ()))


def route(router: Router, target: str, hops: str = "", arrival: Arrival = BELOW) -> Outcome:
    """Route one record given its headers as text."""
    return router.route(target.encode(), hops.encode(), arrival)


def copies(outcome: Outcome) -> list[tuple[Direction, str, str]]:
    """The copies of a Delivered outcome as (direction, region, hops) tuples."""
    assert isinstance(outcome, Delivered), outcome
    return [(c.direction, c.region, c.hops.decode()) for c in outcome.copies]


def reason(outcome: Outcome) -> Reason:
    """The reason of a Refused outcome."""
    assert isinstance(outcome, Refused), outcome
    return outcome.reason


def test_target_outside_the_subtree_goes_up_with_the_hop_recorded() -> None:
    """A county record for the province goes up once, its hop path extended with ``410102^``."""
    assert copies(route(COUNTY, "region:410000")) == [(Direction.UP, "410100", "410102^")]


def test_record_from_a_child_keeps_climbing() -> None:
    """A record handed up by a county climbs on from the city, keeping the earlier hops."""
    got = copies(route(CITY, "region:410000", "410102^"))
    assert got == [(Direction.UP, "410000", "410102^,410100^")]


def test_target_below_goes_down_to_that_child_only() -> None:
    """A record for one county goes down to that county's node and no other."""
    assert copies(route(CITY, "region:410103", "410000v", ABOVE)) == [
        (Direction.DOWN, "410103", "410000v,410100v")
    ]


def test_grandchild_target_goes_to_the_child_on_its_way() -> None:
    """The province hands a county's record to the county's city."""
    assert copies(route(PROVINCE, "region:410103")) == [(Direction.DOWN, "410100", "410000v")]


def test_own_region_is_delivered_locally() -> None:
    """A record for the node's own region is delivered to its inbox."""
    assert copies(route(COUNTY, "region:410102", "410100v", ABOVE)) == [
        (Direction.LOCAL, "410102", "410100v,410102.")
    ]


def test_subtree_target_fans_out_to_self_and_every_child() -> None:
    """A city-subtree record is delivered at the city and sent to each county."""
    got = copies(route(CITY, "subtree:410100", "410000v", ABOVE))
    assert got == [
        (Direction.LOCAL, "410100", "410000v,410100."),
        (Direction.DOWN, "410102", "410000v,410100v"),
        (Direction.DOWN, "410103", "410000v,410100v"),
    ]


def test_broadcast_rooted_above_climbs_then_comes_back_through_the_same_node() -> None:
    """A province-wide broadcast from a county climbs, then may pass the city again going down."""
    assert copies(route(COUNTY, "subtree:410000"))[0][0] is Direction.UP
    assert copies(route(CITY, "subtree:410000", "410102^"))[0][0] is Direction.UP
    down = copies(route(CITY, "subtree:410000", "410102^,410100^,410000v", ABOVE))
    assert [c[1] for c in down] == ["410100", "410102", "410103"]


def test_level_target_stops_at_the_first_node_of_that_level() -> None:
    """``level:city`` from a county is delivered at the city, not sent further up."""
    assert copies(route(COUNTY, "level:city"))[0][0] is Direction.UP
    assert copies(route(CITY, "level:city", "410102^")) == [
        (Direction.LOCAL, "410100", "410102^,410100.")
    ]


def test_level_target_with_no_such_ancestor_is_unroutable_at_the_root() -> None:
    """A level no ancestor has is refused at the root, naming the level."""
    outcome = route(PROVINCE, "level:prefecture", "410102^,410100^")
    assert reason(outcome) is Reason.UNROUTABLE
    assert isinstance(outcome, Refused)
    assert "prefecture" in outcome.message


def test_level_target_coming_down_is_misrouted() -> None:
    """Level targets only travel up; one arriving from above is refused."""
    assert reason(route(CITY, "level:county", "410000v", ABOVE)) is Reason.MISROUTED


def test_target_outside_the_root_is_unroutable() -> None:
    """A target outside the whole cascade is refused at its root."""
    assert reason(route(PROVINCE, "region:320000", "410102^,410100^")) is Reason.UNROUTABLE


def test_unknown_child_region_is_refused() -> None:
    """A region below the city that no configured child serves is refused, not dropped."""
    outcome = route(CITY, "region:410199", "410000v", ABOVE)
    assert reason(outcome) is Reason.UNKNOWN_REGION
    assert isinstance(outcome, Refused)
    assert "410199" in outcome.message


def test_record_from_above_for_elsewhere_is_misrouted() -> None:
    """A record handed down but addressed outside this subtree is refused, never sent back up."""
    assert reason(route(CITY, "region:410200", "410000v", ABOVE)) is Reason.MISROUTED


def test_node_seeing_itself_on_the_up_path_refuses_a_cycle() -> None:
    """A record coming back up to a node it already passed is a cycle."""
    assert reason(route(CITY, "region:410000", "410102^,410100^")) is Reason.CYCLE


def test_sending_up_to_a_node_already_passed_is_a_cycle() -> None:
    """Two nodes naming each other as parent refuse instead of ping-ponging."""
    a = Router(Topology("410102", "county", "410100", ()))
    b = Router(Topology("410100", "city", "410102", ()))
    first = copies(route(a, "region:320000"))
    assert first == [(Direction.UP, "410100", "410102^")]
    assert reason(route(b, "region:320000", first[0][2])) is Reason.CYCLE


def test_coming_down_twice_to_the_same_node_is_a_cycle() -> None:
    """A node that already delivered or handed down a record refuses it when it comes down again."""
    assert reason(route(CITY, "region:410102", "410000v,410100v,410000v", ABOVE)) is Reason.CYCLE


def test_missing_or_malformed_headers_are_bad_envelopes() -> None:
    """No target, a bad target or a bad hop path is refused as ``bad_envelope``."""
    assert reason(CITY.route(None, b"", BELOW)) is Reason.BAD_ENVELOPE
    assert reason(route(CITY, "region:4101")) is Reason.BAD_ENVELOPE
    assert reason(route(CITY, "planet:earth")) is Reason.BAD_ENVELOPE
    assert reason(route(CITY, "region:410000", "410102?")) is Reason.BAD_ENVELOPE
    assert reason(CITY.route(b"region:\xff", b"", BELOW)) is Reason.BAD_ENVELOPE


def test_batch_decisions_match_single_decisions_and_the_memo_stays_bounded() -> None:
    """route_batch gives the same outcomes as route, in order, with a memo that never outgrows its size."""
    router = Router(CITY.topology, memo_size=8)
    keys = [(f"region:4101{i % 20:02d}".encode(), b"410000v") for i in range(100)]
    batch = router.route_batch(keys, ABOVE)
    assert batch == [router.route(t, h, ABOVE) for t, h in keys]
    assert len(router._memo) <= 8  # the bound is the point


# ---- properties over random cascades -------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    """A random cascade: parent of every region (None at the root) and each region's level."""

    parent: dict[str, str | None]
    level: dict[str, str]

    def children(self, region: str) -> tuple[str, ...]:
        """The regions whose parent is ``region``."""
        return tuple(sorted(r for r, p in self.parent.items() if p == region))

    def routers(self) -> dict[str, Router]:
        """One router per region, configured as its node would be."""
        return {
            r: Router(Topology(r, self.level[r], self.parent[r], self.children(r)))
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


@st.composite
def trees(draw: st.DrawFn) -> Tree:
    """National root, then provinces, cities and counties; some provinces are municipalities."""
    parent: dict[str, str | None] = {"000000": None}
    level = {"000000": "national"}
    for p in draw(st.sets(st.integers(11, 65), min_size=1, max_size=3)):
        province = f"{p}0000"
        municipality = draw(st.booleans())
        parent[province], level[province] = "000000", "municipality" if municipality else "province"
        for c in draw(st.sets(st.integers(1, 20), max_size=2)):
            if municipality:  # counties directly below: one level skipped
                county = f"{p}01{c:02d}"
                parent[county], level[county] = province, "county"
                continue
            city = f"{p}{c:02d}00"
            parent[city], level[city] = province, "city"
            for k in draw(st.sets(st.integers(1, 30), max_size=2)):
                county = f"{p}{c:02d}{k:02d}"
                parent[county], level[county] = city, "county"
    return Tree(parent, level)


def simulate(
    routers: dict[str, Router], source: str, target: str, max_steps: int = 200
) -> tuple[list[str], list[Reason], list[tuple[str, Copy]]]:
    """Follow every copy; return (deliveries, refusals, every copy sent with its incoming hops)."""
    queue: list[tuple[str, str, Arrival]] = [(source, "", BELOW)]
    delivered: list[str] = []
    refused: list[Reason] = []
    sent: list[tuple[str, Copy]] = []
    steps = 0
    while queue:
        steps += 1
        assert steps <= max_steps, "routing did not terminate"
        node, hops, arrival = queue.pop()
        if node not in routers:  # a parent or child that runs no node here
            continue
        outcome = routers[node].route(target.encode(), hops.encode(), arrival)
        if isinstance(outcome, Refused):
            refused.append(outcome.reason)
            continue
        for copy in outcome.copies:
            sent.append((hops, copy))
            if copy.direction is Direction.LOCAL:
                delivered.append(node)
            else:
                up = copy.direction is Direction.UP
                queue.append((copy.region, copy.hops.decode(), BELOW if up else ABOVE))
    return delivered, refused, sent


def recipients(tree: Tree, source: str, target: str) -> set[str] | None:
    """Who a target names, or None if nobody in the tree (a refusal is then expected)."""
    kind, value = target.split(":")
    if kind == "region":
        return {value} if value in tree.parent else None
    if kind == "subtree":
        found = {r for r in tree.parent if contains(value, r)}
        return found if value in tree.parent else None
    matches = [r for r in tree.ancestors_or_self(source) if tree.level[r] == value]
    return {matches[0]} if matches else None


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[Tree, str, str]:
    """A random tree, a source region in it and a target (possibly naming nobody)."""
    tree = draw(trees())
    regions = sorted(tree.parent)
    source = draw(st.sampled_from(regions))
    kind = draw(st.sampled_from(["region", "subtree", "level"]))
    if kind == "level":
        value = draw(st.sampled_from(["national", "province", "municipality", "city", "county"]))
    else:
        value = draw(st.sampled_from(regions) | st.sampled_from(["110000", "999900", "110105"]))
    return tree, source, f"{kind}:{value}"


@given(deliveries())
def test_every_recipient_gets_exactly_one_copy_or_the_record_is_refused(
    case: tuple[Tree, str, str],
) -> None:
    """Following every copy through a random cascade reaches exactly the named recipients, once each."""
    tree, source, target = case
    delivered, refused, _ = simulate(tree.routers(), source, target)
    expected = recipients(tree, source, target)
    assert len(delivered) == len(set(delivered)), "a recipient got two copies"
    if expected is None:
        assert not delivered
        assert refused
    else:
        assert set(delivered) == expected
        assert not refused


@given(deliveries())
def test_no_copy_goes_to_a_node_already_on_its_path_in_the_same_phase(
    case: tuple[Tree, str, str],
) -> None:
    """An up copy never goes to a node on the path; a down copy never to one that sent it down."""
    tree, source, target = case
    _, _, sent = simulate(tree.routers(), source, target)
    for incoming, copy in sent:
        path = parse_hops(incoming)
        if copy.direction is Direction.UP:
            assert copy.region not in {hop.region for hop in path}
        elif copy.direction is Direction.DOWN:
            assert copy.region not in {hop.region for hop in path if hop.mark is not Mark.UP}


@given(
    st.dictionaries(
        st.sampled_from(["410000", "410100", "410102", "410103", "420000", "420100"]),
        st.tuples(
            st.sampled_from([None, "410000", "410100", "410102", "410103", "420000", "420100"]),
            st.lists(
                st.sampled_from(["410000", "410100", "410102", "410103", "420100"]),
                max_size=3,
                unique=True,
            ),
        ),
        min_size=1,
    ),
    st.sampled_from(
        [
            "region:410000",
            "region:410103",
            "subtree:410000",
            "subtree:420000",
            "region:110000",
            "level:city",
        ]
    ),
)
def test_any_wiring_however_wrong_terminates(
    wiring: dict[str, tuple[str | None, list[str]]], target: str
) -> None:
    """Even parent/child wiring that is inconsistent or cyclic ends in deliveries or refusals."""
    routers = {
        region: Router(
            Topology(
                region,
                "city",
                parent if parent != region else None,
                tuple(c for c in kids if c != region),
            )
        )
        for region, (parent, kids) in wiring.items()
    }
    for source in routers:
        simulate(routers, source, target, max_steps=10 * len(routers) ** 2 + 20)
