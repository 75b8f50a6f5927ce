"""What a node needs on its clusters (topics and ACLs), and the changes that would get it there.

Pure and synchronous: the desired state comes from a ``NodeLayout`` (built from the config by the
shell), the actual state is handed in as a ``ClusterState``, and ``plan`` compares the two. Reading
a cluster and applying a plan is ``node/kafka/provision.py``'s job; this module must not do I/O.

Topics (as the node's loops use them; ``node/app.py`` creates the same ones at start-up):

- the node's own cluster (``local``): ``outbox.DEPT`` per department that may publish (the
  departments of the level: sources, consumers, gateway clients), ``up.CHILD`` per child,
  ``inbox``, ``refused``, ``down.CHILD`` per child, ``deliver.DEPT`` per department,
  ``feedback.DEPT`` per department with correction feedback, and the state topics ``grants``,
  ``grants.from.CHILD`` per child, ``stats``, ``quality`` and ``feedback``; with ``[provenance]``
  the trust store ``trust`` and ``trust.from.CHILD`` per child; with ``[audit] enabled`` the audit
  trail ``audit.NODE_ID``;
- the parent's cluster (``parent``): the parent's ``up.REGION``, ``down.REGION``, ``grants`` and
  ``grants.from.REGION``, and with ``[provenance]`` its ``trust`` and ``trust.from.REGION``. They
  are the parent node's topics: created when missing, otherwise never changed here (the parent's
  own plan owns them); a difference is reported as a warning.

Topic configs. The config file has no retention settings yet, so these are constants: data topics
keep records 7 days (``DATA_RETENTION_MS``; an outage of a level longer than that loses records),
the refusal topic 30 days (``REFUSED_RETENTION_MS``; refusals are inspected long after), and the
state topics (trust topics included) are compacted with no time limit (``cleanup.policy=compact``).
The audit topic has one partition (``AUDIT_PARTITIONS``: one hash chain, in order) and keeps
entries ``[audit] retention_days``. Other partitions and the replication factor come from
``[topics]``. ``node/app.py`` creates the trust and audit topics with these same constants
(``STATE_CONFIGS``, ``audit_topic``). Partitions are added to data topics, never to state
topics (a key would move to another partition and its old value would never be compacted away),
and never removed.

Principals. With SASL a principal is ``User:<username>``. Until trust between levels configures
them, the planner assumes that a node authenticates as ``User:node-<region>`` (``node_principal``:
the region is the only name a node and its parent both know, a parent knows its children by region
only) and a department of a level as ``User:<department code>`` (``department_principal``) on its
level's cluster. Consumer groups: a node's start with ``exchange-node.<node id>.``, a department's
with ``<department code>.``.

ACL rules (every ACL allows, from any host). Each writer may write only its own topic, so the node
knows who wrote a record from the topic it came from (``node/core/writers.py`` refuses a record
whose headers disagree, ``node/kafka/trust.py`` accepts from ``trust.from.CHILD`` only keys of
CHILD's subtree, ``node/kafka/grants.py`` from ``grants.from.CHILD`` only grant events recorded in
CHILD's subtree by the node entitled to them):

- on the node's own cluster
    - the node: READ, WRITE, DESCRIBE, DESCRIBE_CONFIGS, CREATE on topics prefixed ``PREFIX.``
      (this covers its ``grants``, ``trust``, the children's ``grants.from.CHILD`` and
      ``trust.from.CHILD``, and its ``audit.NODE_ID``);
      READ on its groups;
    - each department: WRITE, DESCRIBE_CONFIGS on its ``outbox.DEPT`` (and no other);
      a consumer department READ, DESCRIBE on its ``deliver.DEPT``, READ on its groups; a
      department with feedback READ, DESCRIBE on its ``feedback.DEPT``; no department has any
      right on the trust or audit topics;
    - each child node: the child rule below;
    - each auditor principal of ``[audit] readers``: READ, DESCRIBE on ``audit.NODE_ID`` (it reads
      without a consumer group, as ``exchange-node audit verify`` does; groups of its own are for
      its operator to grant). Auditors without a Kafka principal read the trail through the
      node's ``/audit/`` HTTP routes (role ``auditor``);
- on the parent's cluster, this node: the child rule, and READ on its groups;
- the child rule: WRITE, DESCRIBE_CONFIGS on ``up.CHILD`` (records and heartbeats up, and no
  other writer topic); READ on ``down.CHILD``; WRITE, DESCRIBE_CONFIGS on ``grants.from.CHILD``
  (its subtree's grant events up) and READ on ``grants`` (the rest of the tree's; never WRITE: a
  child must not decide grants for others); with ``[provenance]`` WRITE, DESCRIBE_CONFIGS on
  ``trust.from.CHILD`` (its subtree's keys up, the sink reads the topic's ``max.message.bytes``)
  and READ on ``trust`` (the keys of the rest of the tree; the ``trust-up`` loop reads it without
  a group).

Provenance is planned from this node's own config: a parent plans its children's trust rights
when it has ``[provenance]``, a child the same rights on its parent's cluster when it has. Turn it
on for a whole subtree at once.

A child's groups on the parent's cluster are named after the child's node id, which the parent does
not know: they are planned by the child (``topics plan --cluster parent``). Nothing is ever
deleted: topics and ACLs that exist but are not planned are listed as warnings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

DAY_MS = 24 * 3600 * 1000
DATA_RETENTION_MS = 7 * DAY_MS
"""How long data topics (outbox, up, inbox, down, deliver) keep records."""
REFUSED_RETENTION_MS = 30 * DAY_MS
"""How long the refusal topic keeps records."""
DATA_CONFIGS = {"cleanup.policy": "delete", "retention.ms": str(DATA_RETENTION_MS)}
REFUSED_CONFIGS = {"cleanup.policy": "delete", "retention.ms": str(REFUSED_RETENTION_MS)}
STATE_CONFIGS = {"cleanup.policy": "compact"}
"""Configs of state topics: grants, stats, quality, feedback, trust and the ``*.from.CHILD``."""
AUDIT_PARTITIONS = 1
"""The audit topic's partitions: one hash chain, read and written in order."""
LOCAL, PARENT = "local", "parent"


