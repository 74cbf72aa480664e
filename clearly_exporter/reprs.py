"""Celery's reprs of args, kwargs and results: which ones its events may have cut, and
which whole value completes one; and how the exporter cuts a value of its own.

Apart from the result fetcher, so the terminal client can tell too without importing
Celery. Celery's ``saferepr`` cuts at 1024 characters and marks the cut with ``...``,
followed by at most a few closing brackets. Two of its cuts go unseen here: a long
string cut at its last space before the limit (the repr ends up short), and a string
with a quote in it (escaped as Python's repr never does, so no whole value matches).
"""

from __future__ import annotations

#: Values Celery's events may cut (spans name them ``celery.task.<key>``).
CUT_KEYS = ("args", "kwargs", "result")
#: Event reprs at least this long may have been cut by Celery (it cuts at 1024)...
MAYBE_CUT = 1000
#: ...with its mark past here: a ``...`` of the value's own, earlier, is not the cut.
MARK_FROM = 900


def _mark(value: str) -> int:
    return value.find("...", MARK_FROM)


def maybe_cut(value: str | None) -> bool:
    """Whether Celery may have cut this repr of an event's (a fetch may complete it)."""
    return value is not None and len(value) >= MAYBE_CUT and _mark(value) >= 0


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
    return whole.startswith(cut_value[: _mark(cut_value)])
