"""Run every benchmark, then plot the scaling curves next to the JSON (``make bench``).

``--quick`` runs each with fewer records and shorter timings (121 s in the last run, 114-118 s on
the faster host, 163-202 s on the slowest); the full run took 1,168 s in the last run (AMD EPYC),
18-19 minutes on the faster hosts, 23-25 on the slowest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_e2e import SHARED_CLUSTERS, bench_clusters, share
from common import RESULTS

HERE = Path(__file__).resolve().parent
SCRIPTS = (
    "bench_core.py", "bench_codec.py", "bench_provenance.py", "bench_e2e.py", "bench_latency.py",
    "bench_audit.py", "bench_safety.py",
)  # fmt: skip
"""In this order: bench_safety reads the node's rate from bench_e2e's results."""
ON_KAFKA = ("bench_e2e.py", "bench_latency.py", "bench_audit.py")
"""Scripts that run on brokers: one after another, on three clusters started once for them
(``bench_e2e.SHARED_CLUSTERS``), about 7 s less for each that would start its own."""
CLUSTERS = ("county", "city", "province")


def plot() -> None:
    """Draw core scaling and end-to-end throughput as PNGs beside the JSON files."""
    import matplotlib  # noqa: PLC0415 - only the plotting step needs it

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    core = json.loads((RESULTS / "core.json").read_text())
    figure, axes = pyplot.subplots(figsize=(7, 4))
    for series in sorted({row["targets"] for row in core["scaling"]}):
        rows = [row for row in core["scaling"] if row["targets"] == series]
        for key, style in (("route_per_s", "-"), ("route_policy_per_s", "--")):
            label = f"{'route' if key == 'route_per_s' else 'route+policy'}, {series}"
            axes.plot(
                [r["routes"] for r in rows], [r[key] for r in rows], style, marker="o", label=label
            )
    axes.set(xscale="log", yscale="log", xlabel="routes and catalog entries", ylabel="records/s (one core)",
             title="Routing core: cost against table size")  # fmt: skip
    axes.axhline(1_000_000, color="grey", linewidth=0.8)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(RESULTS / "core.png", dpi=120)

    e2e = json.loads((RESULTS / "e2e.json").read_text())
    one_hop: dict[int, dict[str, Any]] = {}
    for row in e2e["summary"]:
        if row["hops"] == 1 and row["bridge"] in ("raw", "node", "mm2"):
            entry = one_hop.setdefault(
                row["payload_bytes"], {"payload_bytes": row["payload_bytes"]}
            )
            entry[row["bridge"]] = row["records_per_s"]["median"]
            entry[f"{row['bridge']} cpu"] = row["cpu_us_per_record"]["median"]
    rows = [one_hop[size] for size in sorted(one_hop)]
    figure, (rate, cpu) = pyplot.subplots(1, 2, figsize=(11, 4))
    bars(rate, rows, ("raw", "node", "mm2"), "records/s, one hop (median of rounds)", "records/s")
    bars(cpu, rows, ("raw cpu", "node cpu", "mm2 cpu"), "CPU per record (median)", "µs")
    figure.suptitle("Through real Kafka: the raw pipe (node transport), the node, MirrorMaker 2")
    figure.tight_layout()
    figure.savefig(RESULTS / "e2e.png", dpi=120)


def bars(
    axes: Any, rows: list[dict[str, Any]], series: tuple[str, ...], title: str, unit: str
) -> None:
    """Grouped bars: one group per payload size, one bar per series."""
    sizes = [r["payload_bytes"] for r in rows]
    width = 0.8 / len(series)
    for offset, name in enumerate(series):
        values = [r.get(name) or 0 for r in rows]
        shift = (offset - (len(series) - 1) / 2) * width
        axes.bar([i + shift for i in range(len(sizes))], values, width=width, label=name)
    axes.set_xticks(range(len(sizes)), [f"{s} B" for s in sizes])
    axes.set(ylabel=unit, title=title)
    axes.legend(fontsize=8)


def share_brokers(stack: contextlib.ExitStack) -> None:
    """Start the brokers the scripts on Kafka share, named to them until ``stack`` closes."""
    started = time.monotonic()
    _, clusters = stack.enter_context(bench_clusters("bench", CLUSTERS))
    os.environ[SHARED_CLUSTERS] = share(clusters)
    stack.callback(os.environ.pop, SHARED_CLUSTERS, None)
    print(f"\n== brokers for {', '.join(ON_KAFKA)}: started in {time.monotonic() - started:.0f} s",
          flush=True)  # fmt: skip


def main() -> int:
    """Run the benchmarks in turn; stop at the first failure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    extra = ["--quick"] if args.quick else []
    began = time.monotonic()
    with contextlib.ExitStack() as brokers:
        for script in SCRIPTS:
            if script == ON_KAFKA[0]:
                share_brokers(brokers)
            print(f"\n== {script} {' '.join(extra)}", flush=True)
            started = time.monotonic()
            result = subprocess.run([sys.executable, str(HERE / script), *extra], cwd=HERE,
                                    check=False)  # fmt: skip
            if result.returncode != 0:
                return result.returncode
            print(f"== {script}: {time.monotonic() - started:.0f} s", flush=True)
            if script == ON_KAFKA[-1]:
                brokers.close()
    if not args.quick:
        plot()
    print(f"\nplots in {RESULTS}; {time.monotonic() - began:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
