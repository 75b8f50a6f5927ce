"""The cost per record of the quality checks where a record enters: pure, one core, no Kafka.

Records as the county node 410102 sees them freshly published (empty hop path): the three demo
resources (Person, LegalEntity, Licence) in turn, each from its own seed, addressed up, down and
locally, with a share of them carrying one of the sample flaws (wrong check characters, identity
numbers that disagree with birth date or sex, bad region codes, blank required items) and a share
stale (``updated_at`` past the daily allowance). Side by side in each round:

- decode alone (the framed Avro value into a dict);
- decode + ``check`` (the resource's rules from the demo catalog): the checks' own price;
- ``check`` alone over values decoded once beforehand;
- the same two with ``check_before``: a copy (at the end of this file) of the checker as it was
  before the rules were compiled into closures, kept to compare side by side; the set's verdicts
  must be identical under both;
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from common import table, write
from sample_records import BUILDERS, FLAWS, LICENCE, Flaw, sample

from node.catalog_files import load_catalog, packaged_catalog_dir
from node.codec import SchemaSet, load_schemas, packaged_schema_dir
from node.core.catalog import Catalog
from node.core.decision import Decider
from node.core.envelope import Envelope
from node.core.identifiers import (
    CREDIT_ALPHABET,
    CREDIT_CODE_LENGTH,
    CREDIT_WEIGHTS,
    ID_CHECK_CHARS,
    ID_NUMBER_LENGTH,
    ID_WEIGHTS,
    NATIONAL_REGION,
    PROVINCES,
    civil_from_days,
    days_from_civil,
    id_number_birth,
    id_number_is_male,
    is_valid_date,
)
from node.core.outcome import Delivered, Reason, Refused
from node.core.policy import Policy, PolicySnapshot
from node.core.quality import (
    CREATED,
    DATE_SLACK_MS,
    DAY_MS,
    EARLIEST_PLAUSIBLE_DAY,
    HOUR_MS,
    NO_RULES,
    TIMESTAMP_SLACK_MS,
    Dimension,
    Failure,
    Format,
    IdentityRule,
    ItemRule,
    QualityRules,
    Status,
    Verdict,
    check,
)
from node.core.routing import Arrival, Router
from node.core.topology import Topology, contains

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

    def decode_and_check_before() -> None:
        for rule, value, created_ms in jobs:
            check_before(rule, decode(value)[1], COUNTY, now_ms, created_ms=created_ms)

    def check_alone_before() -> None:
        for rule, datum, created_ms in checked:
            check_before(rule, datum, COUNTY, now_ms, created_ms=created_ms)

    def decide(chosen: Decider) -> Callable[[], None]:
        def run() -> None:
            for batch in batches:
                chosen.decide(batch, now_ms=now_ms)

        return run

    return [
        Step("decode alone", decode_alone),
        Step("decode + check", decode_and_check),
        Step("check alone (pre-decoded)", check_alone),
        Step("decode + check, before", decode_and_check_before),
        Step("check alone, before", check_alone_before),
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
        before = check_before(resource.quality, datum, COUNTY, now_ms,
                              created_ms=envelope.created_ms)  # fmt: skip
        if verdict != before or verdict.header() != before.header():
            raise AssertionError(f"check and check_before disagree: {verdict} != {before}")
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
        "check_over_check_before": (
            median["check alone (pre-decoded)"] / median["check alone, before"]
        ),
        "decode_check_over_decode_check_before": (
            median["decode + check"] / median["decode + check, before"]
        ),
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
        f"check / check before: {ratios['check_over_check_before']:.2f} (pre-decoded), "
        f"{ratios['decode_check_over_decode_check_before']:.2f} (with decode); "
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


# The checker before compilation (node/core/quality.py ``check`` and the identifiers it used, as
# they were), kept only to measure against; same rules, same verdicts.


def check_before(
    rules: QualityRules,
    datum: Mapping[str, Any],
    source_region: str,
    now_ms: int,
    *,
    created_ms: int | None = None,
) -> Verdict:
    """``check`` as it was: generators over the rules, interpreted for every record."""
    if not rules.checked:
        return Verdict((), refused=False, checked=frozenset())
    failures = list(_old_failures(rules, datum, source_region, now_ms, created_ms))
    refused = any(f.dimension in rules.refusing for f in failures)
    return Verdict(tuple(failures), refused, rules.checked)


def _old_failures(
    rules: QualityRules,
    datum: Mapping[str, Any],
    source_region: str,
    now_ms: int,
    created_ms: int | None,
) -> Iterator[Failure]:
    for name in rules.required:
        value = datum.get(name)
        if value is None:
            yield Failure(Dimension.COMPLETENESS, "required", f"$.{name}", "missing")
        elif _old_is_empty(value):
            yield Failure(Dimension.COMPLETENESS, "required", f"$.{name}", "empty")
    for rule in rules.items:
        value = datum.get(rule.name)
        if value is not None:
            yield from _old_item_failures(rule, value, datum, now_ms)
    if rules.identity is not None:
        yield from _old_identity_failures(rules.identity, datum)
    for name in rules.region_within_source:
        region = datum.get(name)
        if isinstance(region, str) and not contains(source_region, region):
            message = f"{region} is not inside the source region {source_region}"
            yield Failure(Dimension.CONSISTENCY, "region_within_source", f"$.{name}", message)
    if rules.timeliness_field is not None and rules.max_age_ms is not None:
        name = rules.timeliness_field
        stamp = created_ms if name == CREATED else _old_ms_of(datum.get(name))
        if stamp is not None and now_ms - stamp > rules.max_age_ms:
            path = name if name == CREATED else f"$.{name}"
            message = (
                f"{(now_ms - stamp) / HOUR_MS:.1f} h old; "
                f"the update cycle allows {rules.max_age_ms / HOUR_MS:g} h"
            )
            yield Failure(Dimension.TIMELINESS, "max_age", path, message)


def _old_item_failures(
    rule: ItemRule, value: Any, datum: Mapping[str, Any], now_ms: int
) -> Iterator[Failure]:
    path = f"$.{rule.name}"
    if rule.non_empty and _old_is_empty(value):
        yield Failure(Dimension.COMPLETENESS, "non_empty", path, "empty")
    kind = rule.format
    if rule.format_by is not None:
        kind = dict(rule.formats).get(str(datum.get(rule.format_by)))
    if kind is not None:
        yield from _old_format_failures(kind, value, path, now_ms)
    if rule.codes is not None and value not in rule.codes:
        yield Failure(Dimension.CONFORMITY, "codes", path, f"{value!r} is not in the code list")
    if rule.minimum is not None or rule.maximum is not None:
        yield from _old_range_failures(rule, value, path)
    if rule.plausible or rule.min_date is not None or rule.max_date is not None:
        yield from _old_date_failures(rule, value, path, now_ms)
    if rule.not_before is not None:
        day, other = _old_day_of(value), _old_day_of(datum.get(rule.not_before))
        if day is not None and other is not None and day < other:
            message = f"{_old_iso(day)} is before {rule.not_before} {_old_iso(other)}"
            yield Failure(Dimension.CONSISTENCY, "not_before", path, message)


def _old_format_failures(kind: Format, value: Any, path: str, now_ms: int) -> Iterator[Failure]:
    if kind is Format.DATE:
        if not isinstance(value, str):
            if _old_day_of(value) is None:
                yield Failure(Dimension.CONFORMITY, "date", path, "not a date")
        elif _old_iso_day(value) is None:
            yield Failure(Dimension.CONFORMITY, "date", path, f"{value!r} is not a YYYY-MM-DD date")
        return
    if not isinstance(value, str):
        yield Failure(Dimension.CONFORMITY, str(kind), path, "expected text")
        return
    if kind is Format.REGION_CODE:
        problem = _old_region_code_problem(value)
        if problem is not None:
            yield Failure(Dimension.CONFORMITY, "region_code", path, problem)
    elif kind is Format.ID_NUMBER:
        yield from _old_id_number_failures(value, path, now_ms)
    else:
        yield from _old_credit_code_failures(value, path)


def _old_id_number_failures(value: str, path: str, now_ms: int) -> Iterator[Failure]:
    problem = _old_id_number_format_problem(value)
    if problem is not None:
        yield Failure(Dimension.CONFORMITY, "id_number", path, problem)
        return
    expected = _old_id_number_check_char(value[:17])
    if value[17] != expected:
        message = f"check character {value[17]}, expected {expected}"
        yield Failure(Dimension.ACCURACY, "id_number_check", path, message)
    birth = days_from_civil(*id_number_birth(value))
    if not EARLIEST_PLAUSIBLE_DAY <= birth <= _old_today(now_ms):
        message = f"birth date {_old_iso(birth)} is not plausible"
        yield Failure(Dimension.ACCURACY, "id_number_birth", path, message)


def _old_credit_code_failures(value: str, path: str) -> Iterator[Failure]:
    problem = _old_credit_code_format_problem(value)
    if problem is not None:
        yield Failure(Dimension.CONFORMITY, "credit_code", path, problem)
        return
    expected = _old_credit_code_check_char(value[:17])
    if value[17] != expected:
        message = f"check character {value[17]}, expected {expected}"
        yield Failure(Dimension.ACCURACY, "credit_code_check", path, message)


def _old_range_failures(rule: ItemRule, value: Any, path: str) -> Iterator[Failure]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        yield Failure(Dimension.CONFORMITY, "min" if rule.minimum is not None else "max", path,
                      "not a number")  # fmt: skip
    elif rule.minimum is not None and value < rule.minimum:
        yield Failure(Dimension.ACCURACY, "min", path, f"{value} is below {rule.minimum:g}")
    elif rule.maximum is not None and value > rule.maximum:
        yield Failure(Dimension.ACCURACY, "max", path, f"{value} is above {rule.maximum:g}")


def _old_date_failures(rule: ItemRule, value: Any, path: str, now_ms: int) -> Iterator[Failure]:
    day = _old_day_of(value)
    if day is None:
        yield Failure(Dimension.CONFORMITY, "date", path, "not a date")
        return
    if rule.plausible:
        stamp = _old_ms_of(value) if hasattr(value, "timestamp") else None
        future = (
            stamp > now_ms + TIMESTAMP_SLACK_MS if stamp is not None else day > _old_today(now_ms)
        )
        if future:
            yield Failure(
                Dimension.ACCURACY, "plausible", path, f"{_old_iso(day)} is in the future"
            )
        elif day < EARLIEST_PLAUSIBLE_DAY:
            yield Failure(Dimension.ACCURACY, "plausible", path, f"{_old_iso(day)} is before 1900")
    if rule.min_date is not None and day < rule.min_date:
        message = f"{_old_iso(day)} is before {_old_iso(rule.min_date)}"
        yield Failure(Dimension.ACCURACY, "min_date", path, message)
    if rule.max_date is not None and day > rule.max_date:
        message = f"{_old_iso(day)} is after {_old_iso(rule.max_date)}"
        yield Failure(Dimension.ACCURACY, "max_date", path, message)


def _old_identity_failures(rule: IdentityRule, datum: Mapping[str, Any]) -> Iterator[Failure]:
    number = datum.get(rule.id)
    if not isinstance(number, str) or _old_id_number_format_problem(number) is not None:
        return
    if rule.birth is not None:
        birth = _old_day_of(datum.get(rule.birth))
        written = days_from_civil(*id_number_birth(number))
        if birth is not None and birth != written:
            message = f"{_old_iso(birth)}, but the identity number says {_old_iso(written)}"
            yield Failure(Dimension.CONSISTENCY, "id_matches_birth_and_sex", f"$.{rule.birth}",
                          message)  # fmt: skip
    if rule.sex is not None:
        sex = str(datum.get(rule.sex))
        male = id_number_is_male(number)
        if (sex in _OLD_MALE and not male) or (sex in _OLD_FEMALE and male):
            message = f"{sex}, but the identity number is a {'man' if male else 'woman'}'s"
            yield Failure(Dimension.CONSISTENCY, "id_matches_birth_and_sex", f"$.{rule.sex}",
                          message)  # fmt: skip


_OLD_MALE = frozenset(("MALE", "M", "1", "男"))
_OLD_FEMALE = frozenset(("FEMALE", "F", "2", "女"))
_OLD_DIGITS = frozenset("0123456789")
_OLD_CREDIT_VALUE = {char: value for value, char in enumerate(CREDIT_ALPHABET)}


def _old_is_empty(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, bytes | list | dict) and not value


def _old_today(now_ms: int) -> int:
    return (now_ms + DATE_SLACK_MS) // DAY_MS


def _old_iso(day: int) -> str:
    year, month, date = civil_from_days(day)
    return f"{year:04d}-{month:02d}-{date:02d}"


def _old_iso_day(text: str) -> int | None:
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        return None
    parts = text[:4], text[5:7], text[8:]
    if not all(part.isascii() and part.isdigit() for part in parts):
        return None
    year, month, day = map(int, parts)
    return days_from_civil(year, month, day) if is_valid_date(year, month, day) else None


def _old_day_of(value: Any) -> int | None:
    if isinstance(value, str):
        return _old_iso_day(value)
    if hasattr(value, "timestamp"):
        stamp = _old_ms_of(value)
        return None if stamp is None else stamp // DAY_MS
    year, month, day = (getattr(value, part, None) for part in ("year", "month", "day"))
    if isinstance(year, int) and isinstance(month, int) and isinstance(day, int):
        return days_from_civil(year, month, day)
    return None


def _old_ms_of(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    stamp = getattr(value, "timestamp", None)
    if callable(stamp):
        try:
            return round(float(stamp()) * 1000)
        except (TypeError, ValueError, OverflowError):
            return None
    day = None if isinstance(value, str) else _old_day_of(value)
    return None if day is None else day * DAY_MS


def _old_region_code_problem(text: str) -> str | None:
    if len(text) != 6 or not set(text) <= _OLD_DIGITS:
        return f"{text!r} is not six digits"
    if text[:2] not in PROVINCES:
        return f"{text!r} starts with {text[:2]}, no province of GB/T 2260"
    if text[2:4] == "00" and text[4:] != "00":
        return f"{text!r} has a county part {text[4:]} without a city part"
    return None


def _old_id_number_check_char(first17: str) -> str:
    if len(first17) != 17 or not set(first17) <= _OLD_DIGITS:
        raise ValueError(f"expected 17 digits, got {first17!r}")
    total = sum(int(char) * weight for char, weight in zip(first17, ID_WEIGHTS, strict=True))
    return ID_CHECK_CHARS[total % 11]


def _old_id_number_format_problem(text: str) -> str | None:
    if len(text) != ID_NUMBER_LENGTH:
        return f"{len(text)} characters, an identity number has 18"
    if not set(text[:17]) <= _OLD_DIGITS:
        return "the first 17 characters must be digits"
    if text[17] not in "0123456789X":
        hint = " (GB 11643 writes an upper-case X)" if text[17] == "x" else ""
        return f"check character {text[17]!r} is neither a digit nor X{hint}"
    region = _old_region_code_problem(text[:6])
    if region is not None:
        return f"region part: {region}"
    year, month, day = id_number_birth(text)
    if not is_valid_date(year, month, day):
        return f"birth date {text[6:14]} is no date"
    return None


def _old_credit_code_check_char(first17: str) -> str:
    if len(first17) != 17 or not set(first17) <= _OLD_CREDIT_VALUE.keys():
        raise ValueError(f"expected 17 characters of {CREDIT_ALPHABET}, got {first17!r}")
    total = sum(_OLD_CREDIT_VALUE[c] * w for c, w in zip(first17, CREDIT_WEIGHTS, strict=True))
    return CREDIT_ALPHABET[(31 - total % 31) % 31]


def _old_credit_code_format_problem(text: str) -> str | None:
    if len(text) != CREDIT_CODE_LENGTH:
        return f"{len(text)} characters, a credit code has 18"
    for position, char in enumerate(text, start=1):
        if char not in _OLD_CREDIT_VALUE:
            return f"character {position} {char!r} is not in the alphabet {CREDIT_ALPHABET}"
    region = text[2:8]
    if region != NATIONAL_REGION:
        problem = _old_region_code_problem(region)
        if problem is not None:
            return f"region part (characters 3-8): {problem}"
    return None


if __name__ == "__main__":
    main()
