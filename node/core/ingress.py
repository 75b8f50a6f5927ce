"""Ingress validation: the checks a record passes once, where it enters the cascade.

A record is freshly published when its hop path is empty. Only then does the node parse the whole
envelope, decode the value and check it against its resource's quality rules; every later hop
passes the bytes through untouched and reads the verdict from the ``cx-quality`` header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from node.core.avro import SchemaSet
from node.core.catalog import Catalog
from node.core.envelope import Envelope, Headers
from node.core.outcome import Reason, Refused
from node.core.quality import Verdict, check
from node.errors import EnvelopeError, PayloadError


@dataclass(frozen=True, slots=True)
class Entry:
    """What the entry checks say of a fresh record."""

    refusal: Refused | None = None
    """Why it may not enter; None: it may."""
    verdict: Verdict | None = None
    """Its quality verdict, when its resource has rules (also when they refuse it)."""


def admit(
    headers: Headers,
    value: bytes | None,
    region: str,
    schemas: SchemaSet | None,
    catalog: Catalog | None,
    now_ms: int,
) -> Entry:
    """Check a freshly published record: envelope, value, and its resource's quality rules.

    A failure of a rule its resource refuses on is Refused(QUALITY) naming every failure; other
    failures only flag the verdict, which travels with the record. The envelope is parsed and the
    value decoded once.
    """
    read = _read(headers, value, region, schemas, catalog)
    if isinstance(read, Refused):
        return Entry(read)
    envelope, datum = read
    entry = catalog.get(envelope.resource) if catalog else None
    if datum is None or entry is None or not entry.quality.checked:
        return Entry()
    verdict = check(entry.quality, datum, region, now_ms, created_ms=envelope.created_ms)
    if verdict.refused:
        return Entry(Refused(Reason.QUALITY, verdict.message()), verdict)
    return Entry(None, verdict)


def check_ingress(
    headers: Headers,
    value: bytes | None,
    region: str,
    schemas: SchemaSet | None,
    catalog: Catalog | None = None,
) -> Refused | None:
    """Return why a freshly published record must be refused, or None if it may enter.

    ``schemas`` is None when payload validation is switched off. With ``catalog``, the value must
    be a datum of the schema the catalog gives its resource (an unknown resource is left to the
    sharing rules). Quality rules are ``admit``'s.
    """
    read = _read(headers, value, region, schemas, catalog)
    return read if isinstance(read, Refused) else None


def _read(
    headers: Headers,
    value: bytes | None,
    region: str,
    schemas: SchemaSet | None,
    catalog: Catalog | None,
) -> Refused | tuple[Envelope, dict[str, Any] | None]:
    """Parse the envelope and decode the value (None when validation is off), or refuse."""
    try:
        envelope = Envelope.from_headers(headers)
    except EnvelopeError as error:
        return Refused(Reason.BAD_ENVELOPE, str(error))
    if envelope.source_region != region:
        return Refused(
            Reason.BAD_ENVELOPE,
            f"header cx-source-region: {envelope.source_region} but published at {region}",
        )
    if schemas is None:
        return envelope, None
    if value is None:
        return Refused(Reason.BAD_PAYLOAD, "record has no value")
    try:
        name, datum = schemas.decode(value)
    except PayloadError as error:
        return Refused(Reason.BAD_PAYLOAD, str(error))
    entry = catalog.get(envelope.resource) if catalog is not None else None
    if entry is not None and entry.schema != name:
        return Refused(
            Reason.BAD_PAYLOAD,
            f"value is a {name}, but {entry.code} is catalogued as {entry.schema}",
        )
    return envelope, datum