def node_principal(region: str) -> str:
    """Return the principal the node of ``region`` authenticates as (an assumption, see above)."""
    return f"User:node-{region}"


def department_principal(code: str) -> str:
    """Return the principal a department authenticates as on its level's cluster."""
    return f"User:{code}"


def node_groups(node_id: str) -> str:
    """Return the prefix of the consumer groups of node ``node_id``."""
    return f"exchange-node.{node_id}."


def department_groups(code: str) -> str:
    """Return the prefix of the consumer groups of a department."""
    return f"{code}."


class Namespace(Protocol):
    """One cluster's exchange topic names (``node.kafka.topics.TopicNames`` is one)."""

    @property
    def prefix(self) -> str:
        """The topic prefix."""
        ...

    def outbox(self, department: str) -> str:
        """Return the topic a department of this level publishes to."""
        ...

    def up(self, child: str) -> str:
        """Return the topic a child's node hands records up to."""
        ...

    @property
    def inbox(self) -> str:
        """Records delivered to this level."""
        ...

    @property
    def refused(self) -> str:
        """Refused records."""
        ...

    @property
    def grants(self) -> str:
        """Grant events (compacted)."""
        ...

    def grants_from(self, child: str) -> str:
        """Return the topic a child's node hands its subtree's grant events up to."""
        ...

    @property
    def stats(self) -> str:
        """Exchange statistics (compacted)."""
        ...

    @property
    def quality(self) -> str:
        """Quality counts (compacted)."""
        ...

    @property
    def feedback(self) -> str:
        """Correction feedback that passed this node (compacted)."""
        ...

    def feedback_for(self, department: str) -> str:
        """Return the feedback topic of a department."""
        ...

    def deliver(self, department: str) -> str:
        """Return the delivery topic of a department."""
        ...

    def down(self, child: str) -> str:
        """Return the hand-over topic of a child's node."""
        ...

    @property
    def trust(self) -> str:
        """Public keys the node trusts (compacted; only the node writes it)."""
        ...

    def trust_from(self, child: str) -> str:
        """Return the topic a child's node hands its subtree's public keys up to."""
        ...

    def audit(self, node_id: str) -> str:
        """Return the audit trail of a node."""
        ...


