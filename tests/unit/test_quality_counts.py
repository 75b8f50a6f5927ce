"""A batch's quality counts, per resource, department and dimension, however verdicts are shared."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from node.core.decision import Facts
from node.core.quality import Dimension, Failure, Verdict
from node.core.quality_ledger import QualityKey
from node.kafka.accounting import _quality_counts

CHECKED = frozenset({Dimension.COMPLETENESS, Dimension.ACCURACY, Dimension.TIMELINESS})
PASSED = {
    b"R1": Verdict((), False, CHECKED),
    b"R2": Verdict((), False, CHECKED - {Dimension.ACCURACY}),
}
"""Each resource's one verdict for every record that passes (as ``quality.check`` shares it)."""


def failing(dimension: Dimension, refused: bool) -> Verdict:
    """A verdict of its own, as a record that fails gets."""
    return Verdict((Failure(dimension, "rule", "$.item", "wrong"),), refused, CHECKED)


SHARED_FAILURE = failing(Dimension.TIMELINESS, False)


records = st.lists(
    st.tuples(
        st.sampled_from([b"R1", b"R2"]),
        st.sampled_from([b"PSB", b"SAMR", None]),
        st.none()
        | st.sampled_from(["pass", "shared failure"])
        | st.tuples(st.sampled_from(sorted(CHECKED)), st.booleans()),
    ),
    max_size=60,
)


def one_by_one(facts: list[Facts]) -> tuple[dict[QualityKey, tuple[int, int]], set[str]]:
    """The counts by their definition: every record, every dimension it was checked on."""
    counts: dict[QualityKey, tuple[int, int]] = {}
    published: set[str] = set()
    for fact in facts:
        if fact.quality is None:
            continue
        resource, dept = (fact.resource or b"").decode(), (fact.source_dept or b"").decode()
        if not fact.quality.refused:
            published.add(resource)
        for dimension in fact.quality.checked:
            key = QualityKey(resource, dept, dimension.value)
            checked, failed = counts.get(key, (0, 0))
            counts[key] = (checked + 1, failed + (dimension in fact.quality.failed_dimensions))
    return counts, published


@settings(max_examples=300)
@given(records)
def test_counts_are_those_of_each_record_in_turn(
    batch: list[tuple[bytes, bytes | None, str | tuple[Dimension, bool] | None]],
) -> None:
    """Passing records counted per shared verdict add up as if each were counted alone."""
    facts = []
    for resource, dept, said in batch:
        if said is None:
            verdict = None  # no rules, or not entering here
        elif said == "pass":
            verdict = PASSED[resource]
        elif said == "shared failure":  # none is shared today; counting must not assume it
            verdict = SHARED_FAILURE
        else:
            verdict = failing(*said)
        facts.append(Facts(1, resource, dept, b"", verdict))
    assert _quality_counts(facts) == one_by_one(facts)


def test_a_refused_record_publishes_nothing_and_a_passing_one_its_resource() -> None:
    """Only an admitted record makes its resource published; a refusal still counts its checks."""
    refused = Facts(1, b"R1", b"PSB", b"", failing(Dimension.ACCURACY, True))
    counts, published = _quality_counts(
        [refused, refused._replace(resource=b"R2", quality=PASSED[b"R2"])]
    )
    assert published == {"R2"}
    assert counts[QualityKey("R1", "PSB", "accuracy")] == (1, 1)
    assert counts[QualityKey("R2", "PSB", "completeness")] == (1, 0)
