"""The API's questions to the engine, answered from copies taken under its lock.

Each call is synchronous and may scan every stored task, so the server runs it on a
worker thread, never on its event loop. Long scans take the lock a chunk at a time:
the consumer never waits for more than one chunk.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from clearly_exporter.api.filters import Matcher
from clearly_exporter.api.views import redact, task_detail, task_summary, worker_view
from clearly_exporter.engine import Engine
from clearly_exporter.engine.states import RANK
from clearly_exporter.traces.ids import trace_id_hex
from clearly_exporter.traces.redact import Redactor

#: Tasks examined per hold of the engine lock.
CHUNK = 1000
#: Seconds of samples behind events/s and lag.
WINDOW = 10


class Queries:
    """Tasks, workers, stats and reset, as the API serves them."""

    def __init__(
        self,
        engine: Engine,
        redactor: Redactor,
        clock: Callable[[], float] = time.time,
        problem: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.redactor = redactor
        self.clock = clock
        #: What keeps the exporter from seeing events (/healthz's reason), or None: with
        #: the broker down, all-zero stats would look like a quiet cluster.
        self.problem = problem
        #: (time, events, lag sum, lag count), one a second: events/s and lag of late.
        self._samples: deque[tuple[float, int, float, int]] = deque(maxlen=WINDOW + 1)

    def tasks(
        self, match: Matcher, state: str | None, limit: int | None, reverse: bool
    ) -> list[dict[str, Any]]:
        """Stored tasks matching, most recently updated first when ``reverse``."""
        with self.engine.lock:
            records = self.engine.stored_tasks()
        if reverse:
            records.reverse()
        found: list[dict[str, Any]] = []
        for start in range(0, len(records), CHUNK):
            with self.engine.lock:
                for rec in records[start : start + CHUNK]:
                    if state is not None and rec.state != state:
                        continue
                    if not match(rec.name, rec.routing_key, rec.uuid):
                        continue
                    found.append(task_summary(rec))
                    if limit is not None and len(found) >= limit:
                        break
            if limit is not None and len(found) >= limit:
                break
        return [redact(view, self.redactor) for view in found]

    def task_unredacted(self, uuid: str) -> dict[str, Any] | None:
        """Everything known of one task, its values as they came: the caller completes
        them from the result backend, then passes the view through ``redacted``."""
        with self.engine.lock:
            rec = self.engine.task(uuid)
            if rec is None:
                return None
            return task_detail(rec, self.engine.children(uuid), trace_id_hex(rec.root_id or uuid))

    def redacted(self, view: dict[str, Any]) -> dict[str, Any]:
        return redact(view, self.redactor)

    def workers(self, match: Matcher, stats: bool) -> list[dict[str, Any]]:
        now = self.clock()
        with self.engine.lock:
            views = self.engine.workers.views(now)
        views.sort(key=lambda view: view.hostname)
        return [worker_view(view, now, stats) for view in views if match(view.hostname)]

    def seen_tasks(self) -> list[str]:
        with self.engine.lock:
            return sorted(self.engine.seen_task_names())

    def reset(self) -> dict[str, int]:
        """Forget finished tasks; counters (and so /metrics) are left as they are."""
        with self.engine.lock:
            forgotten = self.engine.forget_finished()
            kept = self.engine.tasks_stored
        return {"forgotten": forgotten, "kept": kept}

    def sample(self) -> None:
        """Note the event counters now; called once a second."""
        engine = self.engine
        with engine.lock:
            events = sum(engine.events.values())
            lag = (engine.event_lag.total, sum(engine.event_lag.counts))
        self._samples.append((self.clock(), events, *lag))

    def stats(self) -> dict[str, Any]:
        """clearly's four numbers, then the event rate and lag of the last seconds."""
        engine = self.engine
        now = self.clock()
        with engine.lock:
            counts = engine.metrics.tasks
            events = sum(engine.events.values())
            stored = engine.tasks_stored
            workers = len(engine.workers)
            last_event = engine.last_event
        rate = lag = None
        if len(self._samples) >= 2:
            (t0, e0, s0, n0), (t1, e1, s1, n1) = self._samples[0], self._samples[-1]
            rate = (e1 - e0) / (t1 - t0) if t1 > t0 else None
            lag = (s1 - s0) / (n1 - n0) if n1 > n0 else None
        return {
            "tasks_processed": sum(n for (_, _, s), n in counts.items() if RANK.get(s) == 3),
            "events_processed": events,
            "tasks_stored": stored,
            "workers_stored": workers,
            "events_per_second": rate,
            "lag_seconds": lag,
            "last_event_age": None if last_event is None else max(now - last_event, 0.0),
            "problem": self.problem(),
        }
