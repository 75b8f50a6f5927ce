"""The README's benchmark figures are the committed results JSON's, rendered by benchmarks/figures.py."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from tests.benchmark_modules import load

ROOT = Path(__file__).resolve().parents[2]


def _figures() -> ModuleType:
    return load("figures")


def test_readme_figures_match_the_results_json() -> None:
    """Every figure in the README block is what results/*.json says (rerun figures.py if not)."""
    figures = _figures()
    block = figures.current((ROOT / "README.md").read_text(encoding="utf-8"))
    assert block, "README.md lost its figures block"
    assert block == figures.rendered()


def test_a_changed_figure_is_caught() -> None:
    """Editing one number of the results changes the rendered block (the check can fail)."""
    figures = _figures()
    e2e = figures._load("e2e")
    before = figures.render(e2e, None, None)
    e2e["summary"][0]["records_per_s"]["median"] += 1000
    assert figures.render(e2e, None, None) != before


def test_the_block_names_the_host_and_sets_two_workers_against_mirrormaker_2() -> None:
    """The CPU model and the two-worker comparison with MM2 appear when the JSON has them."""
    figures = _figures()
    e2e = figures._load("e2e")
    e2e["machine"]["cpu_model"] = "Example CPU 9000 at 2,600 MHz"
    scaled = next(r for r in e2e["ratios"] if "w2_over_node" in r)
    scaled |= {"w2_over_mm2": 1.234, "cpu_w2_over_mm2": 0.876}
    block = figures.render(e2e, None, None)
    assert "2 cores, Example CPU 9000 at 2,600 MHz," in block
    assert "1.23 times its records/s at 0.88 times its CPU per record" in block
    del scaled["w2_over_mm2"]
    assert "times its records/s" not in figures.render(e2e, None, None)
