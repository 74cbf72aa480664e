"""Typed reads of event fields: a field of the wrong type reads as absent.

Events come from any producer on the broker; the engine never trusts a field's type.
"""

from __future__ import annotations

import math
from typing import Any

#: Longest text kept from one field; Celery itself cuts reprs at 1024 characters.
MAX_TEXT = 1 << 20


def text(event: dict, key: str) -> str | None:
    """A text field; other JSON values are kept as their repr, never raising."""
    value: Any = event.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        value = repr(value)
    return value[:MAX_TEXT]


def number(event: dict, key: str) -> float | None:
    value = event.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = float(value)
        if math.isfinite(value):
            return value
    return None


def integer(event: dict, key: str, default: int = 0) -> int:
    value = event.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return default


def optional_integer(event: dict, key: str) -> int | None:
    value = event.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 31:
        return value
    return None
