"""Typed reads of event fields: a value of the wrong type reads as absent.

Events come from any producer on the broker; the engine never trusts a field's type.
The hot path checks ``type(value) is str`` itself and calls these only otherwise.
"""

from __future__ import annotations

import math
from typing import Any

#: Longest text kept from one non-text field; Celery itself cuts reprs at 1024 characters.
MAX_TEXT = 1 << 20
#: Reprs of values so common (no args, no kwargs, a None result) that every record
#: holding one shares a single string instead of its own decoded copy.
COMMON_VALUES: dict[str, str] = {
    value: value for value in ("()", "[]", "{}", "None", "True", "False", "''", "0", "1")
}


def as_text(value: Any) -> str:
    """A non-text JSON value kept as its repr, never raising past the engine's guard."""
    if type(value) is str:
        return value
    return repr(value)[:MAX_TEXT]


def as_number(value: Any) -> float | None:
    """A finite number, or None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = float(value)
        if math.isfinite(value):
            return value
    return None


def text(event: dict, key: str) -> str | None:
    value = event.get(key)
    return None if value is None else as_text(value)


def number(event: dict, key: str) -> float | None:
    return as_number(event.get(key))


def integer(event: dict, key: str, default: int = 0) -> int:
    value = event.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return default
