"""The cost per record of the quality checks where a record enters: pure, one core, no Kafka.

Records as the county node 410102 sees them freshly published (empty hop path): the three demo
resources (Person, LegalEntity, Licence) in turn, each from its own seed, addressed up, down and
locally, with a share of them carrying one of the sample flaws (wrong check characters, identity
numbers that disagree with birth date or sex, bad region codes, blank required items) and a share
stale (``updated_at`` past the daily allowance). Side by side in each round:

- decode alone (the framed Avro value into a dict);
- decode + ``check`` (the resource's rules from the demo catalog): the checks' own price;
- ``check`` alone over values decoded once beforehand;
- ``Decider.decide`` over batches of 500 with the demo catalog's quality rules, and with a copy of
  the catalog whose resources have ``quality=NO_RULES`` (routing, sharing rules and ingress
  validation are paid either way; the difference is what quality adds to the decision).

Each step runs for ``--seconds`` per round, interleaved with the others, over ``--rounds`` rounds;
microseconds per record (wall and process CPU) are reported as median, min and max.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from common import table, write
from sample_records import BUILDERS, FLAWS, LICENCE, Flaw, sample

from node.catalog_files import load_catalog, packaged_catalog_dir
from node.codec import SchemaSet, load_schemas, packaged_schema_dir
from node.core.catalog import Catalog
from node.core.decision import Decider
from node.core.envelope import Envelope
from node.core.outcome import Delivered, Reason, Refused
from node.core.policy import Policy, PolicySnapshot
from node.core.quality import (
    NO_RULES,
    QualityRules,
    Status,
    check,
)
from node.core.routing import Arrival, Router
from node.core.topology import Topology

COUNTY, CITY = "410102", "410100"
TARGETS = (f"region:{CITY}", f"region:{COUNTY}", "region:410000", f"subtree:{CITY}")
FLAWED_EVERY = 7
"""One record in seven carries a flaw (cycling through the flaws its schema can carry)."""
STALE_EVERY = 11
"""One record in eleven (with an update time) was last updated three days ago."""
BATCH = 500
STALE_S = 3 * 86_400


class Fresh(NamedTuple):
    """A freshly published record as the decision sees it: headers and framed value."""

    headers: list[tuple[str, bytes]]
    value: bytes | None


def records(schemas: SchemaSet, count: int, now_ms: int) -> list[Fresh]:
    """``count`` varied fresh records from the county, each from its own seed."""
    out: list[Fresh] = []
    names = list(BUILDERS)
    for n in range(count):
        schema = names[n % len(names)]
        flaws = list(FLAWS[schema])
        flaw: Flaw | None = (
            flaws[(n // FLAWED_EVERY) % len(flaws)] if n % FLAWED_EVERY == 0 else None
        )
        made = sample(schemas, schema, COUNTY, TARGETS[n % len(TARGETS)], seed=10_000 + n,
                      created_ms=now_ms, flaw=flaw)  # fmt: skip
        value = made.value
        if n % STALE_EVERY == 1 and schema != LICENCE:
            _, datum = schemas.decode(value)
            old = dt.datetime.fromtimestamp(now_ms / 1000 - STALE_S, dt.UTC)
            value = schemas.encode(schema, {**datum, "updated_at": old})
        out.append(Fresh(made.envelope.to_headers(), value))
    return out


def without_rules(catalog: Catalog) -> Catalog:
    """A copy of ``catalog`` whose resources have no quality rules."""
    return Catalog({
        code: dataclasses.replace(resource, quality=NO_RULES)
        for code in catalog.codes() if (resource := catalog.get(code)) is not None
    })  # fmt: skip


def decider(catalog: Catalog, schemas: SchemaSet) -> Decider:
    """The county's decision for records published at its outbox, validating at ingress."""
    router = Router(Topology(COUNTY, "county", CITY, ()))
    return Decider(router, Policy(PolicySnapshot(catalog)), Arrival.FROM_BELOW, schemas,
                   validate_ingress=True)  # fmt: skip


