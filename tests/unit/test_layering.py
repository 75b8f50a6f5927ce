"""The functional core imports nothing that does I/O, reads the clock or logs, directly or not.

Imports are followed through every ``node.*`` module the core reaches, so a core module cannot
borrow I/O through a helper in the shell. fastavro is allowed (pure encoding over bytes).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "node" / "core"
FORBIDDEN = {
    "aiokafka", "aiohttp", "asyncio", "time", "datetime", "logging", "structlog",
    "prometheus_client", "socket", "os", "pathlib", "importlib", "tomllib", "subprocess",
    "threading", "random", "uuid", "node.kafka", "node.ops", "node.app", "node.cli",
    "node.codec", "node.config", "node.catalog_files", "node.grant_desk", "node.transport",
    "node.supervisor",
}  # fmt: skip


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def source_of(module: str) -> Path | None:
    """The file of a ``node.*`` module, or None for anything else."""
    if module != "node" and not module.startswith("node."):
        return None
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reachable_imports(path: Path) -> dict[str, str]:
    """Every module imported from ``path`` or the ``node.*`` modules it reaches, and by which."""
    found: dict[str, str] = {}
    pending, seen = [path], {path}
    while pending:
        current = pending.pop()
        for name in imported_modules(current):
            found.setdefault(name, current.name)
            module_path = source_of(name)
            if module_path is not None and module_path not in seen:
                seen.add(module_path)
                pending.append(module_path)
    return found


def forbidden(name: str) -> bool:
    """Tell whether the core may not import ``name``."""
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_reaches_no_shell(path: Path) -> None:
    """No module of node/core reaches Kafka, HTTP, asyncio, the clock, files, logging or the shell."""
    bad = {name: by for name, by in reachable_imports(path).items() if forbidden(name)}
    assert not bad, f"{path.name} reaches {bad}"


def test_the_check_catches_an_indirect_import(tmp_path: Path) -> None:
    """A module importing only the shell's codec is caught for what the codec imports."""
    module = tmp_path / "sneaky.py"
    module.write_text("from node.codec import MAGIC\n", encoding="utf-8")
    reached = reachable_imports(module)
    assert reached["pathlib"] == "codec.py"
    assert {name for name in reached if forbidden(name)} >= {"node.codec", "pathlib", "importlib"}
