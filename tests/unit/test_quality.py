"""Quality rules: each dimension and rule, refuse or flag, the cx-quality header, catalog syntax."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sample_records import FLAWS, LEGAL_ENTITY, LICENCE, PERSON, Flaw, resource_code, sample

from node.catalog_files import load_catalog, packaged_catalog_dir, read_catalog
from node.codec import load_schemas, packaged_schema_dir
from node.core.identifiers import id_number_check_char
from node.core.quality import (
    HEADER_LIMIT,
    NO_RULES,
    Action,
    Dimension,
    Failure,
    QualityHeader,
    QualityRules,
    Status,
    Verdict,
    check,
    overdue,
    parse_header,
    read_quality,
)
from node.errors import EnvelopeError

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
HOUR_MS = 3_600_000
SCHEMAS = load_schemas(packaged_schema_dir())
PERSON_TYPES = {
    "id_number": "string", "name": "string", "gender": "enum", "birth_date": "date",
    "ethnicity": "string", "household_region": "string", "address": "string", "phone": "string",
    "updated_at": "timestamp", "score": "double",
}  # fmt: skip
REQUIRED = ["id_number", "name", "gender", "birth_date", "address"]
PERSON_RULES = """
[quality]
consistency = { id_matches_birth_and_sex = { id = "id_number", birth = "birth_date", sex = "gender" }, region_within_source = "household_region" }
timeliness = { field = "updated_at" }
[quality.items]
id_number = { format = "id_number" }
household_region = { format = "region_code" }
ethnicity = { codes = "GB/T 3304" }
birth_date = { plausible = true }
phone = { non_empty = true }
"""


def rules_of(text: str, cycle: str | None = "daily") -> QualityRules:
    """Parse a ``[quality]`` table for a Person-like resource; it must have no problems."""
    rules, problems = read_quality(tomllib.loads(text)["quality"], PERSON_TYPES, REQUIRED, cycle)
    assert problems == []
    return rules


def problems_of(text: str) -> list[str]:
    """The problems of a ``[quality]`` table, as ``path: message``."""
    _, problems = read_quality(tomllib.loads(text)["quality"], PERSON_TYPES, REQUIRED, "daily")
    return [f"{path}: {message}" for path, message in problems]


def person(**changes: Any) -> dict[str, Any]:
    """A decoded Person that passes PERSON_RULES at NOW, published at 410102."""
    datum = {
        "id_number": "11010519491231002X", "name": "王芳", "gender": "FEMALE",
        "birth_date": dt.date(1949, 12, 31), "ethnicity": "01", "household_region": "410102",
        "address": "人民路1号", "phone": None, "updated_at": NOW - dt.timedelta(hours=3),
        "score": 0.5,
    }  # fmt: skip
    return {**datum, **changes}


def failures(verdict: Verdict) -> set[tuple[str, str, str]]:
    """(dimension, rule, field) of every failure."""
    return {(f.dimension, f.rule, f.field) for f in verdict.failures}


def test_a_good_record_passes_every_checked_dimension() -> None:
    """No failures; conformity, completeness, accuracy, consistency and timeliness all count as passed."""
    verdict = check(rules_of(PERSON_RULES), person(), "410102", NOW_MS)
    assert verdict.failures == ()
    assert not verdict.refused
    assert verdict.status is Status.PASSED
    assert verdict.passed_dimensions == {
        Dimension.CONFORMITY, Dimension.COMPLETENESS, Dimension.ACCURACY,
        Dimension.CONSISTENCY, Dimension.TIMELINESS,
    }  # fmt: skip
    assert verdict.header() == b"v1 pass"


def test_without_rules_every_record_passes_and_nothing_counts_as_checked() -> None:
    """A resource without a quality table checks nothing, not even completeness."""
    verdict = check(NO_RULES, {"id_number": ""}, "410102", NOW_MS)
    assert (verdict.failures, verdict.checked, verdict.refused) == ((), frozenset(), False)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"address": None}, ("completeness", "required", "$.address")),
        ({"address": "  "}, ("completeness", "required", "$.address")),
        ({"phone": ""}, ("completeness", "non_empty", "$.phone")),
        ({"household_region": "4101"}, ("conformity", "region_code", "$.household_region")),
        ({"ethnicity": "99"}, ("conformity", "codes", "$.ethnicity")),
        ({"id_number": "1101051949123100"}, ("conformity", "id_number", "$.id_number")),
        ({"id_number": "110105194912310021"}, ("accuracy", "id_number_check", "$.id_number")),
        ({"birth_date": dt.date(1949, 12, 30)}, ("consistency", "id_matches_birth_and_sex", "$.birth_date")),
        ({"gender": "MALE"}, ("consistency", "id_matches_birth_and_sex", "$.gender")),
        ({"household_region": "410203"}, ("consistency", "region_within_source", "$.household_region")),
        ({"updated_at": NOW - dt.timedelta(hours=49)}, ("timeliness", "max_age", "$.updated_at")),
    ],
)  # fmt: skip
def test_each_rule_fails_with_its_dimension_rule_and_field(
    changes: dict[str, Any], expected: tuple[str, str, str]
) -> None:
    """One broken item gives the failure of the rule it breaks, naming the field path."""
    verdict = check(rules_of(PERSON_RULES), person(**changes), "410102", NOW_MS)
    assert expected in failures(verdict), verdict.failures
    assert Dimension(expected[0]) in verdict.failed_dimensions
    assert Dimension(expected[0]) not in verdict.passed_dimensions


def test_a_malformed_identity_number_is_not_compared_with_birth_and_sex() -> None:
    """Conformity reports it once; the consistency rule has nothing to compare with."""
    verdict = check(rules_of(PERSON_RULES), person(id_number="x", gender="MALE"), "410102", NOW_MS)
    assert failures(verdict) == {("conformity", "id_number", "$.id_number")}


def test_unspecified_sex_is_not_compared() -> None:
    """A gender of UNSPECIFIED cannot disagree with the identity number."""
    verdict = check(rules_of(PERSON_RULES), person(gender="UNSPECIFIED"), "410102", NOW_MS)
    assert verdict.failures == ()


def test_a_region_is_inside_every_ancestor_of_itself() -> None:
    """The province and the city contain the county's records; a sibling county does not."""
    rules = rules_of(PERSON_RULES)
    for source in ("410102", "410100", "410000"):
        assert check(rules, person(), source, NOW_MS).failures == ()
    assert check(rules, person(), "410103", NOW_MS).failures != ()


