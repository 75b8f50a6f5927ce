"""The provisioning planner: the topics and ACLs each level needs, and the diff against a cluster."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.config import parse_config
from node.core.provisioning import (
    AUDIT_PARTITIONS,
    DATA_RETENTION_MS,
    DAY_MS,
    REFUSED_RETENTION_MS,
    Acl,
    AddPartitions,
    AlterConfigs,
    ClusterPlan,
    ClusterState,
    CreateAcl,
    CreateTopic,
    Desired,
    NodeLayout,
    Operation,
    Pattern,
    Permission,
    Resource,
    TopicState,
    desired_local,
    desired_parent,
    plan,
)
from node.errors import ConfigError
from node.kafka.provision import layout_of
from node.kafka.topics import TopicNames

PROVINCE = NodeLayout("p", "410000", ("410100",), ("HRSS", "PSB"), TopicNames("cx"), None, 3, 1)
CITY = NodeLayout(
    "c", "410100", ("410102", "410103"), ("HRSS",), TopicNames("cx"), TopicNames("px"), 3, 1
)
COUNTY = NodeLayout("k", "410102", (), ("EDU",), TopicNames("kx"), TopicNames("cx"), 2, 1)
SECURE_CITY = dataclasses.replace(
    CITY, provenance=True, audit_retention_days=400, auditors=("User:auditor",)
)
"""The city with provenance, the audit trail and one auditor principal."""
SECURE_COUNTY = dataclasses.replace(COUNTY, provenance=True, audit_retention_days=400)
NO_ACLS = ClusterState({}, None)
EMPTY = ClusterState({}, frozenset())


def allow(principal: str, resource: Resource, pattern: Pattern, name: str, op: str) -> Acl:
    """An ALLOW ACL from any host."""
    return Acl(principal, resource, pattern, name, Operation(op))


def topic(name: str, partitions: int = 3, replicas: int = 1, **configs: str) -> TopicState:
    """An existing topic whose overrides are ``configs`` (dots written as underscores)."""
    named = {key.replace("_", "."): value for key, value in configs.items()}
    return TopicState(name, partitions, replicas, named, named)


def applied(actual: ClusterState, made: ClusterPlan) -> ClusterState:
    """The state a cluster is in after ``made`` was carried out, as Kafka would do it."""
    topics = dict(actual.topics)
    acls = set(actual.acls) if actual.acls is not None else None
    for action in made.actions:
        if isinstance(action, CreateTopic):
            spec = action.topic
            configs = dict(spec.configs)
            topics[spec.name] = TopicState(
                spec.name, spec.partitions, spec.replication_factor, configs, configs
            )
        elif isinstance(action, AddPartitions):
            topics[action.topic] = dataclasses.replace(
                topics[action.topic], partitions=action.total
            )
        elif isinstance(action, AlterConfigs):
            old = topics[action.topic]
            effective = {**old.configs, **action.configs}
            topics[action.topic] = dataclasses.replace(
                old, configs=effective, overrides=dict(action.configs)
            )
        else:
            assert acls is not None
            acls.add(action.acl)
    return ClusterState(topics, frozenset(acls) if acls is not None else None)


def test_a_city_needs_its_exchange_topics_on_its_own_cluster() -> None:
    """Outbox and down and up topics, inbox, refusals, delivery topics, state topics."""
    topics = {spec.name: spec for spec in desired_local(CITY).topics}
    assert set(topics) == {
        "cx.outbox.HRSS", "cx.up.410102", "cx.up.410103", "cx.inbox", "cx.refused",
        "cx.down.410102", "cx.down.410103", "cx.deliver.HRSS", "cx.grants", "cx.stats",
        "cx.quality", "cx.feedback", "cx.grants.from.410102", "cx.grants.from.410103",
    }  # fmt: skip
    assert {(s.partitions, s.replication_factor) for s in topics.values()} == {(3, 1)}


def test_state_topics_are_compacted_and_data_topics_expire() -> None:
    """State topics are compacted; data topics keep 7 days, refusals 30."""
    topics = {spec.name: spec for spec in desired_local(PROVINCE).topics}
    for name in ("cx.grants", "cx.grants.from.410100", "cx.stats", "cx.quality", "cx.feedback"):
        assert topics[name].configs == {"cleanup.policy": "compact"}
        assert topics[name].compacted
    week = {"cleanup.policy": "delete", "retention.ms": str(DATA_RETENTION_MS)}
    for name in ("cx.outbox.PSB", "cx.up.410100", "cx.inbox", "cx.down.410100", "cx.deliver.PSB"):
        assert topics[name].configs == week
        assert not topics[name].compacted
    assert topics["cx.refused"].configs["retention.ms"] == str(REFUSED_RETENTION_MS)
    assert REFUSED_RETENTION_MS > DATA_RETENTION_MS == 7 * 24 * 3600 * 1000


def test_the_root_plans_nothing_on_a_parent() -> None:
    """A province has no parent cluster to plan for."""
    assert desired_parent(PROVINCE) is None


def test_a_county_needs_its_parents_topics_but_does_not_own_them() -> None:
    """On the city's cluster: its own up and down topics, grants and its grants hand-up."""
    desired = desired_parent(COUNTY)
    assert desired is not None
    assert not desired.owned
    assert desired.principal == "User:node-410102"
    topics = {spec.name: spec for spec in desired.topics}
    assert set(topics) == {"cx.up.410102", "cx.down.410102", "cx.grants", "cx.grants.from.410102"}
    assert topics["cx.grants"].compacted
    assert topics["cx.grants.from.410102"].compacted
    assert topics["cx.down.410102"].partitions == 2  # this node's [topics] partitions