class Resource(StrEnum):
    """Kafka's ACL resource types."""

    TOPIC = "TOPIC"
    GROUP = "GROUP"
    CLUSTER = "CLUSTER"
    TRANSACTIONAL_ID = "TRANSACTIONAL_ID"
    DELEGATION_TOKEN = "DELEGATION_TOKEN"  # noqa: S105 - a resource type, not a secret
    USER = "USER"


class Pattern(StrEnum):
    """How an ACL's resource name matches: exactly, or as a prefix."""

    LITERAL = "LITERAL"
    PREFIXED = "PREFIXED"


class Operation(StrEnum):
    """Kafka's ACL operations."""

    ALL = "ALL"
    READ = "READ"
    WRITE = "WRITE"
    CREATE = "CREATE"
    DELETE = "DELETE"
    ALTER = "ALTER"
    DESCRIBE = "DESCRIBE"
    CLUSTER_ACTION = "CLUSTER_ACTION"
    DESCRIBE_CONFIGS = "DESCRIBE_CONFIGS"
    ALTER_CONFIGS = "ALTER_CONFIGS"
    IDEMPOTENT_WRITE = "IDEMPOTENT_WRITE"
    CREATE_TOKENS = "CREATE_TOKENS"
    DESCRIBE_TOKENS = "DESCRIBE_TOKENS"
    TWO_PHASE_COMMIT = "TWO_PHASE_COMMIT"


class Permission(StrEnum):
    """Whether an ACL allows or denies."""

    ALLOW = "ALLOW"
    DENY = "DENY"


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    """One access control entry: ``principal`` may (or may not) do ``operation`` on a resource."""

    principal: str
    resource: Resource
    pattern: Pattern
    name: str
    operation: Operation
    permission: Permission = Permission.ALLOW
    host: str = "*"

    def __str__(self) -> str:
        kind = self.resource.lower() + ("s prefixed" if self.pattern is Pattern.PREFIXED else "")
        where = "" if self.host == "*" else f" from {self.host}"
        return f"{self.permission} {self.principal} {self.operation} on {kind} {self.name}{where}"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as the node needs it."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]
    compacted: bool = False


@dataclass(frozen=True, slots=True)
class NodeLayout:
    """What the planner reads of a node's configuration."""

    node_id: str
    region: str
    children: tuple[str, ...]
    departments: tuple[str, ...]
    local: Namespace
    parent: Namespace | None
    partitions: int
    replication_factor: int
    reporters: tuple[str, ...] = ()
    """Departments of this level with a correction feedback topic (sources, consumers, gateway
    clients)."""
    provenance: bool = False
    """Whether the node keeps a trust store (``[provenance]``)."""
    audit_retention_days: int | None = None
    """Retention of the node's audit topic; None: no audit trail (``[audit] enabled = false``)."""
    auditors: tuple[str, ...] = ()
    """Principals that may read the node's audit topic (``[audit] readers``)."""

    @property
    def writers(self) -> tuple[str, ...]:
        """Departments that may publish here (each to its ``outbox.DEPT``): every one known."""
        return tuple(sorted({*self.departments, *self.reporters}))


@dataclass(frozen=True, slots=True)
class Desired:
    """What one cluster should hold for this node.

    ``owned``: the topics are this node's (drift is corrected), else the parent's (drift is
    reported). ``principal``: this node's principal on that cluster.
    """

    cluster: str
    prefix: str
    topics: tuple[TopicSpec, ...]
    acls: frozenset[Acl]
    owned: bool
    principal: str


@dataclass(frozen=True, slots=True)
class TopicState:
    """A topic as it exists: ``configs`` are effective values, ``overrides`` the topic's own."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)
    overrides: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClusterState:
    """What a cluster holds: the namespace's topics, and its ACLs (None: no authorizer)."""

    topics: Mapping[str, TopicState]
    acls: frozenset[Acl] | None


