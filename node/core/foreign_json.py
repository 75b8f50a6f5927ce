"""JSON written by someone else (a neighbour's node, a department, a stored line), read bounded.

``json.loads`` alone lets more than ValueError out of hostile bytes: RecursionError on deep
nesting, and numbers that later break arithmetic (``1e400`` is ``inf``, so ``int()`` raises
OverflowError; 5000 digits pass ``json`` but not ``int()`` of their text elsewhere). ``load``
refuses all of these with one error, ``ForeignJsonError`` (a ValueError), whose message says what
is wrong and quotes at most a few characters of the input. Callers translate it to their own
error (EnvelopeError, StatsError, ...).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_NESTING = 64
"""Deepest nesting of objects and arrays accepted by default (real values need a handful)."""
MAX_DIGITS = 19
"""Longest integer accepted (int64): longer ones would only be refused later, less clearly."""
_QUOTED = 24


class ForeignJsonError(ValueError):
    """Bytes that are not bounded JSON: malformed, too deep, or with an unusable number."""


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ForeignJsonError(f"integer {text[:_QUOTED]}... has more than {MAX_DIGITS} digits")
    return int(text)


def _number(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ForeignJsonError(f"number {text[:_QUOTED]} is out of range")
    return number


def _constant(text: str) -> float:
    raise ForeignJsonError(f"{text} is not a number")


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Tell whether JSON ``value`` nests objects and arrays deeper than ``limit`` (iteratively)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        inner = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        if inner and depth > limit:
            return True
        stack.extend((child, depth + 1) for child in inner)
    return False


def load(data: bytes | str | None, *, max_nesting: int = MAX_NESTING) -> Any:
    """Parse ``data`` as JSON; raise ForeignJsonError saying why it cannot be used.

    Refused: None or bytes that are not UTF-8 JSON; nesting deeper than ``max_nesting``;
    integers of more than MAX_DIGITS digits; non-finite numbers (NaN, Infinity, 1e400).
    """
    if data is None:
        raise ForeignJsonError("not JSON: the value is null")
    try:
        found = json.loads(data, parse_int=_integer, parse_float=_number, parse_constant=_constant)
    except ForeignJsonError:
        raise
    except RecursionError:
        raise ForeignJsonError(f"nested deeper than {max_nesting}") from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError alike
        raise ForeignJsonError(f"not JSON: {error}") from None
    if nesting_exceeds(found, max_nesting):
        raise ForeignJsonError(f"nested deeper than {max_nesting}")
    return found