def test_an_identity_number_born_in_the_future_is_inaccurate() -> None:
    """A valid number whose birth date lies after today fails id_number_birth."""
    number = "41010220991231001"  # born 2099-12-31
    number += id_number_check_char(number)
    verdict = check(rules_of(PERSON_RULES), person(id_number=number, gender="MALE",
                    birth_date=dt.date(2099, 12, 31)), "410102", NOW_MS)  # fmt: skip
    assert ("accuracy", "id_number_birth", "$.id_number") in failures(verdict)
    assert ("accuracy", "plausible", "$.birth_date") in failures(verdict)


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ("{ plausible = true }", dt.date(1899, 12, 31), "plausible"),
        ("{ plausible = true }", (NOW + dt.timedelta(days=1)).date(), "plausible"),
        ("{ min_date = 1950-01-01 }", dt.date(1949, 12, 31), "min_date"),
        ('{ max_date = "1940-01-01" }', dt.date(1949, 12, 31), "max_date"),
    ],
)
def test_date_rules(rule: str, value: dt.date, expected: str) -> None:
    """Plausible dates lie between 1900 and today; min_date and max_date bound them."""
    rules = rules_of(f"[quality.items]\nbirth_date = {rule}\n")
    verdict = check(rules, person(birth_date=value), "410102", NOW_MS)
    assert failures(verdict) == {("accuracy", expected, "$.birth_date")}


def test_today_is_plausible_in_every_time_zone() -> None:
    """A date that is already today east of UTC is not in the future."""
    rules = rules_of("[quality.items]\nbirth_date = { plausible = true }\n")
    late_evening = int(dt.datetime(2026, 6, 1, 23, 0, tzinfo=UTC).timestamp() * 1000)
    assert (
        check(rules, person(birth_date=dt.date(2026, 6, 2)), "410102", late_evening).failures == ()
    )


def test_a_timestamp_minutes_in_the_future_is_implausible() -> None:
    """Timestamps are compared to the millisecond, allowing five minutes of clock skew."""
    rules = rules_of("[quality.items]\nupdated_at = { plausible = true }\n")
    skewed = check(rules, person(updated_at=NOW + dt.timedelta(minutes=4)), "410102", NOW_MS)
    ahead = check(rules, person(updated_at=NOW + dt.timedelta(minutes=6)), "410102", NOW_MS)
    assert (skewed.failures, failures(ahead)) == ((), {("accuracy", "plausible", "$.updated_at")})


