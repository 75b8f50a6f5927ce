"""Writers who cannot lie: a record's headers must agree with the writer of its topic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.core.envelope import HOPS, SOURCE_DEPT, SOURCE_REGION
from node.core.feedback import FEEDBACK, REPORT, STATUS, Report, Status, StatusChange
from node.core.heartbeat import HEARTBEAT, VERSION, Beat
from node.core.outcome import Reason
from node.core.writers import Writer
from node.kafka.topics import TopicNames, level_writers

CITY, COUNTY, OTHER = "410100", "410102", "410103"
TOPICS = TopicNames("cx")
WRITERS = level_writers(TOPICS, CITY, ["PSB", "HRSS"], [COUNTY, OTHER])
PSB, UP = TOPICS.outbox("PSB"), TOPICS.up(COUNTY)


def headers(dept: str = "PSB", region: str = CITY, hops: str = "") -> list[tuple[str, bytes]]:
    """The headers the writer check reads, as a record carries them among the others."""
    return [
        ("cx-id", b"r-1"), (SOURCE_REGION, region.encode()), (SOURCE_DEPT, dept.encode()),
        ("cx-target", b"region:410000"), (HOPS, hops.encode()),
    ]  # fmt: skip


class Seen:
    """A record as the check sees it."""

    def __init__(self, headers: list[tuple[str, bytes]], value: bytes | None = b"v") -> None:
        self.headers = headers
        self.value = value


def check(topic: str, found: list[tuple[str, bytes]], value: bytes | None = b"v") -> str | None:
    """The refusal message of one record read from ``topic``, None if it may pass."""
    refused = WRITERS.check_batch([(topic, [Seen(found, value)])])
    if not refused:
        return None
    assert refused[0].reason is Reason.FORGED
    return refused[0].message


def test_the_writer_topics_are_one_outbox_per_department_and_one_up_per_child() -> None:
    """The local link reads every writer's topic, each named after its one writer."""
    assert WRITERS.topics == ["cx.outbox.HRSS", "cx.outbox.PSB", "cx.up.410102", "cx.up.410103"]


def test_honest_records_pass() -> None:
    """A department's fresh record, and a record a child handed up from its subtree, pass."""
    assert check(PSB, headers()) is None
    assert check(UP, headers(region="410102", hops="410102^")) is None
    assert check(UP, headers(region="410102", hops="410102001^,410102^")) is None


@pytest.mark.parametrize(
    ("found", "says"),
    [
        (headers(dept="HRSS"), "header cx-source-dept is 'HRSS' (expected PSB)"),
        (headers(region="410102"), "header cx-source-region is '410102' (expected 410100)"),
        (headers(hops="410102^"), "header cx-hops is '410102^' (expected a fresh record"),
    ],
)
def test_a_department_cannot_speak_for_another_or_skip_ingress(
    found: list[tuple[str, bytes]], says: str
) -> None:
    """Another department, another region, or a hop path (to skip ingress) is forged."""
    message = check(PSB, found)
    assert message is not None
    assert message.startswith("topic cx.outbox.PSB is department PSB's, but ")
    assert says in message


@pytest.mark.parametrize(
    ("found", "says"),
    [
        (headers(region="410102", hops=""), "header cx-hops is '' (expected a hop path ending"),
        (headers(region="410102", hops="410103^"), "header cx-hops is '410103^'"),
        (headers(region="410102", hops="410102v"), "header cx-hops is '410102v'"),
        (headers(region="410103", hops="410102^"), "header cx-source-region is '410103'"),
        (headers(region="410000", hops="410102^"), "(expected a region within 410102)"),
    ],
)
def test_a_child_hands_up_only_what_comes_from_its_subtree(
    found: list[tuple[str, bytes]], says: str
) -> None:
    """A child's topic takes only records it handed up itself, sourced in its subtree."""
    message = check(UP, found)
    assert message is not None
    assert message.startswith("topic cx.up.410102 is the node of child 410102's, but ")
    assert says in message


def test_a_child_record_without_hop_path_is_forged() -> None:
    """No hop path at all cannot have been handed up."""
    found = [h for h in headers(region="410102") if h[0] != HOPS]
    message = check(UP, found)
    assert message is not None
    assert "header cx-hops is missing" in message


def test_missing_headers_are_left_to_the_envelope_checks() -> None:
    """A department's record without source headers is not forged here (bad_envelope later)."""
    found = [h for h in headers() if h[0] not in (SOURCE_DEPT, SOURCE_REGION)]
    assert check(PSB, found) is None


