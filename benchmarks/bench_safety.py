"""The price of each safety feature, with and without it, so it stays visible as features land.

Per record, on one core, for a batch as the city node 410100 sees it (records from county 410102
for the province, for the whole city and for the city itself; a third of them of a conditional
resource that a department of the city holds a two-item grant for):

- routing alone (needed with or without any safety feature: the baseline);
- the sharing rules (catalog, negative list, clearances, departments and grants) on top, with the
  decision memo as the node runs it, and without it (every record decided against the tables);
- ingress validation (envelope parsed, value decoded and checked), paid only where records enter;
- projection of a conditional record to the granted items, paid per projected copy.

Each cost is also shown as a share of the node's time per record at its one-hop rate in
``results/e2e.json`` (when present), and the end-to-end price of ingress validation is read from
the same file (node against node-ingress, same run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable

from bench_core import rate
from common import RESULTS, table, write
from sample_records import BUILDERS, sample

from node.catalog_files import load_catalog, packaged_catalog_dir
from node.codec import SchemaSet, load_schemas, packaged_schema_dir
from node.core.catalog import Catalog
from node.core.envelope import GRADE, HOPS, RESOURCE, SOURCE_DEPT, SOURCE_REGION, TARGET, Sharing
from node.core.grants import Grant, GrantBook, GrantStatus
from node.core.ingress import check_ingress
from node.core.policy import Clearance, Department, NegativeList, Policy, PolicySnapshot
from node.core.routing import Arrival, Router
from node.core.topology import Topology

CITY, COUNTY = "410100", "410102"
CONDITIONAL = "410102-PSB-00001"
GRANTED_ITEMS = ("id_number", "name")
TARGETS = (f"region:{'410000'}", f"subtree:{CITY}", f"region:{CITY}")


def snapshot(schemas: SchemaSet, now_ms: int) -> PolicySnapshot:
    """The demo catalog with one conditional resource, a granted department and every list set."""
    catalog = load_catalog(packaged_catalog_dir(), schemas)
    resources = {code: r for code in catalog.codes() if (r := catalog.get(code)) is not None}
    resources[CONDITIONAL] = dataclasses.replace(
        resources[CONDITIONAL], sharing=Sharing.CONDITIONAL
    )
    grant = Grant("g1", CONDITIONAL, "HRSS", CITY, GRANTED_ITEMS, now_ms + 3_600_000,
                  GrantStatus.APPROVED, 1)  # fmt: skip
    return PolicySnapshot(
        Catalog(resources),
        NegativeList(frozenset({"410102-PSB-00009"}), frozenset({"TAX"})),
        Clearance(parent=3, children=3, local=4),
        (Department("HRSS", 3, frozenset({CONDITIONAL, "410102-SAMR-00001"})),),
        GrantBook([grant], now_ms),
    )


def batch(
    schemas: SchemaSet, size: int, now_ms: int
) -> list[tuple[list[tuple[str, bytes]], bytes]]:
    """``size`` (headers, value) pairs as they arrive from the county (hop path ``410102^``)."""
    out = []
    names = list(BUILDERS)
    for n in range(size):
        schema = names[n % len(names)]
        published = sample(schemas, schema, COUNTY, TARGETS[n % len(TARGETS)], seed=n,
                           created_ms=now_ms)  # fmt: skip
        headers = [(k, v) for k, v in published.envelope.to_headers() if k != HOPS]
        out.append(([*headers, (HOPS, f"{COUNTY}^".encode())], published.value))
    return out


def measure(seconds: float, size: int) -> list[dict[str, float | str]]:
    """Records/s and microseconds per record of each step."""
    schemas = load_schemas(packaged_schema_dir())
    now_ms = int(time.time() * 1000)
    records = batch(schemas, size, now_ms)
    topology = Topology(CITY, "city", "410000", (COUNTY, "410103"))
    heads = [dict(headers) for headers, _ in records]
    route_keys = [(h[TARGET], h[HOPS]) for h in heads]
    policy_keys = [(h[RESOURCE], h[SOURCE_REGION], h[SOURCE_DEPT], h[GRADE]) for h in heads]
    fresh = [([(k, v) for k, v in headers if k != HOPS] + [(HOPS, b"")], value)
             for headers, value in records]  # fmt: skip
    conditional = [value for h, (_, value) in zip(heads, records, strict=True)
                   if h[RESOURCE] == CONDITIONAL.encode()]  # fmt: skip

    def policy_step(memo: int) -> Callable[[], object]:
        router, policy = Router(topology, memo), Policy(snapshot(schemas, now_ms), memo)
        return lambda: policy.apply_batch(
            policy_keys, router.route_batch(route_keys, Arrival.FROM_BELOW)
        )

    def route_step(memo: int) -> Callable[[], object]:
        router = Router(topology, memo)
        return lambda: router.route_batch(route_keys, Arrival.FROM_BELOW)

    def ingress() -> None:
        for headers, value in fresh:
            if check_ingress(headers, value, COUNTY, schemas) is not None:
                raise AssertionError("a sample record was refused at ingress")

    def project() -> None:
        for value in conditional:
            schemas.project(value, GRANTED_ITEMS)

    steps = [
        ("routing (baseline)", "memo", route_step(4096), size),
        ("routing + sharing rules", "memo", policy_step(4096), size),
        ("routing (baseline)", "no memo", route_step(1), size),
        ("routing + sharing rules", "no memo", policy_step(1), size),
        ("ingress validation", "per fresh record", ingress, size),
        ("projection", "per projected copy", project, len(conditional)),
    ]
    rows: list[dict[str, float | str]] = []
    for name, mode, step, count in steps:
        per_s = rate(step, count, seconds)
        rows.append({"step": name, "mode": mode, "per_s": per_s, "us_per_record": 1e6 / per_s})
    return rows


def node_rates() -> dict[int, dict[str, float]]:
    """One-hop medians by payload size from results/e2e.json, if a run wrote it."""
    path = RESULTS / "e2e.json"
    if not path.exists():
        return {}
    rates: dict[int, dict[str, float]] = {}
    for row in json.loads(path.read_text()).get("summary", []):  # older runs: no summary
        if row["hops"] == 1 and row["bridge"] in ("node", "node-ingress"):
            name = row["bridge"].replace("-", "_")
            rates.setdefault(row["payload_bytes"], {})[name] = row["records_per_s"]["median"]
    return {size: rates for size, rates in rates.items() if "node" in rates}


def main() -> None:
    """Measure, print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = measure(0.3 if args.quick else 1.5, 2000)
    by_mode = {(str(r["step"]), str(r["mode"])): float(r["us_per_record"]) for r in rows}
    for row in rows:
        if row["step"] == "routing + sharing rules":
            row["added_us"] = (
                float(row["us_per_record"]) - by_mode["routing (baseline)", str(row["mode"])]
            )
        elif row["step"] != "routing (baseline)":
            row["added_us"] = float(row["us_per_record"])
    e2e = node_rates()
    budget_us = 1e6 / e2e[1024]["node"] if 1024 in e2e else None
    for row in rows:
        if budget_us and "added_us" in row:
            row["share_of_node_1kb"] = float(row["added_us"]) / budget_us
    print("Safety features, one core, batch of 2,000 (city node; a third conditional):")
    print(table(["step", "mode", "records/s", "µs/record", "added µs", "share of node time at 1 KB"],
                [[r["step"], r["mode"], r["per_s"], r["us_per_record"], r.get("added_us", "-"),
                  f"{100 * float(r['share_of_node_1kb']):.1f}%" if "share_of_node_1kb" in r else "-"]
                 for r in rows]))  # fmt: skip
    if budget_us:
        print(
            f"(node one hop at 1 KB: {e2e[1024]['node']:,.0f} rec/s, {budget_us:.1f} µs per record)"
        )
    ingress_e2e = [
        {"payload_bytes": size, "node": r["node"], "node_ingress": r["node_ingress"],
         "ingress_over_node": r["node_ingress"] / r["node"]}
        for size, r in sorted(e2e.items()) if r.get("node_ingress")
    ]  # fmt: skip
    if ingress_e2e:
        print("\nIngress validation end to end (results/e2e.json, same run), records/s:")
        print(table(["payload B", "node (pass-through)", "node ingress (validates)", "ratio"],
                    [[r["payload_bytes"], r["node"], r["node_ingress"], round(r["ingress_over_node"], 2)]
                     for r in ingress_e2e]))  # fmt: skip
    result = {"steps": rows, "ingress_e2e": ingress_e2e, "node_us_per_record_1kb": budget_us,
              "quick": args.quick}  # fmt: skip
    print(f"\nwrote {write('safety', result)}")


if __name__ == "__main__":
    main()
