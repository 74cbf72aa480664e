"""A retry's reason as Celery says it in its logs, from the repr its event carries.

A ``task-retried`` event's exception is the repr of the ``Retry`` itself, which wraps the
reason and the delay, and since Celery 5 itself too:
``Retry(Retry(...), RuntimeError('not ready'), 0.2)``. Shown as Celery logs it,
``Retry in 0.2s: RuntimeError('not ready')``, the reason is what catches the eye.
"""

from __future__ import annotations

import re

_RETRY = re.compile(r"Retry\((?:Retry\(\.\.\.\), )?(?P<reason>.+), (?P<when>[0-9.]+|None)\)", re.S)


def retry_parts(exception: str) -> tuple[str, str | None] | None:
    """``("Retry in 0.2s", "RuntimeError('not ready')")`` from a retry's repr (the reason
    None when there is none); None for any other text."""
    match = _RETRY.fullmatch(exception)
    if match is None:
        return None
    reason, when = match["reason"], match["when"]
    head = "Retry" if when == "None" else f"Retry in {when}s"
    return head, None if reason == "None" else reason


def as_logged(exception: str) -> str:
    """``exception`` as Celery logs a retry; any other text as it is."""
    parts = retry_parts(exception)
    if parts is None:
        return exception
    head, reason = parts
    return head if reason is None else f"{head}: {reason}"