class Step(NamedTuple):
    """One measured step: what it does to every record of the set once."""

    name: str
    run: Callable[[], object]


def steps(schemas: SchemaSet, catalog: Catalog, fresh: Sequence[Fresh], now_ms: int) -> list[Step]:
    """The steps compared side by side, each over all of ``fresh``."""
    values = [r.value or b"" for r in fresh]
    envelopes = [Envelope.from_headers(r.headers) for r in fresh]
    rules: list[QualityRules] = []
    for envelope in envelopes:
        resource = catalog.get(envelope.resource)
        rules.append(resource.quality if resource is not None else NO_RULES)
    created = [e.created_ms for e in envelopes]
    decoded = [schemas.decode(v)[1] for v in values]
    jobs = list(zip(rules, values, created, strict=True))
    checked = list(zip(rules, decoded, created, strict=True))
    batches = [fresh[i : i + BATCH] for i in range(0, len(fresh), BATCH)]
    with_rules, no_rules = decider(catalog, schemas), decider(without_rules(catalog), schemas)
    decode = schemas.decode

    def decode_alone() -> None:
        for value in values:
            decode(value)

    def decode_and_check() -> None:
        for rule, value, created_ms in jobs:
            check(rule, decode(value)[1], COUNTY, now_ms, created_ms=created_ms)

    def check_alone() -> None:
        for rule, datum, created_ms in checked:
            check(rule, datum, COUNTY, now_ms, created_ms=created_ms)

    def decide(chosen: Decider) -> Callable[[], None]:
        def run() -> None:
            for batch in batches:
                chosen.decide(batch, now_ms=now_ms)

        return run

    return [
        Step("decode alone", decode_alone),
        Step("decode + check", decode_and_check),
        Step("check alone (pre-decoded)", check_alone),
        Step("decide, quality rules", decide(with_rules)),
        Step("decide, NO_RULES", decide(no_rules)),
    ]


def tally(
    schemas: SchemaSet, catalog: Catalog, fresh: Sequence[Fresh], now_ms: int
) -> dict[str, Any]:
    """What the set holds: verdicts by status, and the decision's outcomes with and without rules."""
    statuses: dict[str, int] = {}
    for record in fresh:
        envelope = Envelope.from_headers(record.headers)
        resource = catalog.get(envelope.resource)
        assert resource is not None
        datum = schemas.decode(record.value or b"")[1]
        verdict = check(resource.quality, datum, COUNTY, now_ms, created_ms=envelope.created_ms)
        statuses[verdict.status.value] = statuses.get(verdict.status.value, 0) + 1
    outcomes: dict[str, dict[str, int]] = {}
    for name, chosen in (("quality rules", catalog), ("NO_RULES", without_rules(catalog))):
        got, _ = decider(chosen, schemas).decide(fresh, now_ms=now_ms)
        counts: dict[str, int] = {}
        for outcome in got:
            kind = "delivered" if isinstance(outcome, Delivered) else (
                f"refused {outcome.reason.value}" if isinstance(outcome, Refused) else "other")  # fmt: skip
            counts[kind] = counts.get(kind, 0) + 1
        outcomes[name] = counts
    refused_quality = outcomes["quality rules"].get(f"refused {Reason.QUALITY.value}", 0)
    if refused_quality != statuses.get(Status.REFUSED.value, 0):
        raise AssertionError(f"decide refused {refused_quality} for quality, check {statuses}")
    if outcomes["NO_RULES"].get(f"refused {Reason.QUALITY.value}", 0):
        raise AssertionError("a record was refused for quality without rules")
    return {"verdicts": statuses, "outcomes": outcomes}