@pytest.mark.parametrize(
    ("value", "expected"),
    [(-0.5, {("accuracy", "min", "$.score")}), (1.5, {("accuracy", "max", "$.score")}), (1, set())],
)
def test_numeric_ranges(value: float, expected: set[tuple[str, str, str]]) -> None:
    """The min and max rules bound a number, both inclusive."""
    rules = rules_of("[quality.items]\nscore = { min = 0, max = 1 }\n")
    assert failures(check(rules, person(score=value), "410102", NOW_MS)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2024-02-29", set()), ("2023-02-29", {("conformity", "date", "$.address")}),
     ("2024-2-9", {("conformity", "date", "$.address")})],
)  # fmt: skip
def test_dates_written_as_text(value: str, expected: set[tuple[str, str, str]]) -> None:
    """A string item with format date holds a real YYYY-MM-DD date."""
    rules = rules_of('[quality.items]\naddress = { format = "date" }\n')
    assert failures(check(rules, person(address=value), "410102", NOW_MS)) == expected


def test_a_date_not_before_another() -> None:
    """not_before compares two date items (consistency)."""
    rules = rules_of('[quality.items]\nbirth_date = { not_before = "updated_at" }\n')
    verdict = check(rules, person(), "410102", NOW_MS)
    assert failures(verdict) == {("consistency", "not_before", "$.birth_date")}


def test_the_format_can_follow_another_item() -> None:
    """format_by picks the format by another item's value; values without one are not checked."""
    text = '[quality.items]\nid_number = { format_by = "name", formats = { ID = "id_number", CC = "credit_code" } }\n'
    rules = rules_of(text)
    assert check(rules, person(name="ID"), "410102", NOW_MS).failures == ()
    assert failures(check(rules, person(name="CC"), "410102", NOW_MS)) == {
        ("conformity", "credit_code", "$.id_number")
    }
    assert check(rules, person(name="PASSPORT"), "410102", NOW_MS).failures == ()


def test_timeliness_follows_the_update_cycle_or_an_explicit_age() -> None:
    """Daily allows two days, realtime one hour; max_age_hours overrides; cx-created-ms is the envelope's."""
    old = person(updated_at=NOW - dt.timedelta(hours=30))
    assert check(rules_of(PERSON_RULES, "daily"), old, "410102", NOW_MS).failures == ()
    assert failures(check(rules_of(PERSON_RULES, "realtime"), old, "410102", NOW_MS)) == {
        ("timeliness", "max_age", "$.updated_at")
    }
    strict = rules_of('[quality]\ntimeliness = { field = "updated_at", max_age_hours = 2 }\n')
    assert check(strict, old, "410102", NOW_MS).failures != ()
    created = rules_of('[quality]\ntimeliness = { field = "cx-created-ms" }\n', "realtime")
    late = check(created, person(), "410102", NOW_MS, created_ms=NOW_MS - 2 * HOUR_MS)
    assert failures(late) == {("timeliness", "max_age", "cx-created-ms")}
    assert check(created, person(), "410102", NOW_MS, created_ms=NOW_MS - HOUR_MS).failures == ()


def test_default_actions_refuse_conformity_and_completeness_and_flag_the_rest() -> None:
    """A wrong check character is flagged and passes; a bad region code or an empty item refuses."""
    rules = rules_of(PERSON_RULES)
    flagged = check(rules, person(id_number="110105194912310021"), "410102", NOW_MS)
    assert (flagged.refused, flagged.status) == (False, Status.FLAGGED)
    assert check(rules, person(household_region="41AB02"), "410102", NOW_MS).refused
    assert check(rules, person(name=""), "410102", NOW_MS).refused
    assert rules.action(Dimension.ACCURACY) is Action.FLAG


def test_actions_are_configurable_per_dimension() -> None:
    """Refusing accuracy refuses a wrong check character; flagging conformity lets a bad code pass."""
    text = PERSON_RULES.replace(
        "[quality]\n", '[quality]\nactions = { accuracy = "refuse", conformity = "flag" }\n'
    )
    rules = rules_of(text)
    refused = check(rules, person(id_number="110105194912310021"), "410102", NOW_MS)
    assert refused.refused
    assert (
        "accuracy id_number_check $.id_number: check character 1, expected X" in refused.message()
    )
    passed = check(rules, person(ethnicity="99"), "410102", NOW_MS)
    assert (passed.refused, passed.status) == (False, Status.FLAGGED)


