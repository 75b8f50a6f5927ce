"""Records from JSON and back: what the gateway, ``exchange-node send`` and subscribers share.

``compose`` turns a JSON object into a framed value of a catalog resource's schema and wraps it in
a fresh envelope, after checking that the publishing department is the resource's one source.
Every problem is a ComposeError naming the field (``$.birth_date``) and what is wrong with it.
``to_json`` turns a decoded datum back into JSON-ready values (dates as ``YYYY-MM-DD``,
timestamps as ISO 8601 in UTC, bytes as hex).

JSON to Avro: ``date`` from ``YYYY-MM-DD``; ``timestamp-millis``/``-micros`` from ISO 8601 (a
naive time is taken as UTC) or from milliseconds since the epoch; enums from their symbol;
optional fields (a union with null) may be left out or null. Unknown fields are refused.

Pure: no I/O, no clock (``created_ms`` and ``record_id`` are passed in).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from node.core.avro import SchemaSet
from node.core.catalog import Catalog
from node.core.envelope import Envelope, Target
from node.errors import EnvelopeError, NodeError, PayloadError

_UTC = dt.UTC


class ComposeError(NodeError):
    """A JSON record cannot become a record of its resource; ``field`` says where."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Composed:
    """A record ready to publish: its envelope, framed value and key (the record id)."""

    envelope: Envelope
    value: bytes

    @property
    def key(self) -> bytes:
        """The Kafka key: the record id, so a record's versions stay in order."""
        return self.envelope.record_id.encode()


def compose(
    catalog: Catalog,
    schemas: SchemaSet,
    resource: str,
    record: Any,
    *,
    region: str,
    department: str,
    target: str,
    created_ms: int,
    record_id: str,
) -> Composed:
    """Check ``record`` against ``resource``'s schema and wrap it; raise ComposeError."""
    entry = catalog.get(resource)
    if entry is None:
        raise ComposeError("resource", f"{resource!r} is not in the catalog")
    if (entry.source_dept, entry.source_region) != (department, region):
        raise ComposeError(
            "resource",
            f"{resource} is published only by {entry.source_dept}@{entry.source_region}, "
            f"not {department}@{region}",
        )
    try:
        parsed_target = Target.parse(target)
    except EnvelopeError as error:
        raise ComposeError("target", str(error)) from None
    schema = schemas.by_name.get(entry.schema)
    if schema is None:
        raise ComposeError("resource", f"schema {entry.schema} of {resource} is not loaded")
    datum = _from_json(schema.parsed, record, "$")
    try:
        value = schemas.encode(entry.schema, datum)
    except PayloadError as error:
        raise ComposeError("$", str(error)) from None
    envelope = Envelope(
        record_id=record_id, resource=resource, source_region=region, source_dept=department,
        target=parsed_target, grade=entry.grade, sharing=entry.sharing, created_ms=created_ms,
    )  # fmt: skip
    return Composed(envelope, value)


def _from_json(schema: Any, value: Any, path: str) -> Any:  # noqa: PLR0912 - one branch per Avro type
    if isinstance(schema, list):
        if value is None and "null" in schema:
            return None
        branches = [s for s in schema if s != "null"]
        if len(branches) == 1:
            return _from_json(branches[0], value, path)
        for branch in branches:
            try:
                return _from_json(branch, value, path)
            except ComposeError:
                continue
        raise ComposeError(path, f"{_shown(value)} fits none of the union's types")
    kind = schema if isinstance(schema, str) else schema.get("type")
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    if value is None:
        if kind == "null":
            return None
        raise ComposeError(path, "is required (null or missing)")
    if logical == "date":
        return _date(value, path)
    if logical in ("timestamp-millis", "timestamp-micros"):
        return _timestamp(value, path)
    if kind == "record":
        return _record(schema, value, path)
    if kind == "enum":
        if value not in schema["symbols"]:
            raise ComposeError(
                path, f"{_shown(value)} is not one of {', '.join(schema['symbols'])}"
            )
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise ComposeError(path, "expected an array")
        return [_from_json(schema["items"], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise ComposeError(path, "expected an object")
        return {k: _from_json(schema["values"], v, f"{path}.{k}") for k, v in value.items()}
    return _primitive(kind, value, path)


def _record(schema: Mapping[str, Any], value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ComposeError(path, "expected an object")
    fields = {field["name"]: field for field in schema["fields"]}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ComposeError(f"{path}.{unknown[0]}", "is not a field of this resource")
    return {
        name: _from_json(field["type"], value.get(name), f"{path}.{name}")
        for name, field in fields.items()
    }


def _primitive(kind: Any, value: Any, path: str) -> Any:
    if kind == "string" and isinstance(value, str):
        return value
    if kind in ("int", "long") and isinstance(value, int) and not isinstance(value, bool):
        return value
    if (
        kind in ("float", "double")
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        try:
            return float(value)
        except OverflowError:
            raise ComposeError(path, f"{_shown(value)} is out of range for {kind}") from None
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "bytes" and isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise ComposeError(path, "bytes are given as hex") from None
    raise ComposeError(path, f"expected {kind}, got {_shown(value)}")


def _date(value: Any, path: str) -> dt.date:
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ComposeError(path, f"expected a date YYYY-MM-DD, got {_shown(value)}")


def _timestamp(value: Any, path: str) -> dt.datetime:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value / 1000, _UTC)
        except (OverflowError, OSError, ValueError):
            raise ComposeError(path, f"epoch ms {_shown(value)} is out of range") from None
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=_UTC)
    raise ComposeError(path, f"expected an ISO 8601 time or epoch ms, got {_shown(value)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def to_json(value: Any) -> Any:
    """Make a decoded datum JSON-ready: dates ISO, times ISO in UTC, bytes hex."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.astimezone(_UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value
