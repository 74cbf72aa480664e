"""The demo's Celery app: small tasks that between them produce every kind of task event.

Configured from the environment, because the workers run as ``celery -A`` subprocesses
and the environment is the one channel the runner shares with them:

``CLEARLY_DEMO_BROKER``
    broker URL; ``filesystem:///dir`` (the default, under ``/tmp``) needs no server, and
    is written through ``clearly_exporter.fstransport`` so no reader sees half a message.
``CLEARLY_DEMO_BACKEND``
    result backend URL; unset with a ``filesystem:///dir`` broker means ``file://dir/results``.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlsplit

from celery import Celery, Task, chord, current_task, group

from clearly_exporter.brokers import connection_config, transport_for
from clearly_exporter.demo.backend import default_backend

DEFAULT_BROKER = "filesystem:///tmp/clearly-demo"
#: Over the 1024 characters past which Celery's events cut ``args`` and ``result`` reprs.
BIG_RESULT_CHARS = 5000


def make_app(broker: str, backend: str | None) -> Celery:
    """Build the app for ``broker``; a function, so callers (tests) can reach any broker."""
    url, options = connection_config(broker)
    backend = backend or default_backend(broker)
    if backend and backend.startswith("file://"):
        # Celery's file backend refuses to start on a missing folder.
        os.makedirs(urlsplit(backend).path, exist_ok=True)
    celery_app = Celery("clearly_demo")
    celery_app.conf.update(
        broker_url=url,
        broker_transport=transport_for(url),
        broker_transport_options=options,
        broker_connection_retry_on_startup=True,
        result_backend=backend,
        result_extended=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_prefetch_multiplier=1,
        task_acks_late=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
    )
    return celery_app


app = make_app(
    os.environ.get("CLEARLY_DEMO_BROKER") or DEFAULT_BROKER,
    os.environ.get("CLEARLY_DEMO_BACKEND") or None,
)


@app.task(name="demo.add")
def add(x: int, y: int) -> int:
    """The plain success case, and the building block of chains, groups and chords."""
    return x + y


@app.task(name="demo.fail")
def fail(msg: str) -> None:
    """Always fails, for task-failed events with an exception and traceback."""
    raise ValueError(msg)


@app.task(name="demo.flaky", bind=True)
def flaky(self: Task, key: str, failures: int = 2) -> str:
    """Fails ``failures`` times before succeeding, for task-retried events.

    Each retry is sent with one failure less (``retry(kwargs=...)``), as tasks that carry
    their progress along do, so every attempt shows the kwargs it ran with; nothing is
    shared, so any worker can take any attempt.
    """
    retries = self.request.retries
    if failures > 0:
        raise self.retry(
            kwargs={**self.request.kwargs, "failures": failures - 1},
            exc=RuntimeError(f"{key} not ready (attempt {retries + 1})"),
            countdown=0.2,
            max_retries=5,
        )
    return f"ok after {retries} retries"


@app.task(name="demo.slow")
def slow(seconds: float) -> float:
    """Holds a worker slot, so runtimes and in-progress gauges have something to show."""
    time.sleep(seconds)
    return seconds


@app.task(name="demo.big")
def big(payload: str) -> str:
    """Returns more than events carry, to show how truncated ``result`` values are handled."""
    return payload[::-1].ljust(BIG_RESULT_CHARS, "#")


@app.task(name="demo.login")
def login(user: str, password: str = "") -> str:
    """Takes a secret keyword argument, to show redaction of ``kwargs`` in events."""
    return f"hello {user}"


def same_queue() -> str | None:
    """The queue the running task came from, so its subtasks go where its worker listens."""
    info = current_task.request.delivery_info or {}
    return info.get("routing_key")


@app.task(name="demo.spawn")
def spawn(n: int) -> int:
    """Sends ``n`` subtasks from inside a task, so they carry ``parent_id`` and ``root_id``."""
    for i in range(n):
        add.apply_async((i, i), queue=same_queue())
    return n


@app.task(name="demo.wait_then")
def wait_then(seconds: float) -> float:
    """Sent with a countdown and revoked before it runs, for task-revoked events."""
    time.sleep(seconds)
    return seconds


@app.task(name="demo.total")
def total(numbers: list[int]) -> int:
    """The chord callback: sums the header's results."""
    return sum(numbers)


@app.task(name="demo.fan_out")
def fan_out(n: int) -> int:
    """Applies a group from inside a task, so its members share the task's trace."""
    group(add.s(i, i) for i in range(n)).apply_async(queue=same_queue())
    return n


@app.task(name="demo.fan_in")
def fan_in(n: int) -> int:
    """Applies a chord from inside a task (needs a result backend): header, then total."""
    queue = same_queue()
    chord((add.s(i, i).set(queue=queue) for i in range(n)), total.s().set(queue=queue))()
    return n