def test_a_refusal_names_every_failed_rule_and_field() -> None:
    """All failures are kept, not only the first."""
    verdict = check(
        rules_of(PERSON_RULES), person(gender="MALE", ethnicity="99", address=""), "410102", NOW_MS
    )
    assert failures(verdict) == {
        ("completeness", "required", "$.address"), ("conformity", "codes", "$.ethnicity"),
        ("consistency", "id_matches_birth_and_sex", "$.gender"),
    }  # fmt: skip
    assert verdict.refused
    assert verdict.header() == (
        b"v1 refuse completeness:$.address conformity:$.ethnicity consistency:$.gender"
    )


def test_flagged_header_reads_back() -> None:
    """The header of a flagged record parses into its status and marks."""
    verdict = check(
        rules_of(PERSON_RULES), person(id_number="110105194912310021"), "410102", NOW_MS
    )
    assert verdict.header() == b"v1 flag accuracy:$.id_number"
    assert parse_header(verdict.header()) == QualityHeader(
        Status.FLAGGED, ((Dimension.ACCURACY, "$.id_number"),)
    )


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,80}", fullmatch=True)
failure_lists = st.lists(
    st.builds(
        Failure, st.sampled_from(list(Dimension)[:5]), st.just("rule"),
        names.map(lambda n: f"$.{n}"), st.just("wrong"),
    ),
    max_size=40,
)  # fmt: skip


@given(failure_lists, st.booleans())
def test_the_header_round_trips_within_its_bound(found: list[Failure], refused: bool) -> None:
    """Any verdict's header is ASCII, at most 512 bytes, and parses back to its leading marks."""
    verdict = Verdict(tuple(found), refused and bool(found), frozenset())
    raw = verdict.header()
    assert len(raw) <= HEADER_LIMIT
    parsed = parse_header(raw)
    summary = verdict.summary()
    assert parsed.status is summary.status
    assert parsed.marks == summary.marks[: len(parsed.marks)]
    assert len(parsed.marks) + parsed.omitted == len(summary.marks)


def test_a_long_header_counts_what_did_not_fit() -> None:
    """Marks past 512 bytes become a +N count."""
    many = tuple(Failure(Dimension.ACCURACY, "r", f"$.item_{n:03d}", "x") for n in range(60))
    raw = Verdict(many, refused=False, checked=frozenset()).header()
    assert len(raw) <= HEADER_LIMIT
    assert raw.startswith(b"v1 flag accuracy:$.item_000 ")
    parsed = parse_header(raw)
    assert parsed.omitted > 0
    assert raw.endswith(f" +{parsed.omitted}".encode())


@pytest.mark.parametrize(
    "raw",
    [b"", b"v2 pass", b"v1 maybe", b"v1 pass accuracy:$.x", b"v1 flag", b"v1 flag color:$.x",
     b"v1 flag accuracy:", b"v1 flag accuracy:$.x +0", b"v1 flag accuracy:$.x +x",
     "v1 flag accuracy:$.名".encode(), b"v1 flag " + b"accuracy:$.x " * 50],
)  # fmt: skip
def test_malformed_headers_are_refused(raw: bytes) -> None:
    """Wrong version, status, dimension, count, encoding or length raises EnvelopeError."""
    with pytest.raises(EnvelopeError, match="cx-quality"):
        parse_header(raw)


def test_overdue_lists_resources_silent_longer_than_their_cycle() -> None:
    """Accessibility: silent past the allowance (or never published since watching began) is overdue."""
    daily = rules_of("[quality]\naccessibility = true\n", "daily")
    hourly = rules_of("[quality]\naccessibility = { max_silence_hours = 1 }\n")
    by_resource = {"B": daily, "A": hourly, "C": daily, "D": NO_RULES}
    last = {"A": NOW_MS - 2 * HOUR_MS, "B": NOW_MS - 47 * HOUR_MS}
    late = overdue(last, by_resource, NOW_MS, since_ms=NOW_MS - 50 * HOUR_MS)
    assert [(o.resource, o.last_published_ms, o.silent_ms) for o in late] == [
        ("A", NOW_MS - 2 * HOUR_MS, 2 * HOUR_MS), ("C", None, 50 * HOUR_MS),
    ]  # fmt: skip
    assert overdue(last, by_resource, NOW_MS, since_ms=NOW_MS - HOUR_MS)[0].resource == "A"
    assert [o.resource for o in overdue({}, {"C": daily}, NOW_MS)] == ["C"]


