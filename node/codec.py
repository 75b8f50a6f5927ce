"""Loading the resource schemas from files into the core's ``SchemaSet``.

The framing itself (single-object encoding, projection) is pure and lives in ``node.core.avro``;
it is re-exported here for the shell's convenience.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from node.core.avro import HEADER_SIZE, MAGIC, Schema, SchemaSet
from node.errors import SchemaError

__all__ = ["HEADER_SIZE", "MAGIC", "Schema", "SchemaSet", "load_schemas", "packaged_schema_dir"]


def packaged_schema_dir() -> Path:
    """Return the shipped resource schemas: package data when installed, else the source tree's."""
    installed = Path(str(resources.files("node"))) / "schemas" / "resources"
    return (
        installed if installed.is_dir() else Path(__file__).parent.parent / "schemas" / "resources"
    )


def load_schemas(directory: Path) -> SchemaSet:
    """Parse every ``*.avsc`` in ``directory``; raise SchemaError naming the bad file."""
    if not directory.is_dir():
        raise SchemaError(f"{directory}: schema directory does not exist")
    definitions = {}
    for path in sorted(directory.glob("*.avsc")):
        try:
            definitions[str(path)] = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise SchemaError(f"{path}: {error}") from error
    if not definitions:
        raise SchemaError(f"{directory}: no *.avsc schema files")
    return SchemaSet.from_definitions(definitions)
