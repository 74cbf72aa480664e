"""Builders of Celery events as workers and producers send them, for engine tests."""

from __future__ import annotations

import math
import random
from collections import defaultdict

from clearly_exporter.engine import Engine, EngineConfig

T0 = 1_700_000_000.0


def task_event(etype: str, uuid: str, ts: float, **fields) -> dict:
    event = {"type": etype, "uuid": uuid, "timestamp": ts, "hostname": "celery@w1", "clock": 1}
    event.update(fields)
    return event


def sent(uuid: str, ts: float, name: str = "app.add", retries: int = 0, **kw) -> dict:
    fields = {"name": name, "args": "(1, 2)", "kwargs": "{}", "retries": retries, "queue": "q1"}
    fields.update(kw)
    return task_event("task-sent", uuid, ts, hostname="producer@p", **fields)


def received(uuid: str, ts: float, name: str = "app.add", retries: int = 0, **kw) -> dict:
    fields = {"name": name, "args": "(1, 2)", "kwargs": "{}", "retries": retries}
    fields.update(kw)
    return task_event("task-received", uuid, ts, **fields)


def started(uuid: str, ts: float) -> dict:
    return task_event("task-started", uuid, ts)


def succeeded(uuid: str, ts: float, runtime: float | None = None) -> dict:
    return task_event("task-succeeded", uuid, ts, result="3", runtime=runtime)


def failed(uuid: str, ts: float, exception: str = "ValueError('boom')") -> dict:
    return task_event("task-failed", uuid, ts, exception=exception, traceback="Traceback ...")


def retried(uuid: str, ts: float) -> dict:
    return task_event("task-retried", uuid, ts, exception="Retry('again')", traceback="tb")


def revoked(uuid: str, ts: float) -> dict:
    return task_event("task-revoked", uuid, ts, terminated=False, expired=False)


def rejected(uuid: str, ts: float, requeue: bool) -> dict:
    return task_event("task-rejected", uuid, ts, requeue=requeue)


def worker_event(etype: str, hostname: str, ts: float, **fields) -> dict:
    event = {
        "type": etype,
        "hostname": hostname,
        "timestamp": ts,
        "freq": 2.0,
        "active": 1,
        "processed": 10,
        "loadavg": [0.5, 0.25, 0.1],
        "sw_ident": "py-celery",
        "sw_ver": "5.7.0",
        "sw_sys": "Linux",
        "pid": 42,
    }
    event.update(fields)
    return event


def feed(events: list[dict], config: EngineConfig | None = None, at: float = T0) -> Engine:
    """A fresh engine fed ``events`` one by one, each received a millisecond later."""
    engine = Engine(config)
    for i, event in enumerate(events):
        engine.handle(event, at + 0.001 * i)
    return engine


def counts(engine: Engine) -> dict[str, int]:
    """``celery_tasks_total`` summed over names and queues, by state."""
    out: dict[str, int] = defaultdict(int)
    for (_, _, state), n in engine.metrics.tasks.items():
        out[state] += n
    return dict(out)


def retried_with_new_args() -> list[list[dict]]:
    """A task retried twice with ``retry(args=...)``, as its senders send it: the
    producer's task-sent, then each attempt's worker (which sends the next attempt's
    task-sent as it retries). Each delivery has args of its own."""

    def call(n: int) -> dict:
        return {"retries": n, "args": f"({3 - n},)", "kwargs": f"{{'n': {n}}}"}

    def resent(n: int) -> dict:
        """A retry's task-sent: Celery names the task itself as its parent (it had none)."""
        return {**call(n), "parent_id": "a", "root_id": "a"}

    streams = [[sent("a", T0, **call(0))]]
    for n in range(3):
        t = T0 + 10 * n
        end = [sent("a", t + 2.5, **resent(n + 1)), retried("a", t + 3)] if n < 2 else []
        streams.append(
            [received("a", t + 1, **call(n)), started("a", t + 2), *end]
            + ([] if n < 2 else [succeeded("a", t + 3)])
        )
    return streams


def interleaved(streams: list[list[dict]], rng: random.Random) -> list[dict]:
    """The streams merged in a random order, each stream's own order kept: how events
    from several senders reach the exporter."""
    pending = [list(stream) for stream in streams]
    out = []
    while any(pending):
        out.append(rng.choice([s for s in pending if s]).pop(0))
    return out


def in_progress(engine: Engine, now: float) -> dict[tuple, tuple[int, float | None]]:
    """A scrape's in-progress series: (tasks, since when the oldest is there) by key."""
    engine.snapshot(now)  # the time-driven rules first, as a scrape runs them
    placed = engine.metrics.in_progress()
    counts = placed.counts.column("q", len(placed.keys))
    since = [None if math.isnan(s) else s for s in placed.since.column("d", len(placed.keys))]
    return dict(zip(placed.keys, zip(counts, since, strict=True), strict=True))
