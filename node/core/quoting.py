"""Quoting values a sender chose inside refusal and error messages, bounded.

A refusal message travels as the ``cx-refusal-message`` header of the dead-letter record, in logs
and on the status page. A hostile header or field may be thousands of characters long; a message
quotes at most ``QUOTE_CHARS`` of it, with an ellipsis and its full length, so the message stays
small whatever the sender wrote. ``MESSAGE_CHARS`` bounds a whole message.

Pure: no I/O, no clock.
"""

from __future__ import annotations

QUOTE_CHARS = 64
"""Most characters (or bytes) of one value a message quotes."""
MESSAGE_CHARS = 1000
"""Most characters of one refusal message."""


def quoted(value: str | bytes | None, limit: int = QUOTE_CHARS) -> str:
    """Return ``repr(value)``, cut to ``limit`` characters with ``...`` and the full length."""
    if value is None:
        return "null"
    if len(value) <= limit:
        return repr(value)
    unit = "bytes" if isinstance(value, bytes) else "characters"
    return f"{value[:limit]!r}... ({len(value)} {unit})"


def bounded(message: str, limit: int = MESSAGE_CHARS) -> str:
    """Return ``message`` cut to ``limit`` characters, ending in ``...`` when cut."""
    if len(message) <= limit:
        return message
    return message[: limit - 3] + "..."
