"""Identity numbers (GB 11643), credit codes (GB 32100), region codes (GB/T 2260) and dates."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.core.identifiers import (
    CREDIT_ALPHABET,
    PROVINCES,
    civil_from_days,
    credit_code_check_char,
    credit_code_problem,
    days_from_civil,
    id_number_birth,
    id_number_check_char,
    id_number_is_male,
    id_number_problem,
    is_valid_date,
    region_code_problem,
)

EPOCH = dt.date(1970, 1, 1)
digits = st.text("0123456789", min_size=1, max_size=1)
regions = st.builds(
    lambda province, city, county: f"{province}{city:02d}{county:02d}" if city else f"{province}0000",
    st.sampled_from(sorted(PROVINCES)), st.integers(0, 99), st.integers(0, 99),
)  # fmt: skip
first17_ids = st.builds(
    lambda region, birth, sequence: f"{region}{birth:%Y%m%d}{sequence:03d}",
    regions, st.dates(dt.date(1900, 1, 1), dt.date(2099, 12, 31)), st.integers(0, 999),
)  # fmt: skip
credit_chars = st.sampled_from(CREDIT_ALPHABET)
first17_credit_codes = st.builds(
    lambda head, region, body: head + region + body,
    st.text(CREDIT_ALPHABET, min_size=2, max_size=2), regions | st.just("100000"),
    st.text(CREDIT_ALPHABET, min_size=9, max_size=9),
)  # fmt: skip


@pytest.mark.parametrize(
    "number",
    [
        "11010519491231002X",  # the example in GB 11643-1999
        "440524188001010014",  # the other example in GB 11643-1999 (born 1880)
    ],
)
def test_published_identity_numbers_are_valid(number: str) -> None:
    """The standard's own examples pass."""
    assert id_number_problem(number) is None


def test_the_standard_example_reads_as_a_woman_born_1949() -> None:
    """Birth date and sex come from characters 7-14 and 17."""
    assert id_number_birth("11010519491231002X") == (1949, 12, 31)
    assert not id_number_is_male("11010519491231002X")
    assert id_number_is_male("440524188001010014")


@pytest.mark.parametrize(
    "code",
    [
        "91350100M000100Y43",  # the example in GB 32100-2015's explanations
        "914403001922038216",  # a Shenzhen company
        "9144030071526726XG",  # another, with letters in the organisation code
        "91110000802100433B",  # a Beijing company
    ],
)
def test_published_credit_codes_are_valid(code: str) -> None:
    """Credit codes printed on real business licences pass."""
    assert credit_code_problem(code) is None


@given(first17_ids)
def test_only_the_computed_check_character_validates_an_identity_number(first17: str) -> None:
    """For any 17 valid leading characters, exactly one check character (the computed one) is valid."""
    expected = id_number_check_char(first17)
    assert id_number_problem(first17 + expected) is None
    for other in "0123456789X".replace(expected, ""):
        assert id_number_problem(first17 + other) == f"check character {other}, expected {expected}"


@given(first17_ids, st.integers(6, 16), digits)
def test_any_single_wrong_digit_of_an_identity_number_is_caught(
    first17: str, position: int, digit: str
) -> None:
    """MOD 11-2 catches every substitution of one digit (a changed birth date may also be no date)."""
    valid = first17 + id_number_check_char(first17)
    changed = valid[:position] + digit + valid[position + 1 :]
    assert (id_number_problem(changed) is None) == (changed == valid)


@given(first17_credit_codes)
def test_only_the_computed_check_character_validates_a_credit_code(first17: str) -> None:
    """For any 17 valid leading characters, exactly one of the 31 check characters is valid."""
    expected = credit_code_check_char(first17)
    assert credit_code_problem(first17 + expected) is None
    for other in CREDIT_ALPHABET.replace(expected, ""):
        assert (
            credit_code_problem(first17 + other) == f"check character {other}, expected {expected}"
        )


@given(first17_credit_codes, st.integers(8, 16), credit_chars)
def test_any_single_wrong_character_of_a_credit_code_is_caught(
    first17: str, position: int, char: str
) -> None:
    """MOD 31 with weights prime to 31 catches every substitution of one character."""
    valid = first17 + credit_code_check_char(first17)
    changed = valid[:position] + char + valid[position + 1 :]
    assert (credit_code_problem(changed) is None) == (changed == valid)