@pytest.mark.parametrize(
    ("text", "path", "needle"),
    [
        ('[quality.items]\nid_number = { format = "idnum" }', "quality.items.id_number.format", "unknown format 'idnum'"),
        ('[quality.items]\nbirth_date = { format = "region_code" }', "quality.items.birth_date.format", "does not apply to a date item"),
        ('[quality.items]\nnickname = { non_empty = true }', "quality.items.nickname", "not an information item"),
        ('[quality.items]\nname = { pattern = "x" }', "quality.items.name.pattern", "unknown key"),
        ('[quality.items]\nname = { codes = [] }', "quality.items.name.codes", "non-empty array"),
        ('[quality.items]\nname = { codes = "GB/T 9999" }', "quality.items.name.codes", "unknown code list"),
        ('[quality.items]\nscore = { min = 2, max = 1 }', "quality.items.score", "min 2 is above max 1"),
        ('[quality.items]\nscore = { min = "0" }', "quality.items.score.min", "expected a number"),
        ('[quality.items]\nname = { min = 0 }', "quality.items.name.min", "does not apply to a string"),
        ('[quality.items]\nbirth_date = { min_date = "1.1.1900" }', "quality.items.birth_date.min_date", "expected a date"),
        ('[quality.items]\nbirth_date = { plausible = "yes" }', "quality.items.birth_date.plausible", "true or false"),
        ('[quality.items]\nbirth_date = { not_before = "nobody" }', "quality.items.birth_date.not_before", "'nobody' is not an information item"),
        ('[quality.items]\nname = { format_by = "gender" }', "quality.items.name", "format_by and formats go together"),
        ('[quality]\nactions = { accessibility = "refuse" }', "quality.actions.accessibility", "unknown key"),
        ('[quality]\nactions = { accuracy = "drop" }', "quality.actions.accuracy", "not refuse or flag"),
        ('[quality]\ntimeliness = { field = "name" }', "quality.timeliness.field", "name is a string, expected timestamp or date"),
        ('[quality]\ntimeliness = { field = "updated_at", max_age_hours = 0 }', "quality.timeliness.max_age_hours", "positive number"),
        ('[quality]\naccessibility = { max_silence_hours = -1 }', "quality.accessibility.max_silence_hours", "positive number"),
        ('[quality]\nconsistency = { id_matches_birth_and_sex = { id = "idno", birth = "birth_date" } }', "quality.consistency.id_matches_birth_and_sex.id", "'idno' is not an information item"),
        ('[quality]\nconsistency = { id_matches_birth_and_sex = { id = "id_number" } }', "quality.consistency.id_matches_birth_and_sex", "birth item, the sex item or both"),
        ('[quality]\nconsistency = { region_within_source = 5 }', "quality.consistency.region_within_source", "an item name or an array"),
        ('[quality]\nfreshness = 1', "quality.freshness", "unknown key"),
    ],
)  # fmt: skip
def test_quality_table_problems_name_their_path(text: str, path: str, needle: str) -> None:
    """Every mistake in a quality table is reported with its path below the resource."""
    found = problems_of(text)
    assert any(p.startswith(f"{path}: ") and needle in p for p in found), found


def test_catalog_problems_carry_file_resource_and_quality_path(tmp_path: Path) -> None:
    """In a catalog file, a quality problem names the file, the resource and the rule's path."""
    shipped = (packaged_catalog_dir() / "demo.toml").read_text(encoding="utf-8")
    broken = shipped.replace(
        'id_number = { format = "id_number" }', 'id_number = { format = "idnum" }', 1
    )
    broken = broken.replace(
        'holder_id = { format_by = "holder_id_type", formats = { ID_NUMBER',
        'holder_id = { format_by = "holder_id_type", formats = { PASSPORT_NO = "id_number", ID_NUMBER',
        1,
    )
    broken = broken.replace(
        "registered_capital_fen = { min = 0 }",
        'registered_capital_fen = { min = 0 }\nstatus = { codes = ["ACTIVE", "GONE"] }',
        1,
    )
    (tmp_path / "demo.toml").write_text(broken, encoding="utf-8")
    found = [str(p) for p in read_catalog(tmp_path, SCHEMAS)[1]]
    file = tmp_path / "demo.toml"
    assert found == [
        f"{file}: 410000-PSB-00001 quality.items.id_number.format: unknown format 'idnum' (one of region_code, date, id_number, credit_code)",
        f"{file}: 410000-SAMR-00001 quality.items.status.codes: 'GONE' is not a symbol of the enum (ACTIVE, REVOKED, CANCELLED, MOVED_OUT)",
        f"{file}: 410000-DSB-00001 quality.items.holder_id.formats: 'PASSPORT_NO' is not a symbol of holder_id_type",
    ]


