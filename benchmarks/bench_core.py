"""Routing core and policy alone, on one core: records/s as the tables and batches grow.

Scaling runs use a synthetic national node (region 000000) whose children and catalog hold N
entries, N from 10 to 100,000, with batches addressed over a hot set of 50 (what a real link sees:
few distinct targets and resources per batch) and over all N, the latter also with the decision
memo switched off, so every record's decision is computed against the full tables.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from common import table, write

from node.core.catalog import Catalog, InformationItem, Openness, Resource, UpdateCycle
from node.core.envelope import Sharing
from node.core.outcome import Outcome
from node.core.policy import Policy, PolicySnapshot
from node.core.routing import Arrival, Router
from node.core.topology import Topology

ROOT = "000000"


def regions(count: int) -> list[str]:
    """``count`` distinct six-digit codes, none of them the root."""
    return [f"{n:06d}" for n in random.Random(1).sample(range(1, 1_000_000), count)]


def catalog(codes: list[str]) -> Catalog:
    """A catalog with one unconditional grade-1 resource per code, sourced at PSB@000000."""
    items = (InformationItem("id_number", "string", True),)
    return Catalog({
        code: Resource(code, code, "x.Person", "PSB", ROOT, Sharing.UNCONDITIONAL, "",
                       Openness.CLOSED, 1, UpdateCycle.DAILY, items)
        for code in codes
    })  # fmt: skip


def rate(step: Callable[[], object], records: int, seconds: float) -> float:
    """Records per second of ``step`` (which handles ``records``), best of repeated runs."""
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return records / best


def measure(
    size: int, batch: int, hot: int | None, seconds: float, *, memo: bool = True
) -> tuple[float, float]:
    """(routing only, routing + policy) records/s for a table of ``size`` entries."""
    children = regions(size)
    memo_size = 4096 if memo else 1
    router = Router(Topology(ROOT, "national", None, tuple(children)), memo_size)
    resources = [f"R{n:06d}" for n in range(size)]
    policy = Policy(PolicySnapshot(catalog(resources)), memo_size)
    rng = random.Random(2)
    pool = range(size) if hot is None else range(min(hot, size))
    picks = [rng.choice(pool) for _ in range(batch)]
    route_keys = [(f"region:{children[i]}".encode(), b"") for i in picks]
    policy_keys = [(resources[i].encode(), ROOT.encode(), b"PSB", b"1") for i in picks]

    def route() -> list[Outcome]:
        return router.route_batch(route_keys, Arrival.FROM_BELOW)

    def route_and_check() -> list[Outcome]:
        return policy.apply_batch(policy_keys, router.route_batch(route_keys, Arrival.FROM_BELOW))

    return rate(route, batch, seconds), rate(route_and_check, batch, seconds)


def main() -> None:
    """Run the scaling series, print tables, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seconds = 0.15 if args.quick else 0.5  # per figure, the best of repeated runs
    sizes = [10, 100, 1_000, 10_000, 100_000]
    scaling = []
    for size in sizes:
        for hot, memo in ((50, True), (None, True), (None, False)):
            routed, checked = measure(size, 2000, hot, seconds, memo=memo)
            targets = ("hot 50" if hot else "all") + ("" if memo else ", no memo")
            scaling.append({"routes": size, "targets": targets, "batch": 2000,
                            "route_per_s": routed, "route_policy_per_s": checked})  # fmt: skip
    batches = []
    for batch in (1, 10, 100, 1000, 10_000):
        routed, checked = measure(1000, batch, 50, seconds)
        batches.append(
            {"routes": 1000, "batch": batch, "route_per_s": routed, "route_policy_per_s": checked}
        )
    print("Routing core, one core (records/s):")
    print(table(["routes", "targets", "route", "route+policy"],
                [[r["routes"], r["targets"], r["route_per_s"], r["route_policy_per_s"]] for r in scaling]))  # fmt: skip
    print("\nBy batch size (1,000 routes, hot set of 50):")
    print(table(["batch", "route", "route+policy"],
                [[r["batch"], r["route_per_s"], r["route_policy_per_s"]] for r in batches]))  # fmt: skip
    print(f"\nwrote {write('core', {'scaling': scaling, 'batches': batches, 'quick': args.quick})}")


if __name__ == "__main__":
    main()
