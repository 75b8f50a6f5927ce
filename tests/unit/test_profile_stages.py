"""``benchmarks/profile_node.py`` puts each sample in the stage of the node's work it belongs to."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.benchmark_modules import load


@pytest.fixture
def profile_node(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script as a module, its neighbours (``bench_e2e``, ``common``) importable."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    return load("profile_node")


def _stack(*functions: str, count: int) -> str:
    frames = ";".join(f"{name} (node/somewhere.py:{line})" for line, name in enumerate(functions))
    return f"{frames} {count}"


def test_a_copys_audit_facts_are_the_audit_trails_though_gathered_while_accounting(
    profile_node: ModuleType,
) -> None:
    """Stages in ``STAGES`` order, shares of all samples; functions by self and total time."""
    raw = "\n".join([
        _stack("main", "Link._deliver", "Accountant.summarize", "audit_facts", "payload_digest",
               count=3),
        _stack("main", "Link._deliver", "Accountant.summarize", "Accountant._arrivals", count=1),
        _stack("main", "AuditWriter.flush", "AuditWriter._write", "KafkaSink.deliver", count=2),
        _stack("main", "PartitionOrder.write.<locals>.chained", "KafkaSink._write", count=4),
        _stack("main", "Handle._run", "something_else", count=10),
    ])  # fmt: skip
    profile = profile_node.profile_of(raw, top=3)
    assert len(profile_node.profile_of(raw, top=8)["total_pct"]) == 8
    assert profile["samples"] == 20
    assert profile["stages_pct"] == {
        profile_node.OTHER: 50.0,
        "producing (aiokafka's producer)": 20.0,
        "audit trail: facts of each copy": 15.0,
        "audit trail: chaining and writing": 10.0,
        "accounting, metrics and ledgers": 5.0,
    }
    assert profile["self_pct"] == {
        "something_else somewhere.py": 50.0,
        "KafkaSink._write somewhere.py": 20.0,
        "payload_digest somewhere.py": 15.0,
    }
    total = profile_node.profile_of(raw, top=None)["total_pct"]
    assert total["main somewhere.py"] == 100.0
    assert total["Accountant.summarize somewhere.py"] == 20.0


def test_every_stage_is_reachable_and_a_function_known_to_none_is_other(
    profile_node: ModuleType,
) -> None:
    """Each stage's first prefix leads to it; no samples give no shares (and no error)."""
    for stage, prefixes in profile_node.STAGES:
        assert profile_node.stage_of(["main", prefixes[0] + "x"]) == stage
    assert profile_node.stage_of(["main", "Handle._run"]) == profile_node.OTHER
    assert profile_node.profile_of("", top=5)["samples"] == 0