def test_the_shipped_catalog_has_rules_for_its_base_resources() -> None:
    """Person, LegalEntity and Licence entries declare check digits, and Person its consistency."""
    catalog = load_catalog(packaged_catalog_dir(), SCHEMAS)
    person_rules = getattr(catalog.get("410102-PSB-00001"), "quality", NO_RULES)
    assert person_rules.identity is not None
    assert person_rules.region_within_source == ("household_region",)
    assert person_rules.action(Dimension.ACCURACY) is Action.REFUSE
    for code in catalog.codes():
        assert getattr(catalog.get(code), "quality", NO_RULES) is not NO_RULES, code


SAMPLE_REGIONS = ("410000", "410100", "410102", "410103", "419001")


@pytest.mark.parametrize("schema", [PERSON, LEGAL_ENTITY, LICENCE])
def test_sample_records_pass_the_shipped_catalog(schema: str) -> None:
    """Generated records of every sample resource and region pass, whatever the seed."""
    catalog = load_catalog(packaged_catalog_dir(), SCHEMAS)
    for region in SAMPLE_REGIONS:
        rules = getattr(catalog.get(resource_code(schema, region)), "quality", NO_RULES)
        for seed in range(40):
            made = sample(SCHEMAS, schema, region, "region:410000", seed=seed, created_ms=NOW_MS)
            _, datum = SCHEMAS.decode(made.value)
            verdict = check(rules, datum, region, NOW_MS + 60_000, created_ms=NOW_MS)
            assert verdict.failures == (), (region, seed, verdict.failures)
            assert verdict.checked


def test_samples_are_deterministic_per_seed() -> None:
    """The same seed gives the same bytes; another seed another record."""
    one, again, other = (
        sample(SCHEMAS, PERSON, "410102", "region:410000", seed=s, created_ms=NOW_MS)
        for s in (1, 1, 2)
    )
    assert one == again
    assert one.value != other.value


@pytest.mark.parametrize(
    ("schema", "flaw"), [(schema, flaw) for schema, flaws in FLAWS.items() for flaw in flaws]
)
def test_flawed_samples_are_refused_by_the_shipped_catalog_for_the_intended_rule(
    schema: str, flaw: Flaw
) -> None:
    """Each deliberate flaw fails its rule, and the demo catalog refuses the record."""
    catalog = load_catalog(packaged_catalog_dir(), SCHEMAS)
    rules = getattr(catalog.get(resource_code(schema, "410102")), "quality", NO_RULES)
    for seed in range(10):
        made = sample(
            SCHEMAS, schema, "410102", "region:410000", seed=seed, created_ms=NOW_MS, flaw=flaw
        )
        _, datum = SCHEMAS.decode(made.value)
        verdict = check(rules, datum, "410102", NOW_MS + 60_000, created_ms=NOW_MS)
        assert FLAWS[schema][flaw] in failures(verdict), verdict.failures
        assert verdict.refused


def test_a_flaw_must_fit_the_schema() -> None:
    """A licence has no identity number to break."""
    with pytest.raises(ValueError, match="cannot carry"):
        sample(
            SCHEMAS, LICENCE, "410102", "region:410000", seed=1, created_ms=NOW_MS, flaw=Flaw.ID_SEX
        )


def test_a_header_shows_a_prefix_of_the_marks_when_one_does_not_fit() -> None:
    """A long mark that does not fit ends the list: no shorter later mark is shown after it."""
    marks = tuple(
        [(Dimension.ACCURACY, f"$.A{'0' * 20}{i}") for i in range(15)]
        + [(Dimension.ACCURACY, "$." + "x" * 60), (Dimension.ACCURACY, "$.A0")]
    )
    header = QualityHeader(Status.FLAGGED, marks)
    rendered = header.render()
    parsed = parse_header(rendered)
    assert len(rendered) <= HEADER_LIMIT
    assert parsed.marks == marks[: len(parsed.marks)]
    assert parsed.omitted == len(marks) - len(parsed.marks) > 0