def test_a_header_written_twice_is_checked_every_time() -> None:
    """An honest value after a forged one does not hide it."""
    found = [*headers(dept="HRSS"), (SOURCE_DEPT, b"PSB")]
    assert check(PSB, found) is not None


def test_an_unknown_topic_has_no_writer() -> None:
    """A topic the node does not know a writer of is refused."""
    message = check("cx.outbox", headers())
    assert message == "no writer of topic cx.outbox is known to this node"


def beat(region: str) -> bytes:
    """A heartbeat value from ``region``."""
    return Beat(region, f"node-{region}", "county", 1, 5.0).encode()


def test_a_heartbeat_comes_only_from_the_child_whose_topic_it_is_in() -> None:
    """The child's own beat passes; another's, or one in a department's outbox, is forged."""
    found = [(HEARTBEAT, VERSION)]
    assert check(UP, found, beat(COUNTY)) is None
    message = check(UP, found, beat(OTHER))
    assert message is not None
    assert "heartbeat field region is '410103' (expected 410102)" in message
    message = check(PSB, found, beat(COUNTY))
    assert message is not None
    assert "holds a heartbeat" in message
    assert check(UP, found, b"garbage") is None  # malformed: the link refuses it as bad_envelope


def report(reporter_region: str = CITY, reporter_dept: str = "HRSS") -> bytes:
    """A report about a county record."""
    return Report(
        "rep-1", "r-1", "410102-PSB-00001", COUNTY, "PSB", ("name",), "wrong", reporter_region,
        reporter_dept, 1,
    ).encode()  # fmt: skip


def rejection(at_region: str = CITY, by_dept: str = "PSB") -> bytes:
    """A rejection of a report."""
    return StatusChange(
        "rep-1", Status.REJECTED, "right", 0, at_region, by_dept, 1, "r-1", "410100-PSB-00001",
        "410000", "HRSS",
    ).encode()  # fmt: skip


def test_feedback_obeys_the_same_rule() -> None:
    """A department writes its own reports and rejections; a child hands up its subtree's."""
    fresh = [(FEEDBACK, REPORT), (HOPS, b"")]
    assert check(TOPICS.outbox("HRSS"), fresh, report()) is None
    message = check(PSB, fresh, report())
    assert message is not None
    assert "feedback field reporter_dept is 'HRSS' (expected PSB)" in message
    status = [(FEEDBACK, STATUS), (HOPS, b"")]
    assert check(PSB, status, rejection()) is None
    message = check(TOPICS.outbox("HRSS"), status, rejection())
    assert message is not None
    assert "feedback field by_dept is 'PSB' (expected HRSS)" in message
    message = check(PSB, [(FEEDBACK, STATUS), (HOPS, b"410102^")], rejection())
    assert message is not None
    assert "header cx-hops" in message
    handed = [(FEEDBACK, REPORT), (HOPS, b"410102^")]
    assert check(UP, handed, report(reporter_region=COUNTY)) is None
    message = check(UP, handed, report(reporter_region=OTHER))
    assert message is not None
    assert "origin is '410103' (expected a region within 410102)" in message


def test_a_writer_is_a_department_or_a_child() -> None:
    """Naming both, or neither, is a programming error."""
    with pytest.raises(ValueError, match="name a department or a child"):
        Writer("t")
    with pytest.raises(ValueError, match="name a department or a child"):
        Writer("t", department="PSB", child=COUNTY)


def test_indexes_follow_the_batch_in_order() -> None:
    """Refusals are keyed by the record's place across every partition of the batch."""
    parts = [
        (PSB, [Seen(headers()), Seen(headers(dept="HRSS"))]),
        (UP, [Seen(headers(region="410102", hops="410102^")), Seen(headers(hops=""))]),
    ]
    assert sorted(WRITERS.check_batch(parts)) == [1, 3]


printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12)


@settings(max_examples=300, deadline=None)
@given(dept=printable, region=printable, hops=printable, child=st.sampled_from([COUNTY, OTHER]))
def test_only_headers_that_agree_with_the_topic_pass(
    dept: str, region: str, hops: str, child: str
) -> None:
    """Whatever the headers, a record passes only if they agree with its topic's writer."""
    found = headers(dept=dept, region=region, hops=hops)
    honest_dept = dept == "PSB" and region == CITY and hops == ""
    assert (check(PSB, found) is None) == honest_dept
    honest_child = hops.rpartition(",")[2] == f"{child}^" and region.startswith(child)
    assert (check(TOPICS.up(child), found) is None) == honest_child