@dataclass(frozen=True, slots=True)
class CreateTopic:
    """Create a missing topic."""

    topic: TopicSpec

    def __str__(self) -> str:
        configs = ", ".join(f"{key}={value}" for key, value in sorted(self.topic.configs.items()))
        return (
            f"topic {self.topic.name} ({self.topic.partitions} partitions, replication "
            f"{self.topic.replication_factor}, {configs})"
        )


@dataclass(frozen=True, slots=True)
class AlterConfigs:
    """Set a topic's configs: ``changes`` (key, old, new) for people, ``configs`` to send.

    Kafka's AlterConfigs replaces a topic's whole set of overrides, so ``configs`` holds the
    overrides the topic has with the changes applied.
    """

    topic: str
    changes: tuple[tuple[str, str | None, str], ...]
    configs: Mapping[str, str]

    def __str__(self) -> str:
        said = ", ".join(f"{key} {old or '(unset)'} -> {new}" for key, old, new in self.changes)
        return f"configs of {self.topic}: {said}"


@dataclass(frozen=True, slots=True)
class AddPartitions:
    """Grow a data topic to ``total`` partitions."""

    topic: str
    current: int
    total: int

    def __str__(self) -> str:
        return f"partitions of {self.topic}: {self.current} -> {self.total}"


@dataclass(frozen=True, slots=True)
class CreateAcl:
    """Create a missing ACL."""

    acl: Acl

    def __str__(self) -> str:
        return f"ACL {self.acl}"


Action = CreateTopic | AlterConfigs | AddPartitions | CreateAcl


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    """The changes one cluster needs, what is already in place, and what is only reported."""

    desired: Desired
    actions: tuple[Action, ...]
    warnings: tuple[str, ...]
    topics_in_place: tuple[str, ...]
    acls_in_place: tuple[Acl, ...]
    acls_enforced: bool

    @property
    def nothing_to_do(self) -> bool:
        """Tell whether the cluster already holds everything planned."""
        return not self.actions


def desired_local(layout: NodeLayout) -> Desired:
    """Return what the node's own cluster should hold."""
    names = layout.local
    topics = [_data(layout, names.outbox(code)) for code in layout.writers]
    topics += [_data(layout, names.up(child)) for child in layout.children]
    topics.append(_data(layout, names.inbox))
    topics.append(_topic(layout, names.refused, REFUSED_CONFIGS))
    topics += [_data(layout, names.down(child)) for child in layout.children]
    topics += [_data(layout, names.deliver(code)) for code in layout.departments]
    topics += [_data(layout, names.feedback_for(code)) for code in layout.reporters]
    topics.append(_state(layout, names.grants))
    topics += [_state(layout, names.grants_from(child)) for child in layout.children]
    topics += [_state(layout, name) for name in (names.stats, names.quality)]
    topics.append(_state(layout, names.feedback))
    if layout.provenance:
        topics.append(_state(layout, names.trust))
        topics += [_state(layout, names.trust_from(child)) for child in layout.children]
    audit = audit_topic(layout)
    if audit is not None:
        topics.append(audit)
    me = node_principal(layout.region)
    acls = _own_cluster_acls(me, layout.node_id, names)
    for code in layout.writers:  # each publishes to its own outbox, and to no other
        acls += _allow(
            department_principal(code), Resource.TOPIC, Pattern.LITERAL, names.outbox(code),
            "WRITE", "DESCRIBE_CONFIGS",
        )  # fmt: skip
    for code in layout.departments:
        acls += _department_acls(department_principal(code), code, names)
    for code in layout.reporters:  # a department reads the reports and statuses meant for it
        acls += _allow(
            department_principal(code), Resource.TOPIC, Pattern.LITERAL, names.feedback_for(code),
            "READ", "DESCRIBE",
        )  # fmt: skip
    for child in layout.children:
        acls += _child_acls(node_principal(child), child, names, provenance=layout.provenance)
    if audit is not None:
        for auditor in layout.auditors:
            acls += _allow(auditor, Resource.TOPIC, Pattern.LITERAL, audit.name, "READ", "DESCRIBE")
    return Desired(LOCAL, names.prefix, tuple(topics), frozenset(acls), owned=True, principal=me)


