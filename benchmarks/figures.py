"""The README's benchmark figures, rendered from the committed results JSON (never typed by hand).

``python benchmarks/figures.py`` rewrites the block between the markers in README.md from
``results/e2e.json``, ``results/latency.json`` and ``results/core.json``; ``--check`` exits 1 if
the README differs (``tests/unit/test_readme_figures.py`` runs the same check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN = "<!-- figures:begin (benchmarks/figures.py writes this block from results/*.json) -->"
END = "<!-- figures:end -->"
NAMES = {"mm2": "MirrorMaker 2"}
DASH = "\u2013"  # an en dash, as the rest of the README writes ranges


def _rate(spread: dict[str, float]) -> str:
    return f"{spread['median']:,.0f} ({spread['min']:,.0f}{DASH}{spread['max']:,.0f})"


def _cpu(spread: dict[str, float]) -> str:
    return f"{spread['median']:.1f} ({spread['min']:.1f}{DASH}{spread['max']:.1f})"


def _size(payload: int) -> str:
    return f"{payload // 1024} KB" if payload >= 1024 else f"{payload} B"


def _against_mm2(ratio: dict[str, Any], tasks: str) -> str:
    """How two workers compare with MirrorMaker 2 (``tasks``: its tasks.max), if the run had both."""
    if "w2_over_mm2" not in ratio:
        return "."
    return (f"; against MirrorMaker 2 with its {tasks} tasks, {ratio['w2_over_mm2']:.2f} times its "
            f"records/s at {ratio['cpu_w2_over_mm2']:.2f} times its CPU per record.")  # fmt: skip


def _rows(lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(cells) + " |" for cells in lines]


def render(e2e: dict[str, Any], latency: dict[str, Any] | None, core: dict[str, Any] | None) -> str:
    """The README block: throughput, CPU, memory, ratios, Kafka's ceiling, latency, memo."""
    machine = e2e["machine"]
    host = f", {machine['cpu_model']}" if machine.get("cpu_model") else ""
    summary = {(s["hops"], s["payload_bytes"], s["bridge"]): s for s in e2e["summary"]}
    ratios = {(r["hops"], r["payload_bytes"]): r for r in e2e["ratios"]}
    sizes = sorted({size for hops, size, _ in summary if hops == 1})
    out = [
        f"Last full run: {machine['cores']} cores{host}, {machine['memory_gib']} GiB, Python "
        f"{machine['python']}, aiokafka {machine['aiokafka']}, Kafka {machine['kafka']}; steady "
        f"windows of {e2e['window_s']:g} s after {e2e['warmup_s']:g} s of warm-up "
        f"({e2e['mm2_warmup_s']:g} s for MirrorMaker 2); {e2e['rounds']} interleaved rounds one hop, "
        f"{e2e['two_hop_rounds']} two hops; median (min{DASH}max). CPU is the bridge process's "
        "utime + stime over the window per record copied.",
        "",
        "| hops | payload | raw pipe rec/s | node rec/s | MirrorMaker 2 rec/s | node/MM2 | node/raw "
        "| CPU µs/rec raw | CPU µs/rec node | CPU µs/rec MM2 | peak RSS raw / node / MM2 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    table = []
    for hops in (1, 2):
        for size in sizes:
            name = "" if hops == 1 else "+"
            found = [summary.get((hops, size, k if hops == 1 else f"{k}{name}{k}"))
                     for k in ("raw", "node", "mm2")]  # fmt: skip
            if found[1] is None:
                continue
            ratio = ratios.get((hops, size), {})
            table.append([
                str(hops), _size(size),
                *(_rate(f["records_per_s"]) if f else "-" for f in found),
                f"{ratio['node_over_mm2']:.2f}" if "node_over_mm2" in ratio else "-",
                f"{ratio['node_over_raw']:.2f}" if "node_over_raw" in ratio else "-",
                *(_cpu(f["cpu_us_per_record"]) if f else "-" for f in found),
                " / ".join(f"{f['peak_rss_mb']:.0f}" if f else "-" for f in found) + " MB",
            ])  # fmt: skip
    out += _rows(table)
    extra = [
        s for s in e2e["summary"] if s["bridge"] in ("node-w2", "node-noaudit", "node-ingress")
    ]
    if extra:
        out += ["", "The node with two worker processes, without its audit trail, and where records "
                "enter (rounds as given):", "",
                "| payload | bridge | rounds | rec/s | CPU µs/rec | peak RSS |",
                "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        out += _rows([[_size(s["payload_bytes"]), s["bridge"], str(s["rounds"]),
                       _rate(s["records_per_s"]), _cpu(s["cpu_us_per_record"]),
                       f"{s['peak_rss_mb']:.0f} MB"] for s in extra])  # fmt: skip
    scaled = [r for r in e2e["ratios"] if "w2_over_node" in r]
    tasks = e2e.get("mm2", {}).get("tasks.max", {}).get("value", "?")
    out += [f"\nTwo worker processes against one, {_size(r['payload_bytes'])}: "
            f"{r['w2_over_node']:.2f} times the records/s at {r['cpu_w2_over_node']:.2f} times the CPU per "
            "record (the lead's and its worker's together)" + _against_mm2(r, tasks) for r in scaled]  # fmt: skip
    if e2e["kafka_tools"]:
        out += ["", "Kafka's own tools on the same brokers (the machine's ceiling):", "",
                "| payload | tool | rec/s | over |", "| --- | --- | --- | --- |"]  # fmt: skip
        out += _rows([[_size(t["payload_bytes"]), t["tool"], f"{t['records_per_s']:,.0f}",
                       f"{t['seconds']:.1f} s"] for t in e2e["kafka_tools"]])  # fmt: skip
    hits = e2e["workload"]["by_size"]
    out += ["", f"Workload: {e2e['workload']['resources']:,} resources from "
            f"{e2e['workload']['departments']} departments; memo hit rates routing "
            + ", ".join(f"{100 * w['memo_hit_rate']['routing']:.2f}%" for w in hits)
            + "; policy " + ", ".join(f"{100 * w['memo_hit_rate']['policy']:.2f}%" for w in hits)
            + " (by payload size, in the order above)."]  # fmt: skip
    if latency:
        out += ["", "Latency at 1,000 records/s of 1 KB, one hop (ms): "
                + "; ".join(f"{NAMES.get(r['bridge'], r['bridge'])} p50 {r['p50_ms']:.1f}, "
                            f"p99 {r['p99_ms']:.1f}" for r in latency["runs"]) + "."]  # fmt: skip
    if core:
        rows = {(r["routes"], r["targets"]): r for r in core["scaling"]}
        memo, bare = rows.get((1000, "all")), rows.get((1000, "all, no memo"))
        if memo and bare:
            out += ["", "Routing core, one core, 1,000 routes and catalog entries: with the memo "
                    f"{memo['route_per_s'] / 1e6:.1f} M records/s routed and "
                    f"{memo['route_policy_per_s'] / 1e6:.2f} M routed and checked; without it "
                    f"{bare['route_per_s'] / 1e3:,.0f}k and {bare['route_policy_per_s'] / 1e3:,.0f}k."]  # fmt: skip
    return "\n".join(out)


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def rendered() -> str:
    """The block as the committed JSON says it should read, markers included."""
    e2e = _load("e2e")
    if e2e is None:
        raise SystemExit("results/e2e.json is missing: run make bench")
    return f"{BEGIN}\n{render(e2e, _load('latency'), _load('core'))}\n{END}"


def current(readme: str) -> str:
    """The block as README.md has it now (empty if the markers are missing)."""
    start, end = readme.find(BEGIN), readme.find(END)
    return readme[start : end + len(END)] if 0 <= start < end else ""


def main() -> int:
    """Write (or ``--check``) the README block."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    readme = README.read_text(encoding="utf-8")
    block, want = current(readme), rendered()
    if args.check:
        if block != want:
            print(
                "README.md's figures differ from results/*.json: run python benchmarks/figures.py"
            )
            return 1
        return 0
    if not block:
        print(f"README.md has no {BEGIN} ... {END} block")
        return 1
    README.write_text(readme.replace(block, want), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
