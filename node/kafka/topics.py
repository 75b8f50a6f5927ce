"""The topic naming convention and creating the topics a node needs.

On each cluster, under the node's topic prefix (default ``cascade``):

=======================  ============================================================
``PREFIX.outbox.DEPT``   records published by department ``DEPT`` of this level (only
                         ``DEPT`` may write it: fresh records from ``DEPT`` at this level)
``PREFIX.up.CHILD``      records and heartbeats handed up by the node of child region
                         ``CHILD`` (only that node may write it)
``PREFIX.down.REGION``   records handed down to the node of child region ``REGION``
``PREFIX.inbox``         records delivered to this level
``PREFIX.refused``       refused records, with reason headers (the dead-letter topic)
``PREFIX.deliver.DEPT``  records delivered to department ``DEPT`` of this level
``PREFIX.grants``        grant requests, approvals, rejections, revocations (compacted;
                         only the node writes it)
``PREFIX.grants.from.CHILD`` grant events of child ``CHILD``'s subtree, handed up by its node
                         (compacted; only that node writes it)
``PREFIX.trust``         public keys trusted for provenance, by region (compacted; only
                         the node writes it)
``PREFIX.trust.from.CHILD`` public keys of child ``CHILD``'s subtree, handed up by its node
                         (compacted; only that node writes it)
``PREFIX.stats``         exchange statistics in time buckets (compacted)
``PREFIX.quality``       quality pass/fail counts in time buckets (compacted)
``PREFIX.feedback``      correction feedback that passed this node: reports and their
                         status changes (compacted, one key per event)
``PREFIX.feedback.DEPT`` reports for source department ``DEPT``, status changes for
                         reporter ``DEPT``
``PREFIX.audit.NODE``    the audit trail of node ``NODE``: hash-chained entries, one
                         partition, long delete retention (only that node writes it)
=======================  ============================================================

The node reads every ``outbox.DEPT`` and ``up.CHILD`` of its level on one link
(``level_writers``), and knows who wrote a record from the topic it came from
(``node/core/writers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from node.core.writers import Writer, Writers
from node.errors import TransportError
from node.kafka.connection import Connection, client_options


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The topic names of one cluster's exchange namespace."""

    prefix: str

    def outbox(self, department: str) -> str:
        """Return the topic department ``department`` of this level publishes to."""
        return f"{self.prefix}.outbox.{department}"

    def up(self, child: str) -> str:
        """Return the topic the node of ``child`` hands records and heartbeats up to."""
        return f"{self.prefix}.up.{child}"

    @property
    def inbox(self) -> str:
        """Records delivered to this level."""
        return f"{self.prefix}.inbox"

    @property
    def refused(self) -> str:
        """Refused records (the dead-letter topic)."""
        return f"{self.prefix}.refused"

    @property
    def grants(self) -> str:
        """Grant events, compacted by grant id (only the node writes it)."""
        return f"{self.prefix}.grants"

    def grants_from(self, child: str) -> str:
        """Return the topic the node of ``child`` hands its subtree's grant events up to."""
        return f"{self.prefix}.grants.from.{child}"

    @property
    def trust(self) -> str:
        """Public keys this node trusts, compacted by ``REGION/KEY_ID`` (only the node writes)."""
        return f"{self.prefix}.trust"

    def trust_from(self, child: str) -> str:
        """Return the topic the node of ``child`` hands its subtree's public keys up to."""
        return f"{self.prefix}.trust.from.{child}"

    @property
    def stats(self) -> str:
        """Exchange statistics in time buckets, compacted by bucket and key."""
        return f"{self.prefix}.stats"

    @property
    def quality(self) -> str:
        """Quality checks passed and failed in time buckets, compacted by bucket and key."""
        return f"{self.prefix}.quality"

    @property
    def feedback(self) -> str:
        """Correction feedback that passed this node, compacted, one key per event."""
        return f"{self.prefix}.feedback"

    def feedback_for(self, department: str) -> str:
        """Return the feedback topic of a department of this level."""
        return f"{self.prefix}.feedback.{department}"

    def deliver(self, department: str) -> str:
        """Return the delivery topic of a department of this level."""
        return f"{self.prefix}.deliver.{department}"

    def down(self, child: str) -> str:
        """Return the hand-over topic for the node of ``child``."""
        return f"{self.prefix}.down.{child}"

    def audit(self, node_id: str) -> str:
        """Return the audit trail of node ``node_id``: its hash chain, one partition.

        Only that node's principal writes it (ACLs: WRITE for the node, READ for auditors).
        """
        return f"{self.prefix}.audit.{node_id}"


