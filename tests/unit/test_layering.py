"""The functional core imports nothing that does I/O, reads the clock or logs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "node" / "core"
FORBIDDEN = {"aiokafka", "aiohttp", "asyncio", "time", "datetime", "logging", "structlog",
             "prometheus_client", "socket", "node.kafka", "node.ops", "node.app"}  # fmt: skip


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_no_shell(path: Path) -> None:
    """No module of node/core imports Kafka, HTTP, asyncio, the clock, logging or the shell."""
    bad = {
        name for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }  # fmt: skip
    assert not bad, f"{path.name} imports {sorted(bad)}"
