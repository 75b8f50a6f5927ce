"""Checking catalog entries against the Avro schemas: pure, from parsed documents to a Catalog.

A catalog document is what one TOML file parses to: ``[[resource]]`` tables, one per entry. Every
problem is reported with its file, resource code and field; a catalog with any problem is unusable
and the node refuses to start on it. Reading the files is ``node.catalog_files``'s job.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from node.core.avro import SchemaSet
from node.core.catalog import (
    ITEM_TYPES,
    Catalog,
    InformationItem,
    Openness,
    Resource,
    UpdateCycle,
)  # fmt: skip
from node.core.envelope import MAX_GRADE, MIN_GRADE, Sharing
from node.core.quality import enum_problems, read_quality
from node.core.topology import is_region_code


@dataclass(frozen=True, slots=True)
class CatalogProblem:
    """One thing wrong in a catalog file."""

    file: str
    code: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.code} {self.field}: {self.message}"


def check_documents(
    documents: Mapping[str, Any], schemas: SchemaSet
) -> tuple[Catalog, list[CatalogProblem]]:
    """Check parsed catalog documents (by file name); return the usable catalog and all problems."""
    problems: list[CatalogProblem] = []
    entries: dict[str, Resource] = {}
    for file, document in documents.items():
        for index, table in enumerate(document.get("resource", [])):
            reader = _EntryReader(file, index, table)
            entry = reader.resource()
            problems.extend(reader.problems)
            if entry is None:
                continue
            if entry.code in entries:
                problems.append(CatalogProblem(file, entry.code, "code", "duplicate code"))
                continue
            schema_problems = list(_check_against_schema(entry, schemas))
            problems.extend(CatalogProblem(file, entry.code, f, m) for f, m in schema_problems)
            entries[entry.code] = entry
    return Catalog(entries), problems


class _EntryReader:
    """Reads one ``[[resource]]`` table, collecting problems instead of stopping at the first."""

    def __init__(self, file: str, index: int, table: Any) -> None:
        self.file = file
        self.table = table if isinstance(table, dict) else {}
        code = self.table.get("code")
        self.code = code if isinstance(code, str) and code else f"resource[{index}]"
        self.problems: list[CatalogProblem] = []

    def problem(self, field: str, message: str) -> None:
        self.problems.append(CatalogProblem(self.file, self.code, field, message))

    def text(
        self, field: str, *, required: bool = True, table: dict[str, Any] | None = None
    ) -> str:
        value = (self.table if table is None else table).get(field, "" if not required else None)
        if not isinstance(value, str) or (required and not value):
            self.problem(field, f"expected a non-empty string, got {value!r}")
            return ""
        return value

    def choice(self, field: str, kind: type[Any], default: str | None = None) -> Any:
        value = self.table.get(field, default)
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(member.value for member in kind)
            self.problem(field, f"{value!r} is not one of {allowed}")
            return None

    def resource(self) -> Resource | None:
        code = self.text("code")
        source = self.table.get("source")
        if not isinstance(source, dict):
            self.problem("source", "expected { department = ..., region = ... }")
            source = {}
        department = self.text("department", table=source)
        region = self.text("region", table=source)
        if region and not is_region_code(region):
            self.problem("source.region", f"{region!r} is not a six-digit region code")
        sharing = self.choice("sharing", Sharing)
        legal_basis = self.text("legal_basis", required=False)
        if sharing is Sharing.NOT_SHARED and not legal_basis.strip():
            self.problem("legal_basis", "a not-shared resource must cite its legal basis")
        grade = self.table.get("grade")
        if (
            not isinstance(grade, int)
            or isinstance(grade, bool)
            or not MIN_GRADE <= grade <= MAX_GRADE
        ):
            self.problem("grade", f"expected an integer {MIN_GRADE}-{MAX_GRADE}, got {grade!r}")
        update_cycle, items = self.choice("update_cycle", UpdateCycle), self.items()
        quality, quality_problems = read_quality(
            self.table.get("quality"), {item.name: item.type for item in items},
            [item.name for item in items if item.required], update_cycle,
        )  # fmt: skip
        for field, message in quality_problems:
            self.problem(field, message)
        entry = Resource(
            code=code, name=self.text("name"), schema=self.text("schema"),
            source_dept=department, source_region=region, sharing=sharing,
            legal_basis=legal_basis, openness=self.choice("openness", Openness, "closed"),
            grade=grade if isinstance(grade, int) else 0,
            update_cycle=update_cycle, items=items, quality=quality,
        )  # fmt: skip
        return None if self.problems else entry

    def items(self) -> tuple[InformationItem, ...]:
        raw = self.table.get("items")
        if not isinstance(raw, list) or not raw:
            self.problem("items", "expected a non-empty array of { name, type, required }")
            return ()
        items = []
        for index, item in enumerate(raw):
            where = f"items[{index}]"
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                self.problem(where, "expected { name = ..., type = ..., required = ... }")
                continue
            kind, required = item.get("type"), item.get("required", True)
            if kind not in ITEM_TYPES:
                self.problem(
                    f"items.{item['name']}", f"type {kind!r} is not one of {', '.join(ITEM_TYPES)}"
                )
            if not isinstance(required, bool):
                self.problem(
                    f"items.{item['name']}", f"required must be true or false, got {required!r}"
                )
            items.append(InformationItem(item["name"], str(kind), bool(required)))
        names = [item.name for item in items]
        for name in {n for n in names if names.count(n) > 1}:
            self.problem(f"items.{name}", "listed twice")
        return tuple(items)


def _check_against_schema(entry: Resource, schemas: SchemaSet) -> Iterator[tuple[str, str]]:
    """Yield (field, problem) for every disagreement between the entry and its Avro schema."""
    schema = schemas.by_name.get(entry.schema)
    if schema is None:
        yield "schema", f"unknown schema {entry.schema!r}"
        return
    fields = {field["name"]: avro_item_type(field["type"]) for field in schema.parsed["fields"]}
    for item in entry.items:
        if item.name not in fields:
            yield f"items.{item.name}", f"not a field of {entry.schema}"
            continue
        kind, nullable = fields[item.name]
        if kind != item.type:
            yield f"items.{item.name}", f"type {item.type} in the catalog, {kind} in {entry.schema}"
        elif item.required and nullable:
            yield f"items.{item.name}", f"required in the catalog but nullable in {entry.schema}"
    listed = {item.name for item in entry.items}
    for name in fields.keys() - listed:
        yield f"items.{name}", f"field of {entry.schema} missing from the catalog"
    yield from enum_problems(entry.quality, _enum_symbols(schema.parsed["fields"]))


def _enum_symbols(fields: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Return the symbols of every (possibly nullable) enum field, by field name."""
    symbols = {}
    for field in fields:
        branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
        for branch in branches:
            if isinstance(branch, dict) and branch.get("type") == "enum":
                symbols[field["name"]] = list(branch["symbols"])
    return symbols


def avro_item_type(avro: Any) -> tuple[str, bool]:
    """Map an Avro field type to (catalog item type, nullable)."""
    if isinstance(avro, list):
        branches = [branch for branch in avro if branch != "null"]
        kind, _ = avro_item_type(branches[0]) if len(branches) == 1 else ("union", False)
        return kind, len(branches) < len(avro)
    if isinstance(avro, dict):
        logical = avro.get("logicalType")
        if logical == "date":
            return "date", False
        if logical in ("timestamp-millis", "timestamp-micros"):
            return "timestamp", False
        return (
            avro_item_type(avro["type"])
            if avro["type"] not in ("enum", "record", "array", "map", "fixed")
            else (avro["type"], False)
        )
    return str(avro), False