def level_writers(
    names: TopicNames, region: str, departments: Iterable[str], children: Iterable[str]
) -> Writers:
    """Return who may write each topic the node reads from below.

    Each department of the level its ``outbox.DEPT``, each child's node its ``up.CHILD``.
    """
    return Writers(region, [
        *(Writer(names.outbox(code), department=code) for code in sorted(departments)),
        *(Writer(names.up(child), child=child) for child in sorted(children)),
    ])  # fmt: skip


async def ensure_topics(
    bootstrap: Connection | str,
    names: Iterable[str],
    partitions: int,
    replication_factor: int,
    configs: dict[str, str] | None = None,
) -> list[str]:
    """Create whichever of ``names`` do not exist yet; return the ones created.

    Raises TransportError if the cluster cannot be reached or refuses.
    """
    admin = AIOKafkaAdminClient(**client_options(bootstrap), client_id="exchange-node-admin")
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = sorted(set(names) - existing)
        if missing:
            topics = [
                NewTopic(name, partitions, replication_factor, topic_configs=configs or {})
                for name in missing
            ]
            response = await admin.create_topics(topics)
            for name, code, message in _errors(response):
                if code != TopicAlreadyExistsError.errno:
                    raise TransportError(f"creating topic {name} on {bootstrap}: {message or code}")
    except KafkaError as error:
        raise TransportError(f"cluster {bootstrap}: {error!r}") from error
    finally:
        await admin.close()
    return missing


def _errors(response: object) -> list[tuple[str, int, str | None]]:
    errors = []
    for entry in getattr(response, "topic_errors", ()):
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        if code:
            errors.append((name, code, message))
    return errors


class TopicLimits:
    """Each topic's ``max.message.bytes`` on one cluster, read once and kept until forgotten."""

    def __init__(self, bootstrap: Connection | str, *, deadline_s: float = 30.0) -> None:
        self._bootstrap = bootstrap
        self._deadline_s = deadline_s
        self._known: dict[str, int] = {}

    async def max_message_bytes(self, topic: str) -> int:
        """Return the largest record batch ``topic`` accepts; raise TransportError if unknown."""
        known = self._known.get(topic)
        if known is None:
            known = self._known[topic] = await self._describe(topic)
        return known

    def forget(self, topic: str) -> None:
        """Read the limit again next time (the broker refused a batch the limit allowed)."""
        self._known.pop(topic, None)

    async def _describe(self, topic: str) -> int:
        admin = AIOKafkaAdminClient(
            **client_options(self._bootstrap), client_id="exchange-node-limits"
        )
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})
        try:
            await asyncio.wait_for(admin.start(), self._deadline_s)
            responses = await asyncio.wait_for(admin.describe_configs([resource]), self._deadline_s)
        except (KafkaError, TimeoutError) as error:
            raise TransportError(
                f"reading max.message.bytes of {topic} on {self._bootstrap}: {error!r}"
            ) from error
        finally:
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(admin.close(), 5)
        for response in responses:
            for code, message, _, name, entries in response.resources:
                if name != topic:
                    continue
                if code:
                    raise TransportError(f"describing {topic}: {message or code}")
                for key, value, *_ in entries:
                    if key == "max.message.bytes":
                        return int(value)
        raise TransportError(f"{self._bootstrap} did not say max.message.bytes of {topic}")