def test_acls_of_a_city_on_its_own_cluster() -> None:
    """The node owns its namespace; a department and a child get only what they use."""
    acls = desired_local(CITY).acls
    by = {p: {a for a in acls if a.principal == p} for p in {a.principal for a in acls}}
    assert set(by) == {"User:node-410100", "User:HRSS", "User:node-410102", "User:node-410103"}
    topic, group = Resource.TOPIC, Resource.GROUP
    lit, pre = Pattern.LITERAL, Pattern.PREFIXED
    node = "User:node-410100"
    assert by[node] == {
        *(allow(node, topic, pre, "cx.", op)
          for op in ("READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS", "CREATE")),
        allow(node, group, pre, "exchange-node.c.", "READ"),
    }  # fmt: skip
    assert by["User:HRSS"] == {
        allow("User:HRSS", topic, lit, "cx.outbox.HRSS", "WRITE"),
        allow("User:HRSS", topic, lit, "cx.outbox.HRSS", "DESCRIBE_CONFIGS"),
        allow("User:HRSS", topic, lit, "cx.deliver.HRSS", "READ"),
        allow("User:HRSS", topic, lit, "cx.deliver.HRSS", "DESCRIBE"),
        allow("User:HRSS", group, pre, "HRSS.", "READ"),
    }
    child = "User:node-410103"
    assert by[child] == {
        allow(child, topic, lit, "cx.up.410103", "WRITE"),
        allow(child, topic, lit, "cx.up.410103", "DESCRIBE_CONFIGS"),
        allow(child, topic, lit, "cx.down.410103", "READ"),
        allow(child, topic, lit, "cx.grants", "READ"),
        allow(child, topic, lit, "cx.grants.from.410103", "WRITE"),
        allow(child, topic, lit, "cx.grants.from.410103", "DESCRIBE_CONFIGS"),
    }
    assert all(a.permission is Permission.ALLOW and a.host == "*" for a in acls)


