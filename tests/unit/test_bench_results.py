"""A benchmark run narrowed by its options never replaces the committed figures of a full run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.benchmark_modules import load


def _common() -> ModuleType:
    return load("common")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bridges", default="raw,node,mm2")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--no-kafka", dest="kafka", action="store_false")
    return parser


@pytest.mark.parametrize(
    ("argv", "partial"),
    [
        ([], False),
        (["--quick"], False),
        (["--bridges", "node"], True),
        (["--rounds", "1"], True),
        (["--no-kafka"], True),
        (["--bridges", "raw,node,mm2"], False),  # the default, given explicitly
    ],
)
def test_a_run_is_narrowed_by_any_option_but_quick(argv: list[str], partial: bool) -> None:
    """Only ``--quick`` and the defaults leave a run whole."""
    parser = _parser()
    assert _common().narrowed(parser, parser.parse_args(argv)) is partial


@pytest.mark.parametrize(
    ("marks", "name"),
    [
        ({}, "demo.json"),
        ({"quick": True}, "demo-quick.json"),
        ({"partial": True}, "demo-partial.json"),
        ({"quick": True, "partial": True}, "demo-quick.json"),
    ],
)
def test_quick_and_partial_runs_write_beside_the_full_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marks: dict[str, bool], name: str
) -> None:
    """A quick or partial run writes NAME-quick.json or NAME-partial.json, never NAME.json."""
    common = _common()
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    path = common.write("demo", {"figure": 1, **marks})
    assert path == tmp_path / name
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert json.loads(path.read_text())["figure"] == 1
