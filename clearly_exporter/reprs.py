"""Celery's reprs of args, kwargs and results: which ones its events may have cut.

Apart from the result fetcher, so the terminal client can tell too without importing
Celery.
"""

from __future__ import annotations

#: Event reprs at least this long may have been cut by Celery (it cuts at 1024).
MAYBE_CUT = 1000


def maybe_cut(value: str | None) -> bool:
    """Whether Celery may have cut this repr of an event's (a fetch may complete it)."""
    return value is not None and len(value) >= MAYBE_CUT and "..." in value


def cut(value: str, limit: int) -> str:
    """``value`` cut at ``limit`` characters, saying how many went: a fetched value may
    be megabytes, and redacting one parses it."""
    if len(value) <= limit:
        return value
    return value[:limit] + f"...[cut {len(value) - limit} characters]"


def completes(cut_value: str | None, whole: str) -> bool:
    """Whether ``whole`` is what Celery cut into ``cut_value``. Only a value that may
    have been cut is replaced (an app's own ``argsrepr`` mask stays as it was sent), and
    only by one that starts as it does (not a retry's other args)."""
    if cut_value is None or not maybe_cut(cut_value):
        return False
    return whole.startswith(cut_value[: cut_value.index("...")])