def test_a_department_with_feedback_reads_its_own_feedback_topic() -> None:
    """A reporter's feedback topic is a data topic; of the departments, only it may read it."""
    layout = dataclasses.replace(CITY, reporters=("PSB",))
    desired = desired_local(layout)
    assert "cx.feedback.PSB" in {spec.name for spec in desired.topics}
    readers = {
        a.principal for a in desired.acls if a.name == "cx.feedback.PSB" and a.operation == "READ"
    }
    assert readers == {"User:PSB"}  # the node reads every topic of its prefix


def test_nobody_but_the_node_reads_another_departments_or_childs_topic() -> None:
    """Every topic READ is the node's, a department's on its delivery topic, or a child's own."""
    for layout in (PROVINCE, CITY):
        reads = [
            a for a in desired_local(layout).acls
            if a.resource is Resource.TOPIC and a.operation is Operation.READ
        ]  # fmt: skip
        allowed = {("User:node-" + layout.region, "cx.")}
        allowed |= {(f"User:{code}", f"cx.deliver.{code}") for code in layout.departments}
        for child in layout.children:
            allowed |= {
                (f"User:node-{child}", f"cx.down.{child}"),
                (f"User:node-{child}", "cx.grants"),
            }
        assert {(a.principal, a.name) for a in reads} == allowed


def test_each_writer_may_write_only_its_own_topic() -> None:
    """A department writes only its ``outbox.DEPT``, a child's node its ``up.CHILD`` and hand-ups.

    No child may write the node's own ``grants``: it would decide grants for the whole tree.
    """
    layout = dataclasses.replace(CITY, reporters=("PSB",))
    desired = desired_local(layout)
    writes = {
        (a.principal, a.name) for a in desired.acls
        if a.resource is Resource.TOPIC and a.operation is Operation.WRITE
    }  # fmt: skip
    assert writes == {
        ("User:node-410100", "cx."),
        ("User:HRSS", "cx.outbox.HRSS"), ("User:PSB", "cx.outbox.PSB"),
        ("User:node-410102", "cx.up.410102"), ("User:node-410102", "cx.grants.from.410102"),
        ("User:node-410103", "cx.up.410103"), ("User:node-410103", "cx.grants.from.410103"),
    }  # fmt: skip
    names = {spec.name for spec in desired.topics}
    assert {"cx.outbox.HRSS", "cx.outbox.PSB", "cx.up.410102", "cx.up.410103"} <= names
    assert not any(name == "cx.outbox" for name in names)


def test_what_a_county_asks_of_its_parent_is_what_the_city_grants_it() -> None:
    """The county's ACLs on the city's cluster, less its groups, are the city's rule for it."""
    county = desired_parent(COUNTY)
    assert county is not None
    asked = {a for a in county.acls if a.resource is Resource.TOPIC}
    granted = {a for a in desired_local(CITY).acls if a.principal == "User:node-410102"}
    assert asked == granted
    assert county.acls - asked == {
        allow("User:node-410102", Resource.GROUP, Pattern.PREFIXED, "exchange-node.k.", "READ")
    }


def test_an_empty_cluster_gets_every_topic_and_acl() -> None:
    """Against nothing, the plan creates every topic, then every ACL."""
    desired = desired_local(CITY)
    made = plan(desired, EMPTY)
    creates = [a.topic for a in made.actions if isinstance(a, CreateTopic)]
    assert creates == list(desired.topics)
    assert {a.acl for a in made.actions if isinstance(a, CreateAcl)} == desired.acls
    assert made.acls_enforced
    assert not made.warnings
    assert not made.topics_in_place


def test_without_an_authorizer_only_topics_are_planned() -> None:
    """A cluster with no authorizer gets no ACL actions and says ACLs are not enforced."""
    made = plan(desired_local(CITY), NO_ACLS)
    assert made.actions
    assert all(isinstance(a, CreateTopic) for a in made.actions)
    assert not made.acls_enforced


