"""Reading a cluster's topics and ACLs, and applying a provisioning plan to it.

The planning is ``node/core/provisioning.py``'s; this module only talks to Kafka, through
aiokafka's ``AIOKafkaAdminClient``: ``list_topics`` and ``describe_topics`` (metadata),
``describe_configs``, ``create_topics``, ``create_partitions`` and ``alter_configs``; each
answer's per-topic error codes are checked here (whether or not aiokafka raised on them). aiokafka
0.14's admin client has no ACL methods, but its protocol module has the DescribeAcls and CreateAcls
requests (v0-v1; Kafka 4 serves v1 and up): they are sent through the client's private
``_send_request`` (aiokafka is pinned below 0.15 in pyproject.toml). A cluster without an authorizer
answers DescribeAcls with SECURITY_DISABLED: its ACLs are then reported as not enforced.

Every call has a deadline; every failure is a TransportError naming the cluster and the action.
Applying is idempotent: a topic or ACL that appeared meanwhile counts as done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, SecurityDisabled, TopicAlreadyExistsError
from aiokafka.protocol.admin import CreateAclsRequest, DescribeAclsRequest

from node.config import NodeConfig
from node.core.provisioning import (
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
    TopicSpec,
    TopicState,
)
from node.errors import TransportError
from node.kafka.connection import Connection, client_options
from node.kafka.topics import TopicNames

T = TypeVar("T")

# Kafka's wire codes (org.apache.kafka.common.acl / resource)
_ANY = 1
_RESOURCES = {
    Resource.TOPIC: 2, Resource.GROUP: 3, Resource.CLUSTER: 4, Resource.TRANSACTIONAL_ID: 5,
    Resource.DELEGATION_TOKEN: 6, Resource.USER: 7,
}  # fmt: skip
_PATTERNS = {Pattern.LITERAL: 3, Pattern.PREFIXED: 4}
_OPERATIONS = {
    Operation.ALL: 2, Operation.READ: 3, Operation.WRITE: 4, Operation.CREATE: 5,
    Operation.DELETE: 6, Operation.ALTER: 7, Operation.DESCRIBE: 8, Operation.CLUSTER_ACTION: 9,
    Operation.DESCRIBE_CONFIGS: 10, Operation.ALTER_CONFIGS: 11, Operation.IDEMPOTENT_WRITE: 12,
    Operation.CREATE_TOKENS: 13, Operation.DESCRIBE_TOKENS: 14, Operation.TWO_PHASE_COMMIT: 15,
}  # fmt: skip
_PERMISSIONS = {Permission.DENY: 2, Permission.ALLOW: 3}
_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs v1+ config_source of a topic's own override


def layout_of(config: NodeConfig, reporters: Iterable[str] = ()) -> NodeLayout:
    """Return what the planner reads of ``config`` (``reporters``: departments with feedback)."""
    parent = TopicNames(config.parent.cluster.topic_prefix) if config.parent else None
    audit = config.audit
    return NodeLayout(
        config.node_id, config.topology.region, config.topology.children,
        tuple(department.code for department in config.departments),
        TopicNames(config.local.topic_prefix), parent, config.topics.partitions,
        config.topics.replication_factor, tuple(sorted(reporters)),
        provenance=config.provenance is not None,
        audit_retention_days=audit.retention_days if audit.enabled else None,
        auditors=audit.readers,
    )  # fmt: skip


class ClusterAdmin:
    """One admin connection to a cluster, for reading its state and applying a plan.

    Use as ``async with ClusterAdmin(...) as admin``; connecting waits at most ``deadline_s``, as
    does each request.
    """

    def __init__(
        self, cluster: str, bootstrap: Connection | str, *, deadline_s: float = 30.0
    ) -> None:
        self.cluster = cluster
        self.bootstrap = bootstrap
        self._deadline_s = deadline_s
        self._admin = AIOKafkaAdminClient(
            **client_options(bootstrap), client_id="exchange-node-topics",
            request_timeout_ms=int(deadline_s * 1000),
        )  # fmt: skip

    async def __aenter__(self) -> ClusterAdmin:
        try:
            await self._call("connecting", self._admin.start())
        except TransportError:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        with contextlib.suppress(KafkaError, TimeoutError, OSError):
            await asyncio.wait_for(self._admin.close(), 5)

    async def _call(self, action: str, call: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(call, self._deadline_s)
        except TimeoutError as error:
            raise TransportError(
                f"{self.cluster} cluster {self.bootstrap}: {action}: no answer in "
                f"{self._deadline_s:g} s"
            ) from error
        except (KafkaError, OSError) as error:
            raise TransportError(
                f"{self.cluster} cluster {self.bootstrap}: {action}: {error!r}"
            ) from error

    async def read(self, desired: Desired) -> ClusterState:
        """Return the cluster's topics (wanted ones and, if owned, the namespace's) and ACLs."""
        existing = set(await self._call("listing topics", self._admin.list_topics()))
        wanted = {spec.name for spec in desired.topics}
        names = sorted(
            name for name in existing
            if name in wanted or (desired.owned and name.startswith(f"{desired.prefix}."))
        )  # fmt: skip
        topics: dict[str, TopicState] = {}
        if names:
            described = await self._call("describing topics", self._admin.describe_topics(names))
            configs = await self._configs([name for name in names if name in wanted])
            for entry in described:
                name = entry["topic"]
                if entry["error_code"]:
                    raise TransportError(
                        f"{self.cluster} cluster {self.bootstrap}: describing topic {name}: "
                        f"error {entry['error_code']}"
                    )
                partitions = entry["partitions"]
                replicas = len(partitions[0]["replicas"]) if partitions else 0
                effective, overrides = configs.get(name, ({}, {}))
                topics[name] = TopicState(name, len(partitions), replicas, effective, overrides)
        return ClusterState(topics, await self._acls())

    async def _configs(
        self, names: Sequence[str]
    ) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
        """Each topic's effective configs and its own overrides."""
        if not names:
            return {}
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        responses = await self._call(
            "describing topic configs", self._admin.describe_configs(resources)
        )
        found: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        for response in responses:
            for code, message, _, name, entries in response.resources:
                if code:
                    raise TransportError(
                        f"{self.cluster} cluster {self.bootstrap}: describing configs of "
                        f"{name}: {message or code}"
                    )
                effective = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
                overrides = {
                    entry[0]: entry[1] for entry in entries
                    if entry[3] == _DYNAMIC_TOPIC_CONFIG and entry[1] is not None
                }  # fmt: skip
                found[name] = (effective, overrides)
        return found

    async def _acls(self) -> frozenset[Acl] | None:
        """Return every ACL of the cluster; None if it has no authorizer."""
        request = DescribeAclsRequest(_ANY, None, _ANY, None, None, _ANY, _ANY)
        response = await self._call("describing ACLs", self._send(request))
        if response.error_code == SecurityDisabled.errno:
            return None
        if response.error_code:
            raise TransportError(
                f"{self.cluster} cluster {self.bootstrap}: describing ACLs: "
                f"{response.error_message or response.error_code}"
            )
        return frozenset(_acls_of(response.resources))

    async def _send(self, request: Any) -> Any:
        return await self._admin._send_request(request)  # private: see the module docstring

    async def apply(self, plan: ClusterPlan) -> None:
        """Carry out ``plan``'s actions in order: topics, partitions, configs, then ACLs."""
        creates = [action.topic for action in plan.actions if isinstance(action, CreateTopic)]
        if creates:
            await self._create_topics(creates)
        for action in plan.actions:
            if isinstance(action, AddPartitions):
                await self._add_partitions(action)
            elif isinstance(action, AlterConfigs):
                await self._alter(action)
        for action in plan.actions:
            if isinstance(action, CreateAcl):
                await self._create_acl(action.acl)

    async def _create_topics(self, specs: Sequence[TopicSpec]) -> None:
        topics = [
            NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs))
            for s in specs
        ]
        names = ", ".join(s.name for s in specs)
        response = await self._call(
            f"creating topics {names}",
            self._admin.create_topics(topics, timeout_ms=int(self._deadline_s * 1000)),
        )
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            if code and code != TopicAlreadyExistsError.errno:
                message = entry[2] if len(entry) > 2 else None
                raise TransportError(
                    f"{self.cluster} cluster {self.bootstrap}: creating topic {name}: "
                    f"{message or code}"
                )

    async def _add_partitions(self, action: AddPartitions) -> None:
        what = f"adding partitions to {action.topic}"
        response = await self._call(
            what,
            self._admin.create_partitions(
                {action.topic: NewPartitions(action.total)},
                timeout_ms=int(self._deadline_s * 1000),
            ),
        )
        for _, code, message in response.topic_errors:
            if code:
                raise TransportError(
                    f"{self.cluster} cluster {self.bootstrap}: {what}: {message or code}"
                )

    async def _alter(self, action: AlterConfigs) -> None:
        what = f"altering configs of {action.topic}"
        resource = ConfigResource(ConfigResourceType.TOPIC, action.topic, dict(action.configs))
        responses = await self._call(what, self._admin.alter_configs([resource]))
        for response in responses:
            for code, message, *_ in response.resources:
                if code:
                    raise TransportError(
                        f"{self.cluster} cluster {self.bootstrap}: {what}: {message or code}"
                    )

    async def _create_acl(self, acl: Acl) -> None:
        what = f"creating ACL {acl}"
        request = CreateAclsRequest(
            _RESOURCES[acl.resource], acl.name, _PATTERNS[acl.pattern], acl.principal, acl.host,
            _OPERATIONS[acl.operation], _PERMISSIONS[acl.permission],
        )  # fmt: skip
        response = await self._call(what, self._send(request))
        for code, message in response.creation_responses:
            if code:
                raise TransportError(
                    f"{self.cluster} cluster {self.bootstrap}: {what}: {message or code}"
                )


def _acls_of(resources: Sequence[Any]) -> list[Acl]:
    """Translate DescribeAcls v1 resources (skipping codes unknown to Kafka 4.1)."""
    resource_of = {code: name for name, code in _RESOURCES.items()}
    pattern_of = {code: name for name, code in _PATTERNS.items()}
    operation_of = {code: name for name, code in _OPERATIONS.items()}
    permission_of = {code: name for name, code in _PERMISSIONS.items()}
    acls = []
    for resource_type, name, pattern_type, entries in resources:
        for principal, host, operation, permission in entries:
            parts = (
                resource_of.get(resource_type), pattern_of.get(pattern_type),
                operation_of.get(operation), permission_of.get(permission),
            )  # fmt: skip
            if None in parts:
                continue
            resource, pattern, op, allowed = parts
            acls.append(Acl(principal, resource, pattern, name, op, allowed, host))  # type: ignore[arg-type]
    return acls
