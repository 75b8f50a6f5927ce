"""The topic naming convention and creating the topics a node needs.

On each cluster, under the node's topic prefix (default ``cascade``):

=======================  ============================================================
``PREFIX.outbox``        records to route at this level: published by its departments,
                         or handed up by a child's node
``PREFIX.down.REGION``   records handed down to the node of child region ``REGION``
``PREFIX.inbox``         records delivered to this level
``PREFIX.refused``       refused records, with reason headers (the dead-letter topic)
``PREFIX.deliver.DEPT``  records delivered to department ``DEPT`` of this level
``PREFIX.grants``        grant requests, approvals, rejections, revocations (compacted)
=======================  ============================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from node.errors import TransportError


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The topic names of one cluster's exchange namespace."""

    prefix: str

    @property
    def outbox(self) -> str:
        """Records to route at this level."""
        return f"{self.prefix}.outbox"

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
        """Grant events, compacted by grant id."""
        return f"{self.prefix}.grants"

    def deliver(self, department: str) -> str:
        """Return the delivery topic of a department of this level."""
        return f"{self.prefix}.deliver.{department}"

    def down(self, child: str) -> str:
        """Return the hand-over topic for the node of ``child``."""
        return f"{self.prefix}.down.{child}"


async def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    replication_factor: int,
    configs: dict[str, str] | None = None,
) -> list[str]:
    """Create whichever of ``names`` do not exist yet; return the ones created.

    Raises TransportError if the cluster cannot be reached or refuses.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="exchange-node-admin")
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