def desired_parent(layout: NodeLayout) -> Desired | None:
    """Return what the parent's cluster should hold for this node; None at the root."""
    names = layout.parent
    if names is None:
        return None
    topics = [
        _data(layout, names.up(layout.region)),
        _data(layout, names.down(layout.region)),
        _state(layout, names.grants),
        _state(layout, names.grants_from(layout.region)),
    ]
    if layout.provenance:
        topics += [_state(layout, names.trust), _state(layout, names.trust_from(layout.region))]
    me = node_principal(layout.region)
    acls = _child_acls(me, layout.region, names, provenance=layout.provenance)
    acls += _allow(me, Resource.GROUP, Pattern.PREFIXED, node_groups(layout.node_id), "READ")
    return Desired(PARENT, names.prefix, tuple(topics), frozenset(acls), owned=False, principal=me)


def audit_configs(retention_days: int) -> dict[str, str]:
    """Return the configs of an audit topic keeping entries ``retention_days`` days."""
    return {"cleanup.policy": "delete", "retention.ms": str(retention_days * DAY_MS)}


def audit_topic(layout: NodeLayout) -> TopicSpec | None:
    """Return the node's audit topic as it needs it; None when the audit trail is off."""
    if layout.audit_retention_days is None:
        return None
    return TopicSpec(
        layout.local.audit(layout.node_id), AUDIT_PARTITIONS, layout.replication_factor,
        audit_configs(layout.audit_retention_days),
    )  # fmt: skip


def _topic(layout: NodeLayout, name: str, configs: Mapping[str, str]) -> TopicSpec:
    return TopicSpec(
        name, layout.partitions, layout.replication_factor, dict(configs),
        compacted=configs.get("cleanup.policy") == "compact",
    )  # fmt: skip


def _data(layout: NodeLayout, name: str) -> TopicSpec:
    return _topic(layout, name, DATA_CONFIGS)


def _state(layout: NodeLayout, name: str) -> TopicSpec:
    return _topic(layout, name, STATE_CONFIGS)


def _allow(
    principal: str, resource: Resource, pattern: Pattern, name: str, *operations: str
) -> list[Acl]:
    return [Acl(principal, resource, pattern, name, Operation(op)) for op in operations]


def _own_cluster_acls(principal: str, node_id: str, names: Namespace) -> list[Acl]:
    """Give the node everything in its own cluster's topic namespace, and its groups."""
    topics = f"{names.prefix}."
    ops = ("READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS", "CREATE")
    acls = _allow(principal, Resource.TOPIC, Pattern.PREFIXED, topics, *ops)
    return acls + _allow(principal, Resource.GROUP, Pattern.PREFIXED, node_groups(node_id), "READ")


def _department_acls(principal: str, code: str, names: Namespace) -> list[Acl]:
    """Let a consumer department read its own delivery topic in its groups."""
    acls = _allow(
        principal, Resource.TOPIC, Pattern.LITERAL, names.deliver(code), "READ", "DESCRIBE"
    )
    return acls + _allow(
        principal, Resource.GROUP, Pattern.PREFIXED, department_groups(code), "READ"
    )


def _child_acls(principal: str, child: str, names: Namespace, *, provenance: bool) -> list[Acl]:
    """Let a child's node hand up to its own topics (records, grants, keys), read its share."""
    topic, literal = Resource.TOPIC, Pattern.LITERAL
    acls = _allow(principal, topic, literal, names.up(child), "WRITE", "DESCRIBE_CONFIGS")
    acls += _allow(principal, topic, literal, names.down(child), "READ")
    acls += _allow(principal, topic, literal, names.grants_from(child), "WRITE", "DESCRIBE_CONFIGS")
    acls += _allow(principal, topic, literal, names.grants, "READ")
    if provenance:
        acls += _allow(
            principal, topic, literal, names.trust_from(child), "WRITE", "DESCRIBE_CONFIGS"
        )
        acls += _allow(principal, topic, literal, names.trust, "READ")
    return acls