@pytest.mark.parametrize(
    ("number", "needle"),
    [
        ("11010519491231002", "17 characters, an identity number has 18"),
        ("11010519491231002X0", "19 characters"),
        ("1101051949123100AX", "first 17 characters must be digits"),
        ("11010519491231002x", "upper-case X"),
        ("11010519491231002Y", "neither a digit nor X"),
        ("99010519491231002X", "region part: '990105' starts with 99"),
        ("11000519491231002X", "county part 05 without a city part"),
        ("11010519490229002X", "birth date 19490229 is no date"),
        ("110105194912310021", "check character 1, expected X"),
        ("\uff11" + "1010519491231002X", "first 17 characters must be digits"),  # a full-width 1
    ],
)
def test_identity_number_problems_say_what_is_wrong(number: str, needle: str) -> None:
    """Wrong lengths, alphabets, regions, dates and check characters are named."""
    problem = id_number_problem(number)
    assert problem is not None
    assert needle in problem


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        ("91350100M000100Y4", "17 characters, a credit code has 18"),
        ("91350100M000100I43", "character 16 'I' is not in the alphabet"),
        ("91350100m000100Y43", "character 9 'm'"),
        ("91350100O000100Y43", "'O' is not in the alphabet"),
        ("91990100M000100Y43", "region part (characters 3-8): '990100' starts with 99"),
        ("91350100M000100Y44", "check character 4, expected 3"),
    ],
)
def test_credit_code_problems_say_what_is_wrong(code: str, needle: str) -> None:
    """Wrong lengths, characters outside the alphabet (I, O, S, V, Z), regions and checks are named."""
    problem = credit_code_problem(code)
    assert problem is not None
    assert needle in problem


def test_the_credit_alphabet_leaves_out_i_o_s_v_z() -> None:
    """31 characters: the digits and the capitals without I, O, S, V, Z."""
    assert len(CREDIT_ALPHABET) == 31
    assert set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") - set(CREDIT_ALPHABET) == set("IOSVZ")


@pytest.mark.parametrize("bad", ["", "1234567890123456", "12345678901234567X", "1234567890123456X"])
def test_an_identity_check_character_needs_17_digits(bad: str) -> None:
    """Computing the check character of anything but 17 digits is an error."""
    with pytest.raises(ValueError, match="expected 17 digits"):
        id_number_check_char(bad)


@pytest.mark.parametrize("bad", ["", "9135010M000100Y4", "91350100M000100Y43", "91350100M000100I4"])
def test_a_credit_check_character_needs_17_code_characters(bad: str) -> None:
    """Computing the check character of anything but 17 characters of the alphabet is an error."""
    with pytest.raises(ValueError, match="expected 17 characters"):
        credit_code_check_char(bad)


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        ("410102", None), ("410000", None), ("419001", None), ("500103", None), ("820000", None),
        ("41010", "'41010' is not six digits"), ("41010A", "not six digits"),
        ("990102", "starts with 99, no province"), ("000000", "starts with 00"),
        ("410003", "county part 03 without a city part"),
    ],
)  # fmt: skip
def test_region_codes(code: str, problem: str | None) -> None:
    """Six digits, a province of GB/T 2260, no county part without a city part."""
    found = region_code_problem(code)
    assert found == problem if problem is None else (found is not None and problem in found)


@given(st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)))
def test_civil_days_agree_with_the_standard_library(date: dt.date) -> None:
    """Days since 1970 and back match datetime's proleptic Gregorian calendar."""
    days = (date - EPOCH).days
    assert days_from_civil(date.year, date.month, date.day) == days
    assert civil_from_days(days) == (date.year, date.month, date.day)


@given(st.integers(0, 10_000), st.integers(-1, 13), st.integers(-1, 32))
def test_valid_dates_agree_with_the_standard_library(year: int, month: int, day: int) -> None:
    """A year-month-day is valid exactly when datetime accepts it."""
    try:
        dt.date(year, month, day)
    except ValueError:
        accepted = False
    else:
        accepted = True
    assert is_valid_date(year, month, day) == accepted
