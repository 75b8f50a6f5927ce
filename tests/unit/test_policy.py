"""The sharing rules: one outcome per record, refusals with reasons, copies withheld by grade."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.core.catalog import Catalog, InformationItem, Openness, Resource, UpdateCycle
from node.core.envelope import Sharing
from node.core.outcome import Copy, Delivered, Direction, Outcome, Reason, Refused
from node.core.policy import Clearance, NegativeList, Policy, PolicyKey, PolicySnapshot


def resource(code: str, sharing: Sharing = Sharing.UNCONDITIONAL, grade: int = 2) -> Resource:
    """A catalog entry whose source is PSB at 410102."""
    return Resource(
        code=code, name=code, schema="cn.gov.exchange.population.Person", source_dept="PSB",
        source_region="410102", sharing=sharing, legal_basis="个人信息保护法" if sharing is Sharing.NOT_SHARED else "",
        openness=Openness.CLOSED, grade=grade, update_cycle=UpdateCycle.DAILY,
        items=(InformationItem("id_number", "string", True),),
    )  # fmt: skip


CATALOG = Catalog(
    {
        "OPEN": resource("OPEN"),
        "SECRET": resource("SECRET", Sharing.NOT_SHARED),
        "ASK": resource("ASK", Sharing.CONDITIONAL),
        "HIGH": resource("HIGH", grade=4),
        "BANNED": resource("BANNED"),
    }
)
UP = Copy(Direction.UP, "410100", b"410102^")
LOCAL = Copy(Direction.LOCAL, "410102", b"410102.")
DOWN_A = Copy(Direction.DOWN, "410105", b"410102v")
DOWN_B = Copy(Direction.DOWN, "410106", b"410102v")
POLICY = Policy(
    PolicySnapshot(
        CATALOG,
        NegativeList(resources=frozenset({"BANNED"}), departments=frozenset({"TAX"})),
        Clearance(parent=4, children=3, local=4, child={"410106": 2}),
    )
)


def key(
    resource: str, region: str = "410102", dept: str = "PSB", grade: str = "2"
) -> tuple[bytes, ...]:
    """The policy headers of a record."""
    return (resource.encode(), region.encode(), dept.encode(), grade.encode())


def decide(k: tuple[bytes, ...], *copies: Copy) -> Outcome:
    """Apply the test policy to a record routed as ``copies``."""
    return POLICY.apply(k, Delivered(copies))  # type: ignore[arg-type]


def refused(outcome: Outcome) -> Reason:
    """The reason of a refusal."""
    assert isinstance(outcome, Refused), outcome
    return outcome.reason


def test_an_unconditional_record_from_its_source_passes_unchanged() -> None:
    """The routed outcome comes back as it was."""
    routed = Delivered((UP,))
    assert POLICY.apply(key("OPEN"), routed) is routed  # type: ignore[arg-type]


def test_unknown_resources_are_refused() -> None:
    """A code the catalog does not have is refused as ``unknown_resource``."""
    assert refused(decide(key("NOPE"), UP)) is Reason.UNKNOWN_RESOURCE


def test_not_shared_never_leaves_the_node_even_locally() -> None:
    """A not-shared resource is refused whatever the destination, citing its legal basis."""
    for copy in (UP, LOCAL, DOWN_A):
        outcome = decide(key("SECRET"), copy)
        assert refused(outcome) is Reason.NOT_SHARED
        assert isinstance(outcome, Refused)
        assert "个人信息保护法" in outcome.message


def test_negative_list_refuses_resources_and_source_departments() -> None:
    """A listed resource, or any record of a listed source department, is refused."""
    assert refused(decide(key("BANNED"), UP)) is Reason.NEGATIVE_LIST
    assert refused(decide(key("OPEN", dept="TAX"), UP)) is Reason.NEGATIVE_LIST


def test_only_the_authoritative_source_may_publish_a_resource() -> None:
    """The same resource from another department or region is refused (one data, one source)."""
    assert refused(decide(key("OPEN", dept="HRSS"), UP)) is Reason.NOT_AUTHORITATIVE
    assert refused(decide(key("OPEN", region="410103"), UP)) is Reason.NOT_AUTHORITATIVE


def test_copies_above_a_destinations_clearance_are_withheld_and_refused() -> None:
    """Grade 3 reaches a child cleared for 3, is withheld from one cleared for 2, and says why."""
    outcome = decide(key("OPEN", grade="3"), DOWN_A, DOWN_B)
    assert isinstance(outcome, Delivered)
    assert outcome.copies == (DOWN_A,)
    [(copy, why)] = outcome.withheld
    assert copy == DOWN_B
    assert why.reason is Reason.GRADE


def test_the_catalog_grade_wins_over_a_lower_header_grade() -> None:
    """A record claiming grade 1 of a grade-4 resource is treated as grade 4."""
    assert refused(decide(key("HIGH", grade="1"), DOWN_A)) is Reason.GRADE
    assert isinstance(decide(key("HIGH", grade="1"), UP), Delivered)


def test_conditional_records_travel_but_are_not_delivered_without_a_grant() -> None:
    """A conditional resource goes up, but its local delivery is withheld as ``no_grant``."""
    assert isinstance(decide(key("ASK"), UP), Delivered)
    assert refused(decide(key("ASK"), LOCAL)) is Reason.NO_GRANT


def test_malformed_grade_is_a_bad_envelope() -> None:
    """A grade header that is not 1-4 is refused before any lookup."""
    assert refused(decide(key("OPEN", grade="9"), UP)) is Reason.BAD_ENVELOPE
    assert refused(decide(key("OPEN", grade=""), UP)) is Reason.BAD_ENVELOPE


RESOURCES = st.sampled_from(["OPEN", "SECRET", "ASK", "HIGH", "BANNED", "NOPE"])
COPIES = st.lists(st.sampled_from([UP, LOCAL, DOWN_A, DOWN_B]), min_size=1, max_size=4, unique=True)


@given(
    st.lists(
        st.tuples(
            RESOURCES, st.sampled_from(["PSB", "TAX", "HRSS"]), st.sampled_from("12345"), COPIES
        )
    ),
)
def test_every_record_gets_exactly_one_outcome_and_not_shared_never_leaves(
    batch: list[tuple[str, str, str, list[Copy]]],
) -> None:
    """apply_batch returns one outcome per record; nothing not-shared is delivered; every copy is accounted for."""
    keys = [key(r, dept=d, grade=g) for r, d, g, _ in batch]
    routed: list[Outcome] = [Delivered(tuple(copies)) for *_, copies in batch]
    outcomes = POLICY.apply_batch(keys, routed)  # type: ignore[arg-type]
    assert len(outcomes) == len(batch)
    for (resource_code, _, _, copies), outcome in zip(batch, outcomes, strict=True):
        if resource_code == "SECRET":
            assert isinstance(outcome, Refused)
        if isinstance(outcome, Delivered):
            assert outcome.copies
            delivered = list(outcome.copies) + [copy for copy, _ in outcome.withheld]
            assert sorted(delivered, key=repr) == sorted(copies, key=repr)


class _CountingPolicy(Policy):
    """Counts the decisions it works out (memo misses)."""

    def __init__(self, snapshot: PolicySnapshot, memo_size: int) -> None:
        super().__init__(snapshot, memo_size)
        self.worked_out = 0

    def apply(self, key: PolicyKey, routed: Delivered) -> Outcome:
        self.worked_out += 1
        return super().apply(key, routed)


def _open(code: str) -> PolicyKey:
    return (code.encode(), b"410102", b"PSB", b"2")


def test_a_routed_outcome_is_decided_once_per_kind_and_an_equal_one_alike() -> None:
    """The memo knows a routed outcome by identity (the router shares one per kind of route)."""
    policy = _CountingPolicy(POLICY.snapshot, memo_size=3)
    shared = Delivered((UP, DOWN_B))
    equal = Delivered((UP, DOWN_B))  # another object with the same value
    keys = [_open("OPEN"), _open("OPEN"), _open("HIGH"), _open("OPEN"), _open("OPEN")]
    outcomes = policy.apply_batch(keys, [shared, shared, shared, equal, shared])
    assert policy.worked_out == 3  # OPEN and HIGH with ``shared``, OPEN with ``equal``
    assert outcomes == [POLICY.apply(k, Delivered((UP, DOWN_B))) for k in keys]
    assert outcomes[3] == outcomes[0]
    policy.apply_batch([_open("ASK"), _open("OPEN")], [shared, shared])
    assert policy.worked_out == 5  # the memo was full: it started afresh with ASK, then OPEN
    policy.apply_batch([_open("OPEN")], [shared])
    assert policy.worked_out == 5