def test_an_own_data_topic_that_drifted_is_grown_and_reconfigured() -> None:
    """Too few partitions are added; wrong configs are set, keeping the topic's other overrides."""
    desired = desired_local(COUNTY)
    outbox = topic("kx.outbox.EDU", 1, cleanup_policy="delete", retention_ms="1000")
    outbox = dataclasses.replace(outbox, overrides={**outbox.overrides, "max.message.bytes": "9"})
    made = plan(desired, ClusterState({"kx.outbox.EDU": outbox}, None))
    assert AddPartitions("kx.outbox.EDU", 1, 2) in made.actions
    [alter] = [a for a in made.actions if isinstance(a, AlterConfigs)]
    assert alter.changes == (("retention.ms", "1000", str(DATA_RETENTION_MS)),)
    assert alter.configs == {
        "cleanup.policy": "delete", "retention.ms": str(DATA_RETENTION_MS),
        "max.message.bytes": "9",
    }  # fmt: skip


def test_a_state_topic_is_compacted_but_never_repartitioned() -> None:
    """A delete-policy grants topic is made compacted; its missing partitions are only reported."""
    grants = topic("kx.grants", 1, cleanup_policy="delete")
    made = plan(desired_local(COUNTY), ClusterState({"kx.grants": grants}, None))
    assert not any(isinstance(a, AddPartitions) for a in made.actions)
    [alter] = [a for a in made.actions if isinstance(a, AlterConfigs)]
    assert alter.changes == (("cleanup.policy", "delete", "compact"),)
    assert any("kx.grants has 1 partitions, 2 wanted" in w for w in made.warnings)


def test_shrinking_and_replication_changes_are_only_warnings() -> None:
    """More partitions than wanted, or another replication factor: reported, never changed."""
    configs = {"cleanup_policy": "delete", "retention_ms": str(DATA_RETENTION_MS)}
    inbox = topic("kx.inbox", 5, 3, **configs)
    made = plan(desired_local(COUNTY), ClusterState({"kx.inbox": inbox}, None))
    assert not [a for a in made.actions if not isinstance(a, CreateTopic)]
    assert any("5 partitions, 2 wanted; partitions are never removed" in w for w in made.warnings)
    assert any("replication factor 3, 1 wanted" in w for w in made.warnings)
    assert "kx.inbox" not in made.topics_in_place


def test_the_parents_topics_are_created_but_never_changed() -> None:
    """On the parent's cluster a missing topic is created; a drifted one is only reported."""
    desired = desired_parent(COUNTY)
    assert desired is not None
    up = topic("cx.up.410102", 1, cleanup_policy="compact")
    made = plan(desired, ClusterState({"cx.up.410102": up}, None))
    assert {type(a) for a in made.actions} == {CreateTopic}
    assert {a.topic.name for a in made.actions if isinstance(a, CreateTopic)} == {
        "cx.down.410102", "cx.grants", "cx.grants.from.410102",
    }  # fmt: skip
    assert any("the parent's topic" in w and "cleanup.policy=compact" in w for w in made.warnings)


def test_extra_topics_and_acls_are_reported_never_removed() -> None:
    """Unplanned topics of the namespace and unplanned ACLs on its resources become warnings."""
    desired = desired_local(COUNTY)
    stale = allow("User:OLD", Resource.TOPIC, Pattern.LITERAL, "kx.deliver.OLD", "READ")
    deny = dataclasses.replace(
        allow("User:EDU", Resource.TOPIC, Pattern.LITERAL, "kx.outbox.EDU", "WRITE"),
        permission=Permission.DENY,
    )
    elsewhere = allow("User:x", Resource.TOPIC, Pattern.LITERAL, "other.topic", "READ")
    actual = ClusterState(
        {"kx.deliver.OLD": topic("kx.deliver.OLD"), "other.topic": topic("other.topic")},
        frozenset({stale, deny, elsewhere}),
    )
    made = plan(desired, actual)
    assert not any(
        isinstance(a, CreateTopic) and a.topic.name == "kx.deliver.OLD" for a in made.actions
    )
    text = "\n".join(made.warnings)
    assert "kx.deliver.OLD exists but is not needed" in text
    assert "other.topic" not in text
    assert str(stale) in text
    assert f"{deny}; a DENY overrides the planned ALLOWs" in text


