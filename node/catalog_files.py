"""Reading catalog files (TOML, ``schemas/catalog/*.toml``) and checking them with the core.

A file that cannot be read or parsed is a problem like any other: every one is reported with its
file, and a catalog with any problem is unusable.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import tomli

from node.core.avro import SchemaSet
from node.core.catalog import Catalog
from node.core.catalog_check import CatalogProblem, check_documents
from node.errors import CatalogError

__all__ = ["CatalogProblem", "load_catalog", "packaged_catalog_dir", "read_catalog"]


def packaged_catalog_dir() -> Path:
    """Return the shipped catalog: package data when installed, else the source tree's."""
    installed = Path(str(resources.files("node"))) / "schemas" / "catalog"
    return installed if installed.is_dir() else Path(__file__).parent.parent / "schemas" / "catalog"


def load_catalog(directory: Path, schemas: SchemaSet) -> Catalog:
    """Read and check every ``*.toml`` in ``directory``; raise CatalogError listing all problems."""
    catalog, problems = read_catalog(directory, schemas)
    if problems:
        raise CatalogError(problems)
    return catalog


def read_catalog(directory: Path, schemas: SchemaSet) -> tuple[Catalog, list[CatalogProblem]]:
    """Read and check the catalog; return what was usable and every problem found."""
    problems: list[CatalogProblem] = []
    documents: dict[str, Any] = {}
    files = sorted(directory.glob("*.toml")) if directory.is_dir() else []
    if not files:
        problems.append(CatalogProblem(str(directory), "-", "-", "no *.toml catalog files"))
    for path in files:
        try:
            documents[str(path)] = tomli.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as error:  # TOML, UTF-8, int size, nesting
            problems.append(CatalogProblem(str(path), "-", "-", f"unreadable: {error}"))
    catalog, found = check_documents(documents, schemas)
    return catalog, problems + found
