"""Shared helpers for the benchmarks: machine facts, result files, tables.

Importing it also puts ``deploy/local`` on the path, where the local Kafka, the sample records and
the department client live (they are not part of the installed package).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DEPLOY_LOCAL = Path(__file__).resolve().parents[1] / "deploy" / "local"
if str(DEPLOY_LOCAL) not in sys.path:
    sys.path.insert(0, str(DEPLOY_LOCAL))


def machine() -> dict[str, Any]:
    """Facts that make figures comparable across runs."""
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    versions = {
        name: metadata.version(name) for name in ("aiokafka", "fastavro", "prometheus-client")
    }
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(total_kb / 1024 / 1024, 1),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "kafka": "4.1.2",
        **versions,
    }


def cpu_model(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The processor's model name and clock as ``/proc/cpuinfo`` gives them ("" if it does not).

    Runs on different days land on different hosts: the same node has cost 98 µs of CPU per 1 KB
    record on one and 34 µs on another, so a figure is only comparable with its host's.
    """
    try:
        with open(cpuinfo_path, encoding="utf-8") as cpuinfo:
            fields = {
                key.strip(): value.strip()
                for key, _, value in (line.partition(":") for line in cpuinfo)
                if key.strip() in ("model name", "cpu MHz")
            }
    except OSError:
        return ""
    model, mhz = fields.get("model name", ""), fields.get("cpu MHz", "")
    return f"{model} at {float(mhz):,.0f} MHz" if model and mhz else model


def narrowed(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bool:
    """Whether ``args`` differ from ``parser``'s defaults in anything but ``--quick``."""
    given = {k: v for k, v in vars(args).items() if k != "quick"}
    return given != {k: v for k, v in vars(parser.parse_args([])).items() if k != "quick"}


def write(name: str, results: dict[str, Any]) -> Path:
    """Write ``results`` (plus machine facts) to benchmarks/results/NAME.json.

    A quick run (``results["quick"]``) writes NAME-quick.json instead and a run narrowed by its
    options (``results["partial"]``, see ``narrowed``) NAME-partial.json; neither is committed,
    so neither replaces the figures of the last full run that the README quotes.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if results.get("quick") else "-partial" if results.get("partial") else ""
    path = RESULTS / f"{name}{suffix}.json"
    path.write_text(json.dumps({"machine": machine(), **results}, indent=2, ensure_ascii=False))
    return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Render a plain text table."""
    cells = [headers, *[[f"{c:,.0f}" if isinstance(c, float) and c >= 100 else
                         f"{c:.3g}" if isinstance(c, float) else str(c) for c in row] for row in rows]]  # fmt: skip
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
