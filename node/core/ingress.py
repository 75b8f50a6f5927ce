"""Ingress validation: the checks a record passes once, where it enters the cascade.

A record is freshly published when its hop path is empty. Only then does the node parse the whole
envelope and decode the value; every later hop passes the bytes through untouched.
"""

from __future__ import annotations

from node.core.avro import SchemaSet
from node.core.catalog import Catalog
from node.core.envelope import Envelope, Headers
from node.core.outcome import Reason, Refused
from node.errors import EnvelopeError, PayloadError


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
    sharing rules).
    """
    try:
        envelope = Envelope.from_headers(headers)
    except EnvelopeError as error:
        return Refused(Reason.BAD_ENVELOPE, str(error))
    if envelope.source_region != region:
        return Refused(
            Reason.BAD_ENVELOPE,
            f"header cx-source-region: {envelope.source_region} but published at {region}",
        )
    if schemas is not None:
        if value is None:
            return Refused(Reason.BAD_PAYLOAD, "record has no value")
        try:
            name, _ = schemas.decode(value)
        except PayloadError as error:
            return Refused(Reason.BAD_PAYLOAD, str(error))
        entry = catalog.get(envelope.resource) if catalog is not None else None
        if entry is not None and entry.schema != name:
            return Refused(
                Reason.BAD_PAYLOAD,
                f"value is a {name}, but {entry.code} is catalogued as {entry.schema}",
            )
    return None
