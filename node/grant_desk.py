"""The grant desk: requests, approvals, rejections and revocations, checked and written to Kafka.

The consuming department requests at its own node; the providing side decides at the node of the
resource's source region (where the request arrives through the cascade). Each step is written as
a new version of the grant to the local grants topic; the store and the relays do the rest. A
version is this node's clock in ms (one more than the last, if that is later), ``origin`` this
node's region: what the neighbours check (``node.core.grants.handed_up_refusal``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace

from node.core.catalog import Catalog
from node.core.envelope import Sharing
from node.core.grants import NEXT_STATUSES, Grant, GrantStatus
from node.core.policy import Department
from node.errors import GrantProblem, GrantRefused, TransportError
from node.transport import Message, RecordSink

DAY_MS = 86_400_000
WRITE_TIMEOUT_S = 10.0


class GrantDesk:
    """Checks grant operations against the catalog and this node's departments, then records."""

    def __init__(
        self,
        region: str,
        catalog: Catalog,
        departments: tuple[Department, ...],
        grants: Callable[[], Mapping[str, Grant]],
        sink: RecordSink,
        topic: str,
        *,
        default_validity_days: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.region = region
        self._catalog = catalog
        self._departments = {department.code: department for department in departments}
        self._grants = grants
        self._sink = sink
        self._topic = topic
        self._validity_ms = default_validity_days * DAY_MS
        self._clock = clock

    def known(self, status: str | None = None) -> list[Grant]:
        """Return every grant this node knows, newest first, optionally of one status."""
        grants = sorted(self._grants().values(), key=lambda g: g.version, reverse=True)
        return [g for g in grants if status is None or g.status.value == status]

    def get(self, grant_id: str) -> Grant:
        """Return one grant; 404 if unknown."""
        grant = self._grants().get(grant_id)
        if grant is None:
            raise GrantRefused(GrantProblem.UNKNOWN, f"unknown grant {grant_id!r}")
        return grant

    async def request(
        self, resource: str, consumer_dept: str, items: list[str] | None, note: str = ""
    ) -> Grant:
        """Record a department's request for a conditional resource."""
        entry = self._catalog.get(resource)
        if entry is None:
            raise GrantRefused(GrantProblem.UNKNOWN, f"unknown resource {resource!r}")
        if entry.sharing is not Sharing.CONDITIONAL:
            raise GrantRefused(
                GrantProblem.BAD_REQUEST,
                f"{resource} is {entry.sharing.value}: only conditional resources are granted",
            )
        if consumer_dept not in self._departments:
            known = ", ".join(sorted(self._departments)) or "none configured"
            raise GrantRefused(
                GrantProblem.UNKNOWN,
                f"unknown consumer department {consumer_dept!r} at {self.region} (known: {known})",
            )
        catalogued = [item.name for item in entry.items]
        unknown = sorted(set(items or ()) - set(catalogued))
        if unknown:
            raise GrantRefused(
                GrantProblem.BAD_REQUEST,
                f"{resource} has no information items {', '.join(unknown)}",
            )
        chosen = tuple(i for i in catalogued if i in set(items or ())) if items else ()
        grant = Grant(
            grant_id=str(uuid.uuid4()), resource=resource, consumer_dept=consumer_dept,
            consumer_region=self.region, items=chosen, expires_ms=0,
            status=GrantStatus.REQUESTED, version=self._now_ms(), note=note, origin=self.region,
        )  # fmt: skip
        await self._write(grant)
        return grant

    async def decide(
        self, grant_id: str, status: GrantStatus, note: str = "", validity_days: int | None = None
    ) -> Grant:
        """Approve, reject or revoke; only at the node of the resource's source region."""
        grant = self.get(grant_id)
        entry = self._catalog.get(grant.resource)
        source = entry.source_region if entry else "?"
        if source != self.region:
            raise GrantRefused(
                GrantProblem.NOT_HERE,
                f"{grant.resource} is provided by {source}: decide there, not at {self.region}",
            )
        if status not in NEXT_STATUSES[grant.status]:
            raise GrantRefused(
                GrantProblem.CONFLICT,
                f"grant {grant_id} is {grant.status.value}; it cannot become {status.value}",
            )
        now = self._now_ms()
        expires = grant.expires_ms
        if status is GrantStatus.APPROVED:
            expires = now + (validity_days * DAY_MS if validity_days else self._validity_ms)
        updated = replace(
            grant, status=status, version=max(now, grant.version + 1), expires_ms=expires,
            note=note or grant.note, origin=self.region,
        )  # fmt: skip
        await self._write(updated)
        return updated

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def _write(self, grant: Grant) -> None:
        message = Message(self._topic, grant.grant_id.encode(), grant.to_json(), [])
        try:
            [rejected] = await asyncio.wait_for(self._sink.deliver([message]), WRITE_TIMEOUT_S)
        except (TimeoutError, TransportError) as error:
            await self._sink.reset()
            raise GrantRefused(
                GrantProblem.UNAVAILABLE, f"grants topic unreachable, nothing recorded: {error}"
            ) from error
        if rejected is not None:
            raise GrantRefused(
                GrantProblem.UNAVAILABLE, f"grants topic rejected the grant: {rejected}"
            )
