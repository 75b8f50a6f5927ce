"""Data quality rules (six dimensions) and the checker: pure, over one decoded record.

A resource's rules come from its ``[resource.quality]`` catalog table (``read_quality`` parses it
and reports problems with their paths); without one a resource has ``NO_RULES`` (all pass).

Record dimensions and their rules (``Failure.rule``):
- conformity: ``region_code`` (GB/T 2260), ``date`` (ISO ``YYYY-MM-DD`` text), ``id_number`` and
  ``credit_code`` (length, alphabet, region and birth-date parts), ``codes`` (an enumeration or code
  list);
- completeness: ``required`` (every item the catalog marks required is present and non-empty),
  ``non_empty`` (an optional item, when present, is not empty);
- accuracy: ``id_number_check``, ``credit_code_check`` (check characters), ``id_number_birth`` and
  ``plausible`` (a date neither in the future nor before 1900), ``min``/``max``,
  ``min_date``/``max_date``;
- consistency: ``id_matches_birth_and_sex`` (GB 11643: the birth date and the 17th digit, odd for
  men), ``region_within_source`` (a region item lies inside the envelope's source region),
  ``not_before`` (a date item is not earlier than another);
- timeliness: ``max_age`` (now minus an item's timestamp, or the envelope's ``cx-created-ms``,
  within the update cycle's allowance).
Accessibility is judged per resource, not per record: ``overdue`` lists resources whose source has
not published within its allowance.

Each record dimension's action is refuse or flag (``DEFAULT_ACTIONS``: conformity and completeness
refuse; accuracy, consistency and timeliness flag and pass). A verdict travels with the record as
the ``cx-quality`` header (``v1 pass`` or ``v1 flag accuracy:$.id_number``, at most 512 bytes), so
later hops need not decode the value again.

Decoded values are duck-typed (``.year/.month/.day``, ``.timestamp()``): the core imports no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from node.core.identifiers import (
    civil_from_days,
    credit_code_check_char,
    credit_code_format_problem,
    days_from_civil,
    id_number_check_char,
    id_number_format_problem,
    id_number_is_male,
    is_valid_date,
    region_code_problem,
)
from node.core.topology import contains
from node.errors import EnvelopeError

QUALITY_HEADER = "cx-quality"
HEADER_LIMIT = 512
"""Most bytes a ``cx-quality`` header takes; marks past it are counted as ``+N``."""
CREATED = "cx-created-ms"
"""The timeliness ``field`` naming the envelope's creation time instead of an item."""

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MAX_AGE_MS: Mapping[str, int] = {
    "realtime": HOUR_MS, "daily": 2 * DAY_MS, "weekly": 8 * DAY_MS, "monthly": 32 * DAY_MS,
    "quarterly": 93 * DAY_MS, "yearly": 366 * DAY_MS,
}  # fmt: skip
"""Allowed age of a record, and silence of a source, by update cycle (one cycle plus slack)."""
EARLIEST_PLAUSIBLE_DAY = days_from_civil(1900, 1, 1)
DATE_SLACK_MS = 14 * HOUR_MS
"""A date is in the future only once it is past in every time zone (UTC+14)."""
TIMESTAMP_SLACK_MS = 5 * 60_000
"""Clock skew allowed between a source department and this node."""

CODE_LISTS: Mapping[str, frozenset[str]] = {
    "GB/T 3304": frozenset(f"{n:02d}" for n in (*range(1, 57), 97, 98)),
}
"""Built-in code lists a catalog names instead of listing codes (GB/T 3304: ethnic groups)."""
_MALE = frozenset(("MALE", "M", "1", "男"))
_FEMALE = frozenset(("FEMALE", "F", "2", "女"))


class Dimension(StrEnum):
    """The six quality dimensions (规范性, 完整性, 准确性, 一致性, 及时性, 可访问性)."""

    CONFORMITY = "conformity"
    COMPLETENESS = "completeness"
    ACCURACY = "accuracy"
    CONSISTENCY = "consistency"
    TIMELINESS = "timeliness"
    ACCESSIBILITY = "accessibility"


RECORD_DIMENSIONS = tuple(d for d in Dimension if d is not Dimension.ACCESSIBILITY)


class Action(StrEnum):
    """What a failure of a dimension does to the record."""

    REFUSE = "refuse"  # the record is refused, naming every failed rule and field
    FLAG = "flag"  # the record passes, its cx-quality header naming what failed


DEFAULT_ACTIONS: Mapping[Dimension, Action] = {
    Dimension.CONFORMITY: Action.REFUSE,
    Dimension.COMPLETENESS: Action.REFUSE,
    Dimension.ACCURACY: Action.FLAG,
    Dimension.CONSISTENCY: Action.FLAG,
    Dimension.TIMELINESS: Action.FLAG,
}


class Format(StrEnum):
    """Text formats an information item can be held to."""

    REGION_CODE = "region_code"
    DATE = "date"
    ID_NUMBER = "id_number"
    CREDIT_CODE = "credit_code"