def plan(desired: Desired, actual: ClusterState) -> ClusterPlan:
    """Compare ``desired`` with ``actual``: the actions to take, what is in place, the warnings."""
    actions: list[Action] = []
    warnings: list[str] = []
    in_place: list[str] = []
    for spec in desired.topics:
        found = actual.topics.get(spec.name)
        if found is None:
            actions.append(CreateTopic(spec))
            continue
        changes, notes = _topic_drift(spec, found, owned=desired.owned)
        actions += changes
        warnings += notes
        if not changes and not notes:
            in_place.append(spec.name)
    warnings += _extra_topics(desired, actual)
    acls_in_place: tuple[Acl, ...] = ()
    if actual.acls is not None:
        acls_in_place = tuple(sorted(desired.acls & actual.acls))
        actions += [CreateAcl(acl) for acl in sorted(desired.acls - actual.acls)]
        warnings += [_extra_acl(acl) for acl in sorted(_acls_in_scope(desired, actual.acls))]
    return ClusterPlan(
        desired, tuple(actions), tuple(warnings), tuple(in_place), acls_in_place,
        acls_enforced=actual.acls is not None,
    )  # fmt: skip


def _topic_drift(
    spec: TopicSpec, found: TopicState, *, owned: bool
) -> tuple[list[Action], list[str]]:
    """Return the actions (own topics) or warnings (the parent's) for a topic that exists."""
    actions: list[Action] = []
    warnings: list[str] = []
    owner = "" if owned else " (the parent's topic: its own plan changes it)"
    if found.partitions < spec.partitions:
        if owned and not spec.compacted:
            actions.append(AddPartitions(spec.name, found.partitions, spec.partitions))
        else:
            why = owner or " (a state topic: keys would move and old values never be compacted)"
            warnings.append(
                f"{spec.name} has {found.partitions} partitions, {spec.partitions} wanted; "
                f"left as is{why}"
            )
    elif found.partitions > spec.partitions:
        warnings.append(
            f"{spec.name} has {found.partitions} partitions, {spec.partitions} wanted; "
            "partitions are never removed"
        )
    if found.replication_factor != spec.replication_factor:
        warnings.append(
            f"{spec.name} has replication factor {found.replication_factor}, "
            f"{spec.replication_factor} wanted; change it by reassigning partitions"
        )
    changes = tuple(
        (key, found.configs.get(key), value)
        for key, value in sorted(spec.configs.items())
        if found.configs.get(key) != value
    )
    if changes and owned:
        configs = {**found.overrides, **{key: new for key, _, new in changes}}
        actions.append(AlterConfigs(spec.name, changes, configs))
    elif changes:
        said = ", ".join(f"{key}={old} ({new} wanted)" for key, old, new in changes)
        warnings.append(f"{spec.name} has {said}{owner}")
    return actions, warnings


def _extra_topics(desired: Desired, actual: ClusterState) -> list[str]:
    """Topics of the node's own namespace that its configuration does not need."""
    if not desired.owned:
        return []
    wanted = {spec.name for spec in desired.topics}
    extra = sorted(
        name
        for name in actual.topics
        if name.startswith(f"{desired.prefix}.") and name not in wanted
    )
    return [f"{name} exists but is not needed by this configuration; left alone" for name in extra]


def _acls_in_scope(desired: Desired, actual: Iterable[Acl]) -> set[Acl]:
    """Existing ACLs this plan speaks for, but does not contain.

    On the node's own cluster: those on its topic namespace or on any resource the plan names. On
    the parent's: those of this node's principal.
    """
    resources = {(acl.resource, acl.pattern, acl.name) for acl in desired.acls}
    namespace = f"{desired.prefix}."

    def ours(acl: Acl) -> bool:
        if not desired.owned:
            return acl.principal == desired.principal
        in_namespace = acl.resource is Resource.TOPIC and acl.name.startswith(namespace)
        return in_namespace or (acl.resource, acl.pattern, acl.name) in resources

    return {acl for acl in actual if ours(acl) and acl not in desired.acls}


def _extra_acl(acl: Acl) -> str:
    why = "; a DENY overrides the planned ALLOWs" if acl.permission is Permission.DENY else ""
    return f"ACL not in the plan, left alone: {acl}{why}"