def test_on_the_parents_cluster_only_this_nodes_extra_acls_are_reported() -> None:
    """ACLs of the parent's other children are theirs; an unplanned one of this node's is shown."""
    desired = desired_parent(COUNTY)
    assert desired is not None
    sibling = allow("User:node-410103", Resource.TOPIC, Pattern.LITERAL, "cx.up.410103", "WRITE")
    mine = allow("User:node-410102", Resource.TOPIC, Pattern.LITERAL, "cx.inbox", "READ")
    made = plan(desired, ClusterState({}, frozenset({sibling, mine})))
    assert made.warnings == (f"ACL not in the plan, left alone: {mine}",)


def test_acls_in_place_are_not_created_again() -> None:
    """An ACL the cluster has is counted in place, not planned."""
    desired = desired_local(COUNTY)
    present = sorted(desired.acls)[0]
    made = plan(desired, ClusterState({}, frozenset({present})))
    assert made.acls_in_place == (present,)
    assert CreateAcl(present) not in made.actions
    assert len([a for a in made.actions if isinstance(a, CreateAcl)]) == len(desired.acls) - 1


def all_desired() -> list[Desired]:
    """Every cluster plan of the three example levels, and of the city and county made secure."""
    layouts = (PROVINCE, CITY, COUNTY, SECURE_CITY, SECURE_COUNTY)
    found = [desired_local(layout) for layout in layouts]
    return found + [d for d in map(desired_parent, layouts) if d is not None]


def test_planning_against_the_applied_state_is_empty() -> None:
    """Applying a plan, then planning again, leaves nothing to do and nothing to warn about."""
    for desired in all_desired():
        for start in (EMPTY, NO_ACLS):
            after = applied(start, plan(desired, start))
            again = plan(desired, after)
            assert again.nothing_to_do, desired.cluster
            assert not again.warnings
            assert set(again.topics_in_place) == {spec.name for spec in desired.topics}


codes = st.sampled_from(["HRSS", "PSB", "EDU", "TAX", "A.B", "x-1"])
children = st.sampled_from(["410102", "410103", "410104", "410105"])


@settings(max_examples=80, deadline=None)
@given(
    departments=st.lists(codes, unique=True, max_size=4),
    kids=st.lists(children, unique=True, max_size=3),
    partitions=st.integers(1, 6),
    secure=st.booleans(),
    drift=st.data(),
)
def test_apply_converges_from_any_partial_state(
    departments: list[str], kids: list[str], partitions: int, secure: bool, drift: st.DataObject
) -> None:
    """From some topics (any partitions and cleanup policy) and some ACLs, one apply suffices."""
    layout = NodeLayout(
        "n", "410100", tuple(kids), tuple(departments), TopicNames("cx"), TopicNames("px"),
        partitions, 1, provenance=secure, audit_retention_days=30 if secure else None,
        auditors=("User:auditor",),
    )  # fmt: skip
    for desired in (desired_local(layout), desired_parent(layout)):
        assert desired is not None
        topics = {}
        for spec in desired.topics:
            if drift.draw(st.booleans()):
                policy = drift.draw(st.sampled_from(["delete", "compact", "compact,delete"]))
                count = drift.draw(st.integers(1, 8))
                topics[spec.name] = topic(spec.name, count, cleanup_policy=policy)
        acls = frozenset(a for a in desired.acls if drift.draw(st.booleans()))
        start = ClusterState(topics, acls)
        again = plan(desired, applied(start, plan(desired, start)))
        assert again.nothing_to_do


