"""Query parameters of the API, checked once: patterns, flags, numbers, states.

A pattern is a regular expression searched (case-insensitive, as in clearly) in a
task's name, routing key and uuid, or in a worker's hostname. A bad parameter is a
``QueryError`` whose message the client shows as is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from clearly_exporter.engine.states import KNOWN

#: Longer patterns are refused: each one runs against every task or transition.
MAX_PATTERN = 1000
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class QueryError(ValueError):
    """A query parameter the API refuses, in one line."""


@dataclass(frozen=True)
class Matcher:
    """A compiled pattern and whether to keep what it does *not* match."""

    regex: re.Pattern[str] | None
    negate: bool = False

    def __call__(self, *fields: str | None) -> bool:
        if self.regex is None:
            return not self.negate
        found = any(f is not None and self.regex.search(f) for f in fields)
        return found != self.negate


def matcher(pattern: str | None, negate: bool = False) -> Matcher:
    """A ``Matcher`` for ``pattern`` (``None`` or empty matches everything)."""
    if not pattern:
        return Matcher(None, negate)
    if len(pattern) > MAX_PATTERN:
        raise QueryError(f"pattern longer than {MAX_PATTERN} characters")
    try:
        return Matcher(re.compile(pattern, re.IGNORECASE), negate)
    except re.error as exc:
        raise QueryError(f"invalid regex {pattern!r}: {exc}") from None


def known_state(value: str | None) -> str | None:
    """A task state to filter by, any case; one no task can be in is refused, not
    answered with nothing (``FAILED`` for ``FAILURE``)."""
    state = (value or "").strip().upper()
    if not state:
        return None
    if state not in KNOWN:
        raise QueryError(f"unknown state {value!r}; use one of {', '.join(KNOWN)}")
    return state


def flag(query: Mapping[str, str], name: str, default: bool) -> bool:
    value = query.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise QueryError(f"{name}={value!r} is not a boolean; use true or false")


def count(query: Mapping[str, str], name: str) -> int | None:
    """A non-negative integer; absent or 0 means no limit."""
    value = query.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise QueryError(f"{name}={value!r} is not a whole number") from None
    if number < 0:
        raise QueryError(f"{name}={value!r} is negative")
    return number or None