@dataclass(frozen=True, slots=True)
class ItemRule:
    """The checks on one information item; dates are days since 1970-01-01."""

    name: str
    format: Format | None = None
    format_by: str | None = None  # the item whose value picks the format from ``formats``
    formats: tuple[tuple[str, Format], ...] = ()
    codes: frozenset[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_date: int | None = None
    max_date: int | None = None
    plausible: bool = False
    not_before: str | None = None
    non_empty: bool = False


@dataclass(frozen=True, slots=True)
class IdentityRule:
    """The birth date and sex items that must agree with the identity number item ``id``."""

    id: str
    birth: str | None = None
    sex: str | None = None


@dataclass(frozen=True, slots=True)
class QualityRules:
    """A resource's quality rules; ``publish_within_ms`` is its accessibility allowance."""

    items: tuple[ItemRule, ...] = ()
    required: tuple[str, ...] = ()
    identity: IdentityRule | None = None
    region_within_source: tuple[str, ...] = ()
    timeliness_field: str | None = None
    max_age_ms: int | None = None
    publish_within_ms: int | None = None
    actions: tuple[tuple[Dimension, Action], ...] = tuple(DEFAULT_ACTIONS.items())
    refusing: frozenset[Dimension] = field(init=False, repr=False, compare=False)
    checked: frozenset[Dimension] = field(init=False, repr=False, compare=False)
    _compiled: _Compiled | None = field(default=None, init=False, repr=False, compare=False)
    """The record checkers, built by ``check`` on first use."""

    def __post_init__(self) -> None:
        refusing = frozenset(d for d, a in self.actions if a is Action.REFUSE)
        object.__setattr__(self, "refusing", refusing)
        object.__setattr__(self, "checked", frozenset(self._dimensions()))

    def _dimensions(self) -> Iterator[Dimension]:
        if self.required or any(r.non_empty for r in self.items):
            yield Dimension.COMPLETENESS
        for rule in self.items:
            if rule.format or rule.format_by or rule.codes is not None:
                yield Dimension.CONFORMITY
            if rule.format in (Format.ID_NUMBER, Format.CREDIT_CODE) or rule.format_by:
                yield Dimension.ACCURACY
            if rule.plausible or rule.min_date is not None or rule.max_date is not None:
                yield Dimension.ACCURACY
            if rule.minimum is not None or rule.maximum is not None:
                yield Dimension.ACCURACY
            if rule.not_before:
                yield Dimension.CONSISTENCY
        if self.identity or self.region_within_source:
            yield Dimension.CONSISTENCY
        if self.timeliness_field and self.max_age_ms is not None:
            yield Dimension.TIMELINESS

    def action(self, dimension: Dimension) -> Action:
        """Return what a failure of ``dimension`` does."""
        return Action.REFUSE if dimension in self.refusing else Action.FLAG


NO_RULES = QualityRules()


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed rule: its dimension, the rule, the field path (``$.item``) and what is wrong."""

    dimension: Dimension
    rule: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.dimension} {self.rule} {self.field}: {self.message}"


class Status(StrEnum):
    """The overall verdict a ``cx-quality`` header carries."""

    PASSED = "pass"
    FLAGGED = "flag"
    REFUSED = "refuse"


@dataclass(frozen=True, slots=True)
class QualityHeader:
    """A ``cx-quality`` header: status, (dimension, field) marks, and how many marks did not fit."""

    status: Status
    marks: tuple[tuple[Dimension, str], ...] = ()
    omitted: int = 0

    def render(self) -> bytes:
        """Return the header value: ASCII, at most HEADER_LIMIT bytes.

        Marks are kept in order up to the first that does not fit (or is not plain ASCII); it and
        every later one are only counted (``+N``), so the marks shown are a prefix of the summary.
        """
        text = f"v1 {self.status}"
        omitted = self.omitted
        for index, (dimension, path) in enumerate(self.marks):
            token = f" {dimension}:{path}"
            left = len(self.marks) - index - 1 + omitted
            room = HEADER_LIMIT - (len(f" +{left + 1}") if left else 0)
            if not (token.isascii() and " " not in path and len(text) + len(token) <= room):
                omitted += len(self.marks) - index
                break
            text += token
        return (text + (f" +{omitted}" if omitted else "")).encode("ascii")


_PASS_HEADER = QualityHeader(Status.PASSED).render()


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking one record; ``checked``: the dimensions with rules to check."""

    failures: tuple[Failure, ...]
    refused: bool
    checked: frozenset[Dimension]

    @property
    def failed_dimensions(self) -> frozenset[Dimension]:
        """Dimensions with at least one failure."""
        return frozenset(f.dimension for f in self.failures)

    @property
    def passed_dimensions(self) -> frozenset[Dimension]:
        """Checked dimensions without a failure (for pass rates)."""
        return self.checked - self.failed_dimensions

    @property
    def status(self) -> Status:
        """Passed, flagged (failures, none refusing) or refused."""
        if self.refused:
            return Status.REFUSED
        return Status.FLAGGED if self.failures else Status.PASSED

    def message(self) -> str:
        """Every failure in words, for the refusal topic."""
        return "; ".join(map(str, self.failures))

    def summary(self) -> QualityHeader:
        """Return the header form: status and each failed (dimension, field) once, in order."""
        marks = dict.fromkeys((f.dimension, f.field) for f in self.failures)
        return QualityHeader(self.status, tuple(marks))

    def header(self) -> bytes:
        """Return the ``cx-quality`` header value."""
        if not self.failures and not self.refused:
            return _PASS_HEADER
        return self.summary().render()


def parse_header(raw: bytes) -> QualityHeader:
    """Parse a ``cx-quality`` header value; raise EnvelopeError if it is malformed."""
    if len(raw) > HEADER_LIMIT:
        raise EnvelopeError(QUALITY_HEADER, f"longer than {HEADER_LIMIT} bytes")
    try:
        words = raw.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise EnvelopeError(QUALITY_HEADER, "not ASCII") from None
    if len(words) < 2 or words[0] != "v1" or words[1] not in Status.__members__.values():
        raise EnvelopeError(QUALITY_HEADER, "expected 'v1 pass|flag|refuse ...'")
    status, omitted = Status(words[1]), 0
    tokens = words[2:]
    if tokens and tokens[-1].startswith("+"):
        count = tokens.pop()[1:]
        if not count.isdigit() or not count.isascii() or int(count) == 0:
            raise EnvelopeError(QUALITY_HEADER, f"bad count {count!r}")
        omitted = int(count)
    marks = []
    for token in tokens:
        dimension, _, path = token.partition(":")
        if dimension not in Dimension.__members__.values() or not path:
            raise EnvelopeError(QUALITY_HEADER, f"bad mark {token!r}")
        marks.append((Dimension(dimension), path))
    if (status is Status.PASSED) == bool(marks or omitted):
        raise EnvelopeError(QUALITY_HEADER, f"status {status} with marks {tokens!r}")
    return QualityHeader(status, tuple(marks), omitted)


def check(
    rules: QualityRules,
    datum: Mapping[str, Any],
    source_region: str,
    now_ms: int,
    *,
    created_ms: int | None = None,
) -> Verdict:
    """Check a decoded record of a resource published at ``source_region``; never raises.

    ``created_ms`` (the envelope's) is needed only for timeliness measured from ``cx-created-ms``.
    The rules are compiled into checkers on first use and kept with them (``QualityRules`` is
    frozen); a record that passes allocates nothing but the failure list.
    """
    if not rules.checked:
        return _PASS
    compiled = rules._compiled
    if compiled is None:
        compiled = _compile(rules)
        object.__setattr__(rules, "_compiled", compiled)
    failures: list[Failure] = []
    for checker in compiled.checkers:
        checker(datum, source_region, now_ms, created_ms, failures)
    if not failures:
        return compiled.passed
    refusing = rules.refusing
    refused = any(f.dimension in refusing for f in failures)
    return Verdict(tuple(failures), refused, rules.checked)


_PASS = Verdict((), refused=False, checked=frozenset())

# Compiled rules. A record checker appends the failures of one rule group (required items, one
# item's rules, identity, regions, timeliness) to the list it is given, in the order the failures
# are reported; an item's value checks run only when the item is present. Paths, bounds and
# lookup tables are computed once per rule set; messages are formatted only on failure.

_Failures = list[Failure]
_RecordCheck = Callable[[Mapping[str, Any], str, int, int | None, _Failures], None]
_ValueCheck = Callable[[Any, Mapping[str, Any], int, _Failures], None]
_EMPTY_WHEN_FALSY = (bytes, list, dict)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A rule set's record checkers, and its verdict for a record that passes them all."""

    checkers: tuple[_RecordCheck, ...]
    passed: Verdict


def _compile(rules: QualityRules) -> _Compiled:
    checkers: list[_RecordCheck] = []
    if rules.required:
        checkers.append(_required_check(rules.required))
    for rule in rules.items:
        item = _item_check(rule)
        if item is not None:
            checkers.append(item)
    if rules.identity is not None:
        checkers.append(_identity_check(rules.identity))
    if rules.region_within_source:
        checkers.append(_region_check(rules.region_within_source))
    if rules.timeliness_field is not None and rules.max_age_ms is not None:
        checkers.append(_timeliness_check(rules.timeliness_field, rules.max_age_ms))
    return _Compiled(tuple(checkers), Verdict((), refused=False, checked=rules.checked))


def _required_check(names: tuple[str, ...]) -> _RecordCheck:
    paths = tuple((name, f"$.{name}") for name in names)

    def run(
        datum: Mapping[str, Any], _region: str, _now: int, _created: int | None, out: _Failures
    ) -> None:
        get = datum.get
        for name, path in paths:
            value = get(name)
            if value is None:
                out.append(Failure(Dimension.COMPLETENESS, "required", path, "missing"))
            elif isinstance(value, str):
                if not value or value.isspace():
                    out.append(Failure(Dimension.COMPLETENESS, "required", path, "empty"))
            elif isinstance(value, _EMPTY_WHEN_FALSY) and not value:
                out.append(Failure(Dimension.COMPLETENESS, "required", path, "empty"))

    return run


def _item_check(rule: ItemRule) -> _RecordCheck | None:
    """Return the checker of one item's rules, or None if it has none."""
    path = f"$.{rule.name}"
    checks: list[_ValueCheck] = []
    if rule.non_empty:
        checks.append(_non_empty_check(path))
    if rule.format_by is not None:
        checks.append(_format_choice_check(rule.format_by, rule.formats, path))
    elif rule.format is not None:
        checks.append(_format_check(rule.format, path))
    if rule.codes is not None:
        checks.append(_codes_check(rule.codes, path))
    if rule.minimum is not None or rule.maximum is not None:
        checks.append(_range_check(rule.minimum, rule.maximum, path))
    if rule.plausible or rule.min_date is not None or rule.max_date is not None:
        checks.append(_date_check(rule, path))
    if rule.not_before is not None:
        checks.append(_not_before_check(rule.not_before, path))
    if not checks:
        return None
    name = rule.name
    if len(checks) == 1:
        only = checks[0]

        def run_one(
            datum: Mapping[str, Any], _region: str, now_ms: int, _created: int | None,
            out: _Failures,
        ) -> None:  # fmt: skip
            value = datum.get(name)
            if value is not None:
                only(value, datum, now_ms, out)

        return run_one
    sequence = tuple(checks)

    def run(
        datum: Mapping[str, Any], _region: str, now_ms: int, _created: int | None, out: _Failures
    ) -> None:
        value = datum.get(name)
        if value is not None:
            for one in sequence:
                one(value, datum, now_ms, out)

    return run


def _non_empty_check(path: str) -> _ValueCheck:
    def run(value: Any, _datum: Mapping[str, Any], _now: int, out: _Failures) -> None:
        if _is_empty(value):
            out.append(Failure(Dimension.COMPLETENESS, "non_empty", path, "empty"))

    return run


def _format_choice_check(
    chooser: str, formats: tuple[tuple[str, Format], ...], path: str
) -> _ValueCheck:
    """Return the format check picked by the value of ``chooser`` (none if it names none)."""
    choices = {value: _format_check(kind, path) for value, kind in formats}

    def run(value: Any, datum: Mapping[str, Any], now_ms: int, out: _Failures) -> None:
        chosen = choices.get(str(datum.get(chooser)))
        if chosen is not None:
            chosen(value, datum, now_ms, out)

    return run


def _format_check(kind: Format, path: str) -> _ValueCheck:
    if kind is Format.DATE:
        return _date_format_check(path)
    not_text = Failure(Dimension.CONFORMITY, str(kind), path, "expected text")
    if kind is Format.REGION_CODE:

        def region_code(value: Any, _datum: Mapping[str, Any], _now: int, out: _Failures) -> None:
            if not isinstance(value, str):
                out.append(not_text)
                return
            problem = region_code_problem(value)
            if problem is not None:
                out.append(Failure(Dimension.CONFORMITY, "region_code", path, problem))

        return region_code
    if kind is Format.ID_NUMBER:

        def id_number(value: Any, _datum: Mapping[str, Any], now_ms: int, out: _Failures) -> None:
            if not isinstance(value, str):
                out.append(not_text)
                return
            problem = id_number_format_problem(value)
            if problem is not None:
                out.append(Failure(Dimension.CONFORMITY, "id_number", path, problem))
                return
            expected = id_number_check_char(value[:17])
            if value[17] != expected:
                message = f"check character {value[17]}, expected {expected}"
                out.append(Failure(Dimension.ACCURACY, "id_number_check", path, message))
            birth = _birth_day(value)
            if not EARLIEST_PLAUSIBLE_DAY <= birth <= _today(now_ms):
                message = f"birth date {_iso(birth)} is not plausible"
                out.append(Failure(Dimension.ACCURACY, "id_number_birth", path, message))

        return id_number

    def credit_code(value: Any, _datum: Mapping[str, Any], _now: int, out: _Failures) -> None:
        if not isinstance(value, str):
            out.append(not_text)
            return
        problem = credit_code_format_problem(value)
        if problem is not None:
            out.append(Failure(Dimension.CONFORMITY, "credit_code", path, problem))
            return
        expected = credit_code_check_char(value[:17])
        if value[17] != expected:
            message = f"check character {value[17]}, expected {expected}"
            out.append(Failure(Dimension.ACCURACY, "credit_code_check", path, message))

    return credit_code


def _date_format_check(path: str) -> _ValueCheck:
    def run(value: Any, _datum: Mapping[str, Any], _now: int, out: _Failures) -> None:
        if not isinstance(value, str):
            if _day_of(value) is None:
                out.append(Failure(Dimension.CONFORMITY, "date", path, "not a date"))
        elif _iso_day(value) is None:
            message = f"{value!r} is not a YYYY-MM-DD date"
            out.append(Failure(Dimension.CONFORMITY, "date", path, message))

    return run


def _codes_check(codes: frozenset[str], path: str) -> _ValueCheck:
    def run(value: Any, _datum: Mapping[str, Any], _now: int, out: _Failures) -> None:
        if value not in codes:
            message = f"{value!r} is not in the code list"
            out.append(Failure(Dimension.CONFORMITY, "codes", path, message))

    return run


def _range_check(minimum: float | None, maximum: float | None, path: str) -> _ValueCheck:
    not_number = Failure(Dimension.CONFORMITY, "min" if minimum is not None else "max", path,
                         "not a number")  # fmt: skip

    def run(value: Any, _datum: Mapping[str, Any], _now: int, out: _Failures) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            out.append(not_number)
        elif minimum is not None and value < minimum:
            out.append(Failure(Dimension.ACCURACY, "min", path, f"{value} is below {minimum:g}"))
        elif maximum is not None and value > maximum:
            out.append(Failure(Dimension.ACCURACY, "max", path, f"{value} is above {maximum:g}"))

    return run


def _date_check(rule: ItemRule, path: str) -> _ValueCheck:
    plausible, min_date, max_date = rule.plausible, rule.min_date, rule.max_date

    def run(value: Any, _datum: Mapping[str, Any], now_ms: int, out: _Failures) -> None:
        # _day_of, with the timestamp kept for the plausibility check
        stamp = None
        if isinstance(value, str):
            day = _iso_day(value)
        elif hasattr(value, "timestamp"):
            stamp = _ms_of(value)
            day = None if stamp is None else stamp // DAY_MS
        else:
            day = _civil_day_of(value)
        if day is None:
            out.append(Failure(Dimension.CONFORMITY, "date", path, "not a date"))
            return
        if plausible:
            if stamp is not None:
                future = stamp > now_ms + TIMESTAMP_SLACK_MS
            else:
                future = day > _today(now_ms)
            if future:
                message = f"{_iso(day)} is in the future"
                out.append(Failure(Dimension.ACCURACY, "plausible", path, message))
            elif day < EARLIEST_PLAUSIBLE_DAY:
                message = f"{_iso(day)} is before 1900"
                out.append(Failure(Dimension.ACCURACY, "plausible", path, message))
        if min_date is not None and day < min_date:
            message = f"{_iso(day)} is before {_iso(min_date)}"
            out.append(Failure(Dimension.ACCURACY, "min_date", path, message))
        if max_date is not None and day > max_date:
            message = f"{_iso(day)} is after {_iso(max_date)}"
            out.append(Failure(Dimension.ACCURACY, "max_date", path, message))

    return run


def _not_before_check(earlier: str, path: str) -> _ValueCheck:
    def run(value: Any, datum: Mapping[str, Any], _now: int, out: _Failures) -> None:
        day, other = _day_of(value), _day_of(datum.get(earlier))
        if day is not None and other is not None and day < other:
            message = f"{_iso(day)} is before {earlier} {_iso(other)}"
            out.append(Failure(Dimension.CONSISTENCY, "not_before", path, message))

    return run


def _identity_check(rule: IdentityRule) -> _RecordCheck:
    number_item, birth_item, sex_item = rule.id, rule.birth, rule.sex
    birth_path, sex_path = f"$.{birth_item}", f"$.{sex_item}"

    def run(
        datum: Mapping[str, Any], _region: str, _now: int, _created: int | None, out: _Failures
    ) -> None:
        number = datum.get(number_item)
        if not isinstance(number, str) or id_number_format_problem(number) is not None:
            return  # conformity reports a malformed number; nothing to compare with
        if birth_item is not None:
            birth = _day_of(datum.get(birth_item))
            written = _birth_day(number)
            if birth is not None and birth != written:
                message = f"{_iso(birth)}, but the identity number says {_iso(written)}"
                out.append(Failure(Dimension.CONSISTENCY, "id_matches_birth_and_sex", birth_path,
                                   message))  # fmt: skip
        if sex_item is not None:
            sex = str(datum.get(sex_item))
            male = id_number_is_male(number)
            if (sex in _MALE and not male) or (sex in _FEMALE and male):
                message = f"{sex}, but the identity number is a {'man' if male else 'woman'}'s"
                out.append(Failure(Dimension.CONSISTENCY, "id_matches_birth_and_sex", sex_path,
                                   message))  # fmt: skip

    return run


def _region_check(names: tuple[str, ...]) -> _RecordCheck:
    paths = tuple((name, f"$.{name}") for name in names)

    def run(
        datum: Mapping[str, Any], source_region: str, _now: int, _created: int | None,
        out: _Failures,
    ) -> None:  # fmt: skip
        for name, path in paths:
            region = datum.get(name)
            if isinstance(region, str) and not contains(source_region, region):
                message = f"{region} is not inside the source region {source_region}"
                out.append(Failure(Dimension.CONSISTENCY, "region_within_source", path, message))

    return run


def _timeliness_check(name: str, max_age_ms: int) -> _RecordCheck:
    from_envelope = name == CREATED
    path = name if from_envelope else f"$.{name}"

    def run(
        datum: Mapping[str, Any], _region: str, now_ms: int, created_ms: int | None,
        out: _Failures,
    ) -> None:  # fmt: skip
        stamp = created_ms if from_envelope else _ms_of(datum.get(name))
        if stamp is not None and now_ms - stamp > max_age_ms:
            message = (
                f"{(now_ms - stamp) / HOUR_MS:.1f} h old; "
                f"the update cycle allows {max_age_ms / HOUR_MS:g} h"
            )
            out.append(Failure(Dimension.TIMELINESS, "max_age", path, message))

    return run


def _birth_day(number: str) -> int:
    """Return the days since 1970-01-01 of a well-formed identity number's birth date."""
    year, month_day = divmod(int(number[6:14]), 10_000)
    month, day = divmod(month_day, 100)
    return days_from_civil(year, month, day)


def _is_empty(value: Any) -> bool:
    if isinstance(value, str):
        return not value or value.isspace()  # the same as ``not value.strip()``, without a copy
    return isinstance(value, _EMPTY_WHEN_FALSY) and not value


def _today(now_ms: int) -> int:
    """Return the latest day that is today somewhere on Earth."""
    return (now_ms + DATE_SLACK_MS) // DAY_MS


def _iso(day: int) -> str:
    year, month, date = civil_from_days(day)
    return f"{year:04d}-{month:02d}-{date:02d}"


def _iso_day(text: str) -> int | None:
    """Days since 1970-01-01 of ``YYYY-MM-DD`` text, or None."""
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        return None
    parts = text[:4], text[5:7], text[8:]
    if not all(part.isascii() and part.isdigit() for part in parts):
        return None
    year, month, day = map(int, parts)
    return days_from_civil(year, month, day) if is_valid_date(year, month, day) else None


def _day_of(value: Any) -> int | None:
    """Days since 1970-01-01 of a date, a datetime (its UTC day) or ISO date text, else None."""
    if isinstance(value, str):
        return _iso_day(value)
    if hasattr(value, "timestamp"):
        stamp = _ms_of(value)
        return None if stamp is None else stamp // DAY_MS
    return _civil_day_of(value)


def _civil_day_of(value: Any) -> int | None:
    """Days since 1970-01-01 of a value with int ``year``, ``month`` and ``day``, else None."""
    year = getattr(value, "year", None)
    month = getattr(value, "month", None)
    day = getattr(value, "day", None)
    if isinstance(year, int) and isinstance(month, int) and isinstance(day, int):
        return days_from_civil(year, month, day)
    return None


def _ms_of(value: Any) -> int | None:
    """Milliseconds since the epoch of an aware datetime, an int (ms) or a date, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    stamp = getattr(value, "timestamp", None)
    if callable(stamp):
        try:
            return round(float(stamp()) * 1000)
        except (TypeError, ValueError, OverflowError):
            return None
    day = None if isinstance(value, str) else _day_of(value)
    return None if day is None else day * DAY_MS


@dataclass(frozen=True, slots=True)
class Overdue:
    """A resource whose source has been silent longer than its accessibility allowance."""

    resource: str
    last_published_ms: int | None
    silent_ms: int
    allowed_ms: int


def overdue(
    last_published_ms: Mapping[str, int],
    rules_by_resource: Mapping[str, QualityRules],
    now_ms: int,
    *,
    since_ms: int = 0,
) -> list[Overdue]:
    """Return the resources (sorted by code) not published within their allowance.

    A resource never published counts as silent since ``since_ms`` (when watching began; 0 makes
    it overdue at once). Resources without an allowance are not judged.
    """
    late = []
    for code in sorted(rules_by_resource):
        allowed = rules_by_resource[code].publish_within_ms
        if allowed is None:
            continue
        last = last_published_ms.get(code)
        silent = now_ms - (since_ms if last is None else last)
        if silent > allowed:
            late.append(Overdue(code, last, silent, allowed))
    return late


# Reading a catalog's [resource.quality] table


_ITEM_KEYS = (
    "format", "format_by", "formats", "codes", "min", "max", "min_date", "max_date", "plausible",
    "not_before", "non_empty",
)  # fmt: skip
_QUALITY_KEYS = ("actions", "items", "consistency", "timeliness", "accessibility")
_TEXT_TYPES = ("string",)
_DATE_TYPES = ("date", "timestamp", "string")
_NUMBER_TYPES = ("int", "long", "float", "double")
_FORMAT_TYPES: Mapping[Format, tuple[str, ...]] = {
    Format.REGION_CODE: _TEXT_TYPES, Format.ID_NUMBER: _TEXT_TYPES,
    Format.CREDIT_CODE: _TEXT_TYPES, Format.DATE: ("date", "string"),
}  # fmt: skip


def read_quality(
    table: Any,
    item_types: Mapping[str, str],
    required: Sequence[str],
    update_cycle: str | None,
) -> tuple[QualityRules, list[tuple[str, str]]]:
    """Parse a resource's ``quality`` table; return its rules and every (path, problem).

    ``item_types`` maps each information item to its catalog type; ``required`` lists the required
    items (checked for completeness once a quality table exists). No table gives NO_RULES.
    """
    if table is None:
        return NO_RULES, []
    reader = _QualityReader(item_types, update_cycle)
    rules = reader.read(table, tuple(required))
    return rules, reader.problems


def enum_problems(
    rules: QualityRules, symbols: Mapping[str, Sequence[str]]
) -> Iterator[tuple[str, str]]:
    """Yield (path, problem) for codes and format choices that name no symbol of an enum item."""
    for rule in rules.items:
        path = f"quality.items.{rule.name}"
        allowed = symbols.get(rule.name)
        if rule.codes is not None and allowed is not None:
            for code in sorted(rule.codes - set(allowed)):
                yield (
                    f"{path}.codes",
                    f"{code!r} is not a symbol of the enum ({', '.join(allowed)})",
                )
        chooser = symbols.get(rule.format_by) if rule.format_by else None
        if chooser is not None:
            for value, _ in rule.formats:
                if value not in chooser:
                    yield f"{path}.formats", f"{value!r} is not a symbol of {rule.format_by}"


class _QualityReader:
    """Reads one quality table, collecting problems instead of stopping at the first."""

    def __init__(self, item_types: Mapping[str, str], update_cycle: str | None) -> None:
        self.types = item_types
        self.cycle = update_cycle
        self.problems: list[tuple[str, str]] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append((f"quality{path}", message))

    def table(self, value: Any, path: str, keys: Sequence[str] | None) -> dict[str, Any]:
        """Return ``value`` if it is a table whose keys are all ``keys`` (None: any), else {}."""
        if not isinstance(value, dict):
            self.problem(path, f"expected a table, got {value!r}")
            return {}
        for key in sorted(value.keys() - set(keys or value)):
            self.problem(f"{path}.{key}", f"unknown key (one of {', '.join(keys or ())})")
        return value

    def item(self, name: Any, path: str, kinds: Sequence[str]) -> str | None:
        """Return ``name`` if it is an item of one of ``kinds``, else report it."""
        if not isinstance(name, str) or name not in self.types:
            self.problem(path, f"{name!r} is not an information item of the resource")
            return None
        if self.types[name] not in kinds:
            self.problem(path, f"{name} is a {self.types[name]}, expected {' or '.join(kinds)}")
            return None
        return name

    def read(self, raw: Any, required: tuple[str, ...]) -> QualityRules:
        table = self.table(raw, "", _QUALITY_KEYS)
        items = self.table(table.get("items", {}), ".items", None)
        for name in items.keys() - self.types.keys():
            self.problem(f".items.{name}", "not an information item of the resource")
        rules = tuple(self.item_rule(n, spec) for n, spec in items.items() if n in self.types)
        identity, regions = self.consistency(table.get("consistency", {}))
        field_name, max_age = self.timeliness(table.get("timeliness"))
        return QualityRules(
            items=rules, required=required, identity=identity, region_within_source=regions,
            timeliness_field=field_name, max_age_ms=max_age,
            publish_within_ms=self.accessibility(table.get("accessibility", False)),
            actions=self.actions(table.get("actions", {})),
        )  # fmt: skip

    def actions(self, raw: Any) -> tuple[tuple[Dimension, Action], ...]:
        names = [d.value for d in RECORD_DIMENSIONS]
        table = self.table(raw, ".actions", names)
        actions = dict(DEFAULT_ACTIONS)
        for key, value in table.items():
            if key in names:
                if value in Action.__members__.values():
                    actions[Dimension(key)] = Action(value)
                else:
                    self.problem(f".actions.{key}", f"{value!r} is not refuse or flag")
        return tuple(actions.items())

    def item_rule(self, name: str, raw: Any) -> ItemRule:
        path = f".items.{name}"
        spec = self.table(raw, path, _ITEM_KEYS)
        kind = self.types[name]
        rule: dict[str, Any] = {}
        if "format" in spec:
            rule["format"] = self.format(spec["format"], f"{path}.format", kind)
        if ("format_by" in spec) != ("formats" in spec):
            self.problem(path, "format_by and formats go together")
        elif "format_by" in spec:
            rule.update(self.format_choice(spec["format_by"], spec["formats"], path, kind))
        readers = {
            "codes": ("codes", self.codes), "min": ("minimum", self.number),
            "max": ("maximum", self.number), "min_date": ("min_date", self.date),
            "max_date": ("max_date", self.date), "plausible": ("plausible", self.flag),
            "non_empty": ("non_empty", self.flag),
        }  # fmt: skip
        for key, (target, read) in readers.items():
            if key in spec:
                rule[target] = read(spec[key], f"{path}.{key}", kind)
        if "not_before" in spec:
            self.kind_fits(kind, _DATE_TYPES, f"{path}.not_before")
            rule["not_before"] = self.item(spec["not_before"], f"{path}.not_before", _DATE_TYPES)
        minimum, maximum = rule.get("minimum"), rule.get("maximum")
        if minimum is not None and maximum is not None and minimum > maximum:
            self.problem(path, f"min {minimum} is above max {maximum}")
        return ItemRule(name, **rule)

    def format_choice(self, chooser: Any, raw: Any, path: str, kind: str) -> dict[str, Any]:
        """Read ``format_by`` and ``formats``: the format by the value of the item ``chooser``."""
        choices = self.table(raw, f"{path}.formats", None)
        pairs = ((k, self.format(v, f"{path}.formats.{k}", kind)) for k, v in choices.items())
        return {
            "format_by": self.item(chooser, f"{path}.format_by", ("enum", "string")),
            "formats": tuple((k, f) for k, f in pairs if f is not None),
        }

    def kind_fits(self, kind: str, kinds: Sequence[str], path: str) -> bool:
        if kind not in kinds:
            self.problem(path, f"does not apply to a {kind} item (only {', '.join(kinds)})")
            return False
        return True

    def format(self, value: Any, path: str, kind: str) -> Format | None:
        if value not in Format.__members__.values():
            allowed = ", ".join(f.value for f in Format)
            self.problem(path, f"unknown format {value!r} (one of {allowed})")
            return None
        chosen = Format(value)
        return chosen if self.kind_fits(kind, _FORMAT_TYPES[chosen], path) else None

    def codes(self, value: Any, path: str, kind: str) -> frozenset[str] | None:
        self.kind_fits(kind, ("string", "enum"), path)
        if isinstance(value, str):
            if value not in CODE_LISTS:
                self.problem(path, f"unknown code list {value!r} (one of {', '.join(CODE_LISTS)})")
                return None
            return CODE_LISTS[value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.problem(path, "expected a non-empty array of strings or a code list's name")
            return None
        return frozenset(value)

    def number(self, value: Any, path: str, kind: str) -> float | None:
        self.kind_fits(kind, _NUMBER_TYPES, path)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(path, f"expected a number, got {value!r}")
            return None
        return value

    def date(self, value: Any, path: str, kind: str) -> int | None:
        self.kind_fits(kind, _DATE_TYPES, path)
        day = None if hasattr(value, "hour") else _day_of(value)
        if day is None:
            self.problem(path, f"expected a date (1900-01-01), got {value!r}")
        return day

    def flag(self, value: Any, path: str, kind: str) -> bool:
        if not isinstance(value, bool):
            self.problem(path, f"expected true or false, got {value!r}")
            return False
        kinds = ("string", "bytes") if path.endswith(".non_empty") else _DATE_TYPES
        return value and self.kind_fits(kind, kinds, path)

    def consistency(self, raw: Any) -> tuple[IdentityRule | None, tuple[str, ...]]:
        table = self.table(
            raw, ".consistency", ("id_matches_birth_and_sex", "region_within_source")
        )
        identity = None
        if "id_matches_birth_and_sex" in table:
            path = ".consistency.id_matches_birth_and_sex"
            spec = self.table(table["id_matches_birth_and_sex"], path, ("id", "birth", "sex"))
            number = self.item(spec.get("id"), f"{path}.id", _TEXT_TYPES)
            birth = (
                self.item(spec["birth"], f"{path}.birth", _DATE_TYPES) if "birth" in spec else None
            )
            sex = (
                self.item(spec["sex"], f"{path}.sex", ("enum", "string")) if "sex" in spec else None
            )
            if "birth" not in spec and "sex" not in spec:
                self.problem(path, "name the birth item, the sex item or both")
            if number is not None:
                identity = IdentityRule(number, birth, sex)
        regions: list[str] = []
        if "region_within_source" in table:
            path = ".consistency.region_within_source"
            raw_names = table["region_within_source"]
            names = [raw_names] if isinstance(raw_names, str) else raw_names
            if not isinstance(names, list) or not names:
                self.problem(path, f"expected an item name or an array of them, got {raw_names!r}")
                names = []
            regions = [n for n in names if self.item(n, path, _TEXT_TYPES) is not None]
        return identity, tuple(regions)

    def timeliness(self, raw: Any) -> tuple[str | None, int | None]:
        if raw is None:
            return None, None
        table = self.table(raw, ".timeliness", ("field", "max_age_hours"))
        name = table.get("field")
        if name != CREATED and self.item(name, ".timeliness.field", ("timestamp", "date")) is None:
            return None, None
        return name, self.allowance(table.get("max_age_hours"), ".timeliness.max_age_hours")

    def accessibility(self, raw: Any) -> int | None:
        if isinstance(raw, bool):
            return self.allowance(None, ".accessibility") if raw else None
        table = self.table(raw, ".accessibility", ("max_silence_hours",))
        return self.allowance(table.get("max_silence_hours"), ".accessibility.max_silence_hours")

    def allowance(self, hours: Any, path: str) -> int | None:
        """Return ``hours`` in ms, or the update cycle's allowance when None."""
        if hours is None:
            return MAX_AGE_MS.get(self.cycle) if self.cycle is not None else None
        if isinstance(hours, bool) or not isinstance(hours, int | float) or hours <= 0:
            self.problem(path, f"expected a positive number of hours, got {hours!r}")
            return None
        return round(hours * HOUR_MS)