def test_provenance_and_audit_add_their_topics_with_the_nodes_configs() -> None:
    """Trust topics are compacted state topics; the audit topic has one partition and retention."""
    plain = {spec.name for spec in desired_local(CITY).topics}
    topics = {spec.name: spec for spec in desired_local(SECURE_CITY).topics}
    assert set(topics) - plain == {
        "cx.trust", "cx.trust.from.410102", "cx.trust.from.410103", "cx.audit.c",
    }  # fmt: skip
    for name in ("cx.trust", "cx.trust.from.410102", "cx.trust.from.410103"):
        assert topics[name].configs == {"cleanup.policy": "compact"}
        assert topics[name].compacted
        assert topics[name].partitions == 3
    audit = topics["cx.audit.c"]
    assert (audit.partitions, audit.replication_factor) == (AUDIT_PARTITIONS, 1) == (1, 1)
    assert audit.configs == {"cleanup.policy": "delete", "retention.ms": str(400 * DAY_MS)}
    assert not audit.compacted


def test_without_provenance_or_audit_there_are_no_trust_or_audit_topics() -> None:
    """Each is planned only when the config turns it on."""
    only_audit = dataclasses.replace(CITY, audit_retention_days=10)
    names = {spec.name for spec in desired_local(only_audit).topics}
    assert "cx.audit.c" in names
    assert not any(".trust" in name for name in names)
    only_trust = dataclasses.replace(CITY, provenance=True, auditors=("User:auditor",))
    desired = desired_local(only_trust)
    assert not any(".audit." in spec.name for spec in desired.topics)
    assert "User:auditor" not in {a.principal for a in desired.acls}


def test_acls_of_a_city_with_children_provenance_and_audit() -> None:
    """Exactly: children hand keys up to their own topic and read the node's; auditors read."""
    acls = desired_local(SECURE_CITY).acls
    by = {p: {a for a in acls if a.principal == p} for p in {a.principal for a in acls}}
    assert set(by) == {
        "User:node-410100", "User:HRSS", "User:node-410102", "User:node-410103", "User:auditor",
    }  # fmt: skip
    topic, group = Resource.TOPIC, Resource.GROUP
    lit, pre = Pattern.LITERAL, Pattern.PREFIXED
    node = "User:node-410100"
    assert by[node] == {  # its prefix covers cx.trust, cx.trust.from.*, cx.audit.c
        *(allow(node, topic, pre, "cx.", op)
          for op in ("READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS", "CREATE")),
        allow(node, group, pre, "exchange-node.c.", "READ"),
    }  # fmt: skip
    assert by["User:HRSS"] == {
        allow("User:HRSS", topic, lit, "cx.outbox.HRSS", "WRITE"),
        allow("User:HRSS", topic, lit, "cx.outbox.HRSS", "DESCRIBE_CONFIGS"),
        allow("User:HRSS", topic, lit, "cx.deliver.HRSS", "READ"),
        allow("User:HRSS", topic, lit, "cx.deliver.HRSS", "DESCRIBE"),
        allow("User:HRSS", group, pre, "HRSS.", "READ"),
    }
    for region in ("410102", "410103"):
        child = f"User:node-{region}"
        assert by[child] == {
            allow(child, topic, lit, f"cx.up.{region}", "WRITE"),
            allow(child, topic, lit, f"cx.up.{region}", "DESCRIBE_CONFIGS"),
            allow(child, topic, lit, f"cx.down.{region}", "READ"),
            allow(child, topic, lit, "cx.grants", "READ"),
            allow(child, topic, lit, f"cx.grants.from.{region}", "WRITE"),
            allow(child, topic, lit, f"cx.grants.from.{region}", "DESCRIBE_CONFIGS"),
            allow(child, topic, lit, f"cx.trust.from.{region}", "WRITE"),
            allow(child, topic, lit, f"cx.trust.from.{region}", "DESCRIBE_CONFIGS"),
            allow(child, topic, lit, "cx.trust", "READ"),
        }
    assert by["User:auditor"] == {
        allow("User:auditor", topic, lit, "cx.audit.c", "READ"),
        allow("User:auditor", topic, lit, "cx.audit.c", "DESCRIBE"),
    }
    assert len(acls) == 6 + 5 + 2 * 9 + 2


