"""Identifiers of people, organisations and places, and their check characters: pure text rules.

- Citizen identity number (公民身份号码, GB 11643): 18 characters — a region code (6 digits), the
  birth date ``YYYYMMDD``, a 3-digit sequence whose last digit is odd for men and even for women,
  and a check character (ISO 7064 MOD 11-2: a digit or ``X``).
- Unified social credit code (统一社会信用代码, GB 32100-2015): 18 characters from a 31-character
  alphabet without I, O, S, V, Z — registering authority, entity type, a region code (characters
  3-8), the organisation code (9-17) and a MOD 31 check character.
- Region code (行政区划代码, GB/T 2260): 6 digits, a province from the standard's list; a county
  part is only allowed under a city part (``XX00YY`` is no code).

Each ``*_problem`` function returns None for a valid text, else one sentence saying what is wrong.
Dates are checked with integer arithmetic (proleptic Gregorian), so nothing here reads a clock.
"""

from __future__ import annotations

ID_NUMBER_LENGTH = 18
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
"""Weight of each of the 17 digits: 2**(17 - i) mod 11 (ISO 7064 MOD 11-2)."""
ID_CHECK_CHARS = "10X98765432"
"""Check character by (weighted sum mod 11)."""

CREDIT_CODE_LENGTH = 18
CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
"""Weight of each of the 17 characters' values (their index in the alphabet): 3**i mod 31."""
_CREDIT_CHARS = frozenset(CREDIT_ALPHABET)
_CREDIT_AS_BASE34 = str.maketrans(CREDIT_ALPHABET, "0123456789ABCDEFGHIJKLMNOPQRSTU")
"""Each code character to the base-34 digit of its value (``int`` then does the weighted sum)."""

PROVINCES = frozenset((
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41",
    "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71",
    "81", "82",
))  # fmt: skip
"""The first two digits of every GB/T 2260 province-level region."""
NATIONAL_REGION = "100000"
"""The region part of credit codes registered at the national level (e.g. ``91100000…``)."""

_EPOCH_DAYS = 719_468  # days from 0000-03-01 to 1970-01-01


def region_code_problem(text: str) -> str | None:
    """Say what makes ``text`` no GB/T 2260 region code, or None."""
    if len(text) != 6 or not (text.isdigit() and text.isascii()):
        return f"{text!r} is not six digits"
    if text[:2] not in PROVINCES:
        return f"{text!r} starts with {text[:2]}, no province of GB/T 2260"
    if text[2:4] == "00" and text[4:] != "00":
        return f"{text!r} has a county part {text[4:]} without a city part"
    return None


def id_number_check_char(first17: str) -> str:
    """Return the GB 11643 check character of 17 digits; raise ValueError for anything else."""
    if len(first17) != 17 or not (first17.isdigit() and first17.isascii()):
        raise ValueError(f"expected 17 digits, got {first17!r}")
    # The weights are 2**(17 - i) mod 11 (i = 0..16) and 13 = 2 mod 11, so the weighted sum is,
    # mod 11, the digits read as a base-13 number (int() runs the loop in C).
    total = int(first17, 13) * 2
    return ID_CHECK_CHARS[total % 11]


def id_number_format_problem(text: str) -> str | None:
    """Say what is wrong with ``text`` as an identity number apart from its check character."""
    if len(text) != ID_NUMBER_LENGTH:
        return f"{len(text)} characters, an identity number has 18"
    first17 = text[:17]
    if not (first17.isdigit() and first17.isascii()):
        return "the first 17 characters must be digits"
    if text[17] not in "0123456789X":
        hint = " (GB 11643 writes an upper-case X)" if text[17] == "x" else ""
        return f"check character {text[17]!r} is neither a digit nor X{hint}"
    region = region_code_problem(text[:6])
    if region is not None:
        return f"region part: {region}"
    year, month_day = divmod(int(text[6:14]), 10_000)  # id_number_birth, on checked digits
    month, day = divmod(month_day, 100)
    if not is_valid_date(year, month, day):
        return f"birth date {text[6:14]} is no date"
    return None


def id_number_problem(text: str) -> str | None:
    """Say what makes ``text`` no valid GB 11643 citizen identity number, or None."""
    problem = id_number_format_problem(text)
    if problem is not None:
        return problem
    expected = id_number_check_char(text[:17])
    if text[17] != expected:
        return f"check character {text[17]}, expected {expected}"
    return None


def id_number_birth(text: str) -> tuple[int, int, int]:
    """Return the (year, month, day) written in an identity number (characters 7-14)."""
    return int(text[6:10]), int(text[10:12]), int(text[12:14])


def id_number_is_male(text: str) -> bool:
    """Tell whether an identity number is a man's (its 17th digit is odd)."""
    return int(text[16]) % 2 == 1


def credit_code_check_char(first17: str) -> str:
    """Return the GB 32100 check character of 17 code characters; raise ValueError otherwise."""
    if len(first17) != 17 or not _CREDIT_CHARS.issuperset(first17):
        raise ValueError(f"expected 17 characters of {CREDIT_ALPHABET}, got {first17!r}")
    # The weights are 3**i mod 31 and 34 = 3 mod 31, so the weighted sum is, mod 31, the values
    # read as a base-34 number, lowest digit first (int() runs the loop in C).
    total = int(first17.translate(_CREDIT_AS_BASE34)[::-1], 34)
    return CREDIT_ALPHABET[(31 - total % 31) % 31]


def credit_code_format_problem(text: str) -> str | None:
    """Say what is wrong with ``text`` as a credit code apart from its check character."""
    if len(text) != CREDIT_CODE_LENGTH:
        return f"{len(text)} characters, a credit code has 18"
    if not _CREDIT_CHARS.issuperset(text):
        for position, char in enumerate(text, start=1):
            if char not in _CREDIT_CHARS:
                return f"character {position} {char!r} is not in the alphabet {CREDIT_ALPHABET}"
    region = text[2:8]
    if region != NATIONAL_REGION:
        problem = region_code_problem(region)
        if problem is not None:
            return f"region part (characters 3-8): {problem}"
    return None


def credit_code_problem(text: str) -> str | None:
    """Say what makes ``text`` no valid GB 32100 unified social credit code, or None."""
    problem = credit_code_format_problem(text)
    if problem is not None:
        return problem
    expected = credit_code_check_char(text[:17])
    if text[17] != expected:
        return f"check character {text[17]}, expected {expected}"
    return None


def is_leap(year: int) -> bool:
    """Tell whether ``year`` is a Gregorian leap year."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def is_valid_date(year: int, month: int, day: int) -> bool:
    """Tell whether year-month-day is a date of the Gregorian calendar (years 1-9999)."""
    if not 1 <= year <= 9999 or not 1 <= month <= 12:
        return False
    length = (31, 29 if is_leap(year) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    return 1 <= day <= length


def days_from_civil(year: int, month: int, day: int) -> int:
    """Return the days from 1970-01-01 to a Gregorian date (negative before)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - _EPOCH_DAYS


def civil_from_days(days: int) -> tuple[int, int, int]:
    """Return the (year, month, day) ``days`` after 1970-01-01."""
    days += _EPOCH_DAYS
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + (3 if shifted_month < 10 else -9)
    return year_of_era + era * 400 + (month <= 2), month, day
