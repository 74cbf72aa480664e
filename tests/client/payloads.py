"""API answers as the exporter gives them, for rendering tests: fixed ids, times, values."""

from __future__ import annotations

from typing import Any

T = 1_700_000_000.0
WORKER = "celery@worker-1"
TRACEBACK = """Traceback (most recent call last):
  File "/app/venv/lib/python3.11/site-packages/celery/app/trace.py", line 453, in trace_task
    R = retval = fun(*args, **kwargs)
                 ^^^^^^^^^^^^^^^^^^^^
  File "/app/billing/tasks.py", line 42, in charge
    raise ValueError(f"card declined: {card!r}")
ValueError: card declined: '4242'
"""
RETRY_TRACEBACK = """Traceback (most recent call last):
  File "/app/billing/tasks.py", line 57, in sync
    raise self.retry(exc=exc, countdown=5)
celery.exceptions.Retry: Retry in 5s: ConnectionError('upstream timed out')
"""
LONG_ARGS = repr(
    (
        [{"sku": f"item-{i:03d}", "qty": i % 4 + 1, "price": 9.99 + i} for i in range(5)],
        {"street": "1 Long Road", "city": "Lisbon", "zip": "1000-001", "gift": True},
    )
)

#: A result repr as Celery cuts it past 1024 characters: it no longer parses.
CUT_RESULT = "{'order': 77, 'receipt': '" + "lorem ipsum " * 12 + "..."


def transition(uuid: str, name: str, state: str, at: float, **fields: Any) -> dict[str, Any]:
    """One stream ``task`` event."""
    event = {
        "uuid": uuid,
        "name": name,
        "state": state,
        "inferred": False,
        "current": True,
        "timestamp": at,
        "received_at": at + 0.002,
        "retries": 0,
        "worker": WORKER,
        "queue": "billing",
        "routing_key": "billing",
        "args": "()",
        "kwargs": "{}",
        "result": None,
        "exception": None,
        "traceback": None,
        "root_id": uuid,
        "parent_id": None,
    }
    event.update(fields)
    return event


def detail(uuid: str, name: str, state: str, attempts: list[dict], **fields: Any) -> dict[str, Any]:
    """One ``/api/tasks/{uuid}`` answer."""
    view = {
        "uuid": uuid,
        "name": name,
        "state": state,
        "timestamp": T + 1,
        "retries": attempts[-1]["retries"],
        "worker": WORKER,
        "queue": "billing",
        "routing_key": "billing",
        "args": "()",
        "kwargs": "{}",
        "result": None,
        "exception": None,
        "traceback": None,
        "root_id": uuid,
        "parent_id": None,
        "first_seen": T,
        "updated": T + 1,
        "exchange": None,
        "eta": None,
        "expires": None,
        "children": [],
        "trace_id": uuid.replace("-", ""),
        "attempts": attempts,
    }
    view.update(fields)
    return view


def attempt(retries: int, states: list[tuple[str, float | None]], **fields: Any) -> dict:
    view = {
        "retries": retries,
        "state": states[-1][0],
        "outcome": states[-1][0],
        "worker": WORKER,
        "runtime": None,
        "exception": None,
        "traceback": None,
        "states": [{"state": s, "timestamp": at, "inferred": at is None} for s, at in states],
    }
    view.update(fields)
    return view


def success() -> tuple[list[dict], dict]:
    uuid, name = "0b1e7a52-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "billing.invoice"
    values = {"args": "(1042,)", "kwargs": "{'currency': 'EUR', 'token': '[redacted]'}"}
    result = "{'invoice': 1042, 'total': 99.5}"
    stream = [
        transition(uuid, name, "PENDING", T, worker=None, **values),
        transition(uuid, name, "RECEIVED", T + 0.01, **values),
        transition(uuid, name, "STARTED", T + 0.25, inferred=True, timestamp=None, **values),
        transition(uuid, name, "SUCCESS", T + 0.25, result=result, **values),
    ]
    states = [("PENDING", T), ("RECEIVED", T + 0.01), ("STARTED", None), ("SUCCESS", T + 0.25)]
    task = detail(
        uuid,
        name,
        "SUCCESS",
        [attempt(0, states, runtime=0.238)],
        result=result,
        **values,
    )
    return stream, task


def failure() -> tuple[list[dict], dict]:
    uuid, name = "1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5", "billing.charge"
    values = {"args": "('4242',)", "kwargs": "{'amount': 1999}"}
    error = {"exception": "ValueError(\"card declined: '4242'\")", "traceback": TRACEBACK}
    stream = [
        transition(uuid, name, "RECEIVED", T, **values),
        transition(uuid, name, "STARTED", T + 0.01, **values),
        transition(uuid, name, "FAILURE", T + 0.05, **values, **error),
    ]
    states = [("RECEIVED", T), ("STARTED", T + 0.01), ("FAILURE", T + 0.05)]
    task = detail(uuid, name, "FAILURE", [attempt(0, states, **error)], **values, **error)
    return stream, task


def retry() -> tuple[list[dict], dict]:
    uuid, name = "2d3e4f5a-6b7c-4d8e-9fa0-b1c2d3e4f5a6", "billing.sync"
    values = {"args": "('acct-7',)", "kwargs": "{}"}
    error = {
        # Celery 5's repr of the Retry: itself, the reason, the delay.
        "exception": "Retry(Retry(...), ConnectionError('upstream timed out'), 5)",
        "traceback": RETRY_TRACEBACK,
    }
    stream = [
        transition(uuid, name, "RECEIVED", T, **values),
        transition(uuid, name, "STARTED", T + 0.01, **values),
        transition(uuid, name, "RETRY", T + 0.02, **values, **error),
        transition(uuid, name, "RECEIVED", T + 5.03, retries=1, **values),
        transition(uuid, name, "STARTED", T + 5.04, retries=1, **values),
        transition(uuid, name, "SUCCESS", T + 5.10, retries=1, result="'synced'", **values),
    ]
    first = attempt(0, [("RECEIVED", T), ("STARTED", T + 0.01), ("RETRY", T + 0.02)], **error)
    second = attempt(
        1, [("RECEIVED", T + 5.03), ("STARTED", T + 5.04), ("SUCCESS", T + 5.1)], runtime=0.06
    )
    task = detail(uuid, name, "SUCCESS", [first, second], result="'synced'", **values)
    return stream, task


def long_argument() -> tuple[list[dict], dict]:
    uuid, name = "3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7", "shop.checkout"
    values = {"args": LONG_ARGS, "kwargs": "{'coupon': None, 'express': False}"}
    stream = [
        transition(uuid, name, "RECEIVED", T, **values),
        transition(uuid, name, "SUCCESS", T + 0.3, result=CUT_RESULT, **values),
    ]
    states = [("RECEIVED", T), ("STARTED", None), ("SUCCESS", T + 0.3)]
    task = detail(uuid, name, "SUCCESS", [attempt(0, states)], result=CUT_RESULT, **values)
    return stream, task


CASES = {
    "success": success,
    "failure": failure,
    "retry": retry,
    "long_argument": long_argument,
}
