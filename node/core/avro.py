"""Avro values in single-object encoding: the framing every resource record uses.

A value is ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
parsing canonical form + the Avro binary body. The fingerprint names the schema, so no registry is
needed: every node parses the same schemas once at start-up.

Pure: schemas arrive as parsed JSON definitions; reading them from files is ``node.codec``'s job.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import (
    SchemaParseException,
    UnknownType,
    fingerprint,
    to_parsing_canonical_form,
)
from fastavro.validation import ValidationError, validate

from node.errors import PayloadError, SchemaError

MAGIC = b"\xc3\x01"
_DECODE_ERRORS = (
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    UnicodeDecodeError,
    OverflowError,
)  # fmt: skip  -- what fastavro raises on bytes that are not a datum of the schema
HEADER_SIZE = len(MAGIC) + 8


@dataclass(frozen=True, slots=True)
class Schema:
    """One parsed writer schema."""

    name: str
    parsed: Any
    fingerprint: bytes
    definition: Any = None


class SchemaSet:
    """The known resource schemas, by full name and by fingerprint."""

    def __init__(self, schemas: Mapping[str, Schema]) -> None:
        self.by_name = dict(schemas)
        self.by_fingerprint = {schema.fingerprint: schema for schema in schemas.values()}
        self._projections: dict[tuple[str, tuple[str, ...]], Schema] = {}

    @classmethod
    def from_definitions(cls, definitions: Mapping[str, Any]) -> SchemaSet:
        """Parse schema definitions keyed by where they came from; SchemaError names the bad one."""
        schemas: dict[str, Schema] = {}
        for origin, definition in definitions.items():
            try:
                schema = cls.parse(definition)
            except (ValueError, TypeError, KeyError, SchemaParseException, UnknownType) as error:
                raise SchemaError(f"{origin}: {error}") from error
            if schema.name in schemas:
                raise SchemaError(f"{origin}: schema {schema.name} is defined twice")
            schemas[schema.name] = schema
        if not schemas:
            raise SchemaError("no schemas given")
        return cls(schemas)

    @staticmethod
    def parse(definition: Any) -> Schema:
        """Parse one schema definition (a JSON value)."""
        parsed = parse_schema(definition)
        canonical = to_parsing_canonical_form(parsed)
        name = parsed["name"] if isinstance(parsed, dict) else str(parsed)
        return Schema(
            name, parsed, bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")), definition
        )

    def projection(self, name: str, items: tuple[str, ...]) -> Schema:
        """Return schema ``name`` cut down to the fields in ``items`` (in the schema's order).

        Deterministic, so a consumer that knows the base schema and the item list (the
        ``cx-projection`` header) derives the same schema and fingerprint.
        """
        key = (name, items)
        projected = self._projections.get(key)
        if projected is None:
            base = self.by_name[name].definition
            fields = [field for field in base["fields"] if field["name"] in items]
            projected = self._projections[key] = self.parse({**base, "fields": fields})
        return projected

    def project(self, value: bytes, items: tuple[str, ...]) -> bytes:
        """Re-encode a framed value keeping only ``items``; raise PayloadError if undecodable."""
        name, datum = self.decode(value)
        schema = self.projection(name, items)
        buffer = io.BytesIO()
        buffer.write(MAGIC + schema.fingerprint)
        schemaless_writer(buffer, schema.parsed, {k: v for k, v in datum.items() if k in items})
        return buffer.getvalue()

    def encode(self, name: str, datum: Mapping[str, Any]) -> bytes:
        """Encode ``datum`` with schema ``name``; raise PayloadError if it does not fit."""
        schema = self.by_name.get(name)
        if schema is None:
            raise PayloadError(f"unknown schema {name!r}")
        buffer = io.BytesIO()
        buffer.write(MAGIC + schema.fingerprint)
        try:
            validate(datum, schema.parsed, raise_errors=True)
            schemaless_writer(buffer, schema.parsed, datum)
        except (ValueError, TypeError, KeyError, AttributeError, ValidationError) as error:
            raise PayloadError(f"record does not fit schema {name}: {error}") from error
        return buffer.getvalue()

    def schema_of(self, value: bytes) -> Schema:
        """Return the writer schema a framed value names; raise PayloadError if none."""
        if len(value) < HEADER_SIZE or value[:2] != MAGIC:
            raise PayloadError("value is not Avro single-object encoded (no C3 01 marker)")
        schema = self.by_fingerprint.get(value[2:HEADER_SIZE])
        if schema is None:
            raise PayloadError(f"unknown schema fingerprint {value[2:HEADER_SIZE].hex()}")
        return schema

    def decode(self, value: bytes) -> tuple[str, dict[str, Any]]:
        """Decode a framed value into (schema name, record); raise PayloadError if it cannot."""
        schema = self.schema_of(value)
        buffer = io.BytesIO(value)
        buffer.seek(HEADER_SIZE)
        try:
            datum = schemaless_reader(buffer, schema.parsed, None)
        except _DECODE_ERRORS as error:
            raise PayloadError(f"value does not decode as {schema.name}: {error!r}") from error
        if buffer.tell() != len(value):
            raise PayloadError(
                f"value has {len(value) - buffer.tell()} bytes after the {schema.name} datum"
            )
        if not isinstance(datum, dict):
            raise PayloadError(f"{schema.name} value is not a record")
        return schema.name, datum