def measure(
    all_steps: Sequence[Step], count: int, rounds: int, seconds: float
) -> dict[str, dict[str, list[float]]]:
    """Per step, µs per record (wall and CPU) of each round; steps interleave within a round."""
    samples: dict[str, dict[str, list[float]]] = {
        s.name: {"wall": [], "cpu": []} for s in all_steps
    }
    for step in all_steps:
        step.run()  # warm: memos, caches, lazily built schemas
    for _ in range(rounds):
        for step in all_steps:
            done = 0
            wall, cpu = time.perf_counter(), time.process_time()
            deadline = wall + seconds
            while time.perf_counter() < deadline:
                step.run()
                done += count
            samples[step.name]["wall"].append((time.perf_counter() - wall) * 1e6 / done)
            samples[step.name]["cpu"].append((time.process_time() - cpu) * 1e6 / done)
    return samples


class Row(NamedTuple):
    """One step's figures: µs per record, wall and CPU, and each round's wall figure."""

    step: str
    wall_us: dict[str, float]
    cpu_us: dict[str, float]
    rounds_wall_us: list[float]


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    """Measure, print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=3000, help="distinct records (default 3000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=1.0, help="per step and round (default 1)")
    args = parser.parse_args()
    schemas = load_schemas(packaged_schema_dir())
    catalog = load_catalog(packaged_catalog_dir(), schemas)
    now_ms = int(time.time() * 1000)
    fresh = records(schemas, args.records, now_ms)
    facts = tally(schemas, catalog, fresh, now_ms)
    all_steps = steps(schemas, catalog, fresh, now_ms)
    samples = measure(all_steps, len(fresh), args.rounds, args.seconds)
    rows = [
        Row(name, summary(got["wall"]), summary(got["cpu"]), got["wall"])
        for name, got in samples.items()
    ]
    median = {r.step: r.wall_us["median"] for r in rows}
    cpu = {r.step: r.cpu_us["median"] for r in rows}
    ratios = {
        "check_over_decode": median["check alone (pre-decoded)"] / median["decode alone"],
        "decode_check_over_decode": median["decode + check"] / median["decode alone"],
        "decide_rules_over_no_rules": median["decide, quality rules"] / median["decide, NO_RULES"],
        "quality_added_to_decide_us": median["decide, quality rules"] - median["decide, NO_RULES"],
        "quality_added_to_decide_cpu_us": cpu["decide, quality rules"] - cpu["decide, NO_RULES"],
    }
    ratios["decide_added_over_decode_check"] = (
        ratios["quality_added_to_decide_us"] / median["decode + check"]
    )
    print(f"Quality checks at the entry node (county {COUNTY}), one core, {len(fresh):,} distinct "
          f"records (Person, LegalEntity, Licence), {args.rounds} rounds of {args.seconds:g} s:")  # fmt: skip
    print(f"verdicts: {facts['verdicts']}")
    for name, counts in facts["outcomes"].items():
        print(f"decide with {name}: {counts}")
    print(table(
        ["step", "µs/record median", "min", "max", "CPU µs median", "records/s (median)"],
        [[r.step, r.wall_us["median"], r.wall_us["min"], r.wall_us["max"], r.cpu_us["median"],
          1e6 / r.wall_us["median"]] for r in rows],
    ))  # fmt: skip
    print(
        f"check alone / decode alone: {ratios['check_over_decode']:.2f}; "
        f"decode + check / decode alone: {ratios['decode_check_over_decode']:.2f}; "
        f"decide with rules / without: {ratios['decide_rules_over_no_rules']:.2f} "
        f"(+{ratios['quality_added_to_decide_us']:.1f} µs per record, "
        f"+{ratios['quality_added_to_decide_cpu_us']:.1f} µs CPU, "
        f"{ratios['decide_added_over_decode_check']:.2f} times a decode + check)"
    )
    result = {
        "records": len(fresh), "batch": BATCH, "rounds": args.rounds, "seconds": args.seconds,
        "flawed_every": FLAWED_EVERY, "stale_every": STALE_EVERY, **facts, "steps": [r._asdict() for r in rows],
        "ratios": ratios,
    }  # fmt: skip
    print(f"\nwrote {write('quality', result)}")


if __name__ == "__main__":
    main()