def test_no_department_has_any_right_on_trust_or_audit_topics() -> None:
    """Only the node (by its prefix), children (their own key topic, the node's) and auditors."""
    layout = dataclasses.replace(SECURE_CITY, reporters=("PSB",))
    secured = [
        a for a in desired_local(layout).acls
        if ".trust" in a.name or ".audit." in a.name
    ]  # fmt: skip
    assert {a.principal for a in secured} == {
        "User:node-410102",
        "User:node-410103",
        "User:auditor",
    }
    writes = {(a.principal, a.name) for a in secured if a.operation is Operation.WRITE}
    assert writes == {
        ("User:node-410102", "cx.trust.from.410102"), ("User:node-410103", "cx.trust.from.410103"),
    }  # fmt: skip


def test_a_secure_county_asks_of_its_parent_what_a_secure_city_grants_it() -> None:
    """On the city's cluster: WRITE its own key topic, READ the city's keys; topics not owned."""
    county = desired_parent(SECURE_COUNTY)
    assert county is not None
    topics = {spec.name: spec for spec in county.topics}
    assert set(topics) == {
        "cx.up.410102", "cx.down.410102", "cx.grants", "cx.grants.from.410102", "cx.trust",
        "cx.trust.from.410102",
    }  # fmt: skip
    assert topics["cx.trust"].compacted
    assert topics["cx.trust.from.410102"].compacted
    assert not any(".audit." in name for name in topics)  # the audit trail stays at home
    asked = {a for a in county.acls if a.resource is Resource.TOPIC}
    granted = {a for a in desired_local(SECURE_CITY).acls if a.principal == "User:node-410102"}
    assert asked == granted
    me = "User:node-410102"
    assert {
        allow(me, Resource.TOPIC, Pattern.LITERAL, "cx.trust.from.410102", "WRITE"),
        allow(me, Resource.TOPIC, Pattern.LITERAL, "cx.trust", "READ"),
    } <= asked


def test_the_layout_of_a_config_carries_provenance_audit_and_its_readers(tmp_path: Path) -> None:
    """``[provenance]``, ``[audit]`` and its ``readers`` reach the plan; a bad reader is named."""
    key = tmp_path / "node.key"
    key.write_text("a key", encoding="utf-8")
    base = {
        "node": {"id": "zz-city", "level": "city", "region": "410100", "children": ["410102"]},
        "local": {"bootstrap": "127.0.0.1:19092", "topic_prefix": "zz"},
        "parent": {"bootstrap": "127.0.0.1:29092", "region": "410000", "topic_prefix": "pp"},
    }
    plain = layout_of(parse_config(base))
    assert (plain.provenance, plain.audit_retention_days, plain.auditors) == (False, 400, ())
    secure = layout_of(parse_config({
        **base, "provenance": {"key_file": str(key)},
        "audit": {"retention_days": 90, "readers": ["User:b", "User:a", "User:b"]},
    }))  # fmt: skip
    assert (secure.provenance, secure.audit_retention_days) == (True, 90)
    assert secure.auditors == ("User:a", "User:b")
    audit = {s.name: s for s in desired_local(secure).topics}["zz.audit.zz-city"]
    assert audit.configs["retention.ms"] == str(90 * DAY_MS)
    parent = desired_parent(secure)
    assert parent is not None
    assert {"pp.trust", "pp.trust.from.410100"} <= {s.name for s in parent.topics}
    off = layout_of(parse_config({**base, "audit": {"enabled": False, "readers": ["User:a"]}}))
    assert off.audit_retention_days is None
    assert not any(".audit." in s.name for s in desired_local(off).topics)
    with pytest.raises(ConfigError) as raised:
        parse_config({**base, "audit": {"readers": ["auditor"]}})
    assert "audit.readers[0]" in str(raised.value)
    assert "a Kafka principal like User:NAME" in str(raised.value)
