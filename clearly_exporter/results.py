"""Complete values from the result backend, for reprs Celery cut at 1024 characters.

Spans (in the span process) and the API's task view (in the exporter's) both wait on
it. Fetched off the consumer thread, with bounded concurrency and pending work, a
deadline, and JSON only (a pickled result is never loaded). A backend that fails is
left alone for a while (1 s doubling to 30 s while it keeps failing): meanwhile values
go out at once as the event cut them, instead of each waiting out a timeout behind the
others. Every job handed to ``fetch`` reaches ``done`` exactly once, also when the
fetcher closes with fetches still pending.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from celery import Celery

from clearly_exporter.brokers import redact_url
from clearly_exporter.reprs import completes

log = logging.getLogger(__name__)

#: ``timeout``: the backend did not answer in time (hung, overloaded); ``error``: any
#: other failure (unreachable, refused); ``skipped``: not tried (too many pending, the
#: backend failed moments ago, or the exporter is stopping).
OUTCOMES = ("ok", "missing", "error", "timeout", "skipped")
FAILED = frozenset({"error", "timeout"})
BACKOFF_MIN = 1.0
BACKOFF_MAX = 30.0


def whole_values(meta: dict, state: str | None, sent: Mapping[str, str | None]) -> dict[str, str]:
    """The backend's whole copy of each ``sent`` value (``args``, ``kwargs``,
    ``result``, as the events carried it) that Celery cut: the result where the
    backend's status is ``state`` (it holds the task's latest), args and kwargs where it
    keeps them (``result_extended``); each only if it completes the sent one."""
    values = {}
    if meta.get("status") == state == "SUCCESS":
        values["result"] = repr(meta.get("result"))
    if isinstance(meta.get("args"), list):
        values["args"] = repr(tuple(meta["args"]))
    if isinstance(meta.get("kwargs"), dict):
        values["kwargs"] = repr(meta["kwargs"])
    return {key: whole for key, whole in values.items() if completes(sent.get(key), whole)}


class Job(Protocol):
    """Values waiting for the backend's copy: a span's draft, a task view."""

    def complete(self, meta: dict) -> None:
        """Take what the backend holds (its ``get_task_meta``) where it is this job's."""

    def finish(self) -> Any:
        """What ``done`` gets, saying which of its values the backend completed."""


Done = Callable[[Any], None]


class ResultFetcher:
    """Owns the backend connection pool, its worker threads and the fetch counts.

    A job waits at most ``timeout`` for its fetch, whatever the backend: Redis clients
    get it as their socket timeout too, other backends' clients keep their own, and a
    job whose fetch has not ended by then is handed over with its cut values, counted as
    a timeout, while the fetch runs on (its answer, if any, only tells the backend is
    back).
    """

    def __init__(
        self, url: str, timeout: float = 5.0, concurrency: int = 4, max_pending: int = 1000
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.max_pending = max_pending
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self._lock = threading.Lock()
        #: Wakes the deadline keeper when a first job waits, and at close.
        self._waiting = threading.Condition(self._lock)
        #: Jobs not yet handed to ``done``, queued or being fetched, with their deadline;
        #: in the order asked for, which is their deadlines' order.
        self._jobs: dict[int, tuple[Job, Done, float]] = {}
        self._ids = itertools.count()
        self._closed = False
        #: While the backend fails: fetches starting before ``_retry_at`` are skipped.
        self._backoff = 0.0
        self._retry_at = 0.0
        self._failed_at = float("-inf")
        self.app = Celery("clearly-exporter-results", set_as_current=False)
        self.app.conf.update(
            result_backend=url,
            accept_content=["json"],
            result_accept_content=["json"],
            redis_socket_timeout=timeout,
            redis_socket_connect_timeout=timeout,
            result_cache_max=-1,
        )
        # Daemon threads, not a ThreadPoolExecutor: the interpreter joins an executor's
        # threads at exit, so a fetch hung on its socket would hold up a SIGTERM.
        self._todo: queue.SimpleQueue[tuple[int, str] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"clearly-result-fetch-{i}", daemon=True)
            for i in range(concurrency)
        ]
        self._threads.append(
            threading.Thread(
                target=self._keep_deadlines, name="clearly-result-deadlines", daemon=True
            )
        )
        for thread in self._threads:
            thread.start()

    def fetch(self, task_id: str, job: Job, done: Done) -> None:
        """Complete ``job`` from the backend, then hand what it finishes as to ``done``.

        Not tried (handed over at once) when too many wait, counting fetches stuck on a
        hung backend, or while the backend is left alone after failing.
        """
        with self._lock:
            now = time.monotonic()
            busy = (
                self._closed
                or len(self._jobs) >= self.max_pending
                or self._todo.qsize() >= self.max_pending
                or now < self._retry_at
            )
            if busy:
                self.outcomes["skipped"] += 1
            else:
                key = next(self._ids)
                if not self._jobs:
                    self._waiting.notify()
                self._jobs[key] = (job, done, now + self.timeout)
        if busy:
            done(job.finish())
            return
        self._todo.put((key, task_id))

    def _keep_deadlines(self) -> None:
        """Hand over the jobs whose fetch has not ended by their deadline."""
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                late = [key for key, (_, _, deadline) in self._jobs.items() if deadline <= now]
                expired = [self._jobs.pop(key) for key in late]
                if expired:
                    self.outcomes["timeout"] += len(expired)
                    self._judge("timeout", now - self.timeout)
                else:
                    first = next(iter(self._jobs.values()), None)
                    self._waiting.wait(None if first is None else first[2] - now)
            for job, done, _ in expired:
                _hand_over(job, done)

    def _run(self) -> None:
        while (item := self._todo.get()) is not None:
            try:
                self._fetch(*item)
            except Exception:
                log.exception("result fetch of %s failed unexpectedly", item[1])

    def _fetch(self, key: int, task_id: str) -> None:
        started = time.monotonic()
        meta: dict | None = None
        with self._lock:
            outcome = "skipped" if started < self._retry_at else ""
        if not outcome:
            try:
                meta = self.app.backend.get_task_meta(task_id)
                if meta.get("status") in ("SUCCESS", "FAILURE", "RETRY"):
                    outcome = "ok"
                else:
                    outcome, meta = "missing", None
            except Exception as exc:
                outcome = "timeout" if _is_timeout(exc) else "error"
                log.debug("result fetch of %s failed: %s", task_id, exc)
        with self._lock:
            self._judge(outcome, started)
            claimed = self._jobs.pop(key, None)
            if claimed is not None:  # else its deadline or close() handed it over
                self.outcomes[outcome] += 1
        if claimed is not None:
            job, done, _ = claimed
            _hand_over(job, done, meta)

    def _judge(self, outcome: str, started: float) -> None:
        """Open, extend or close the pause on fetches (caller holds the lock)."""
        if outcome in ("ok", "missing"):
            if self._backoff:
                log.info("result backend %s answers again", redact_url(self.url))
            self._backoff = self._retry_at = 0.0
        elif outcome in FAILED and started >= self._failed_at:
            # Fetches already under way when a failure paused the others fail alike:
            # only one started since then says the backend is still failing.
            if not self._backoff:
                log.warning(
                    "result backend %s failed (%s): spans and task views keep the values "
                    "Celery cut until it answers again",
                    redact_url(self.url),
                    outcome,
                )
            self._backoff = min(self._backoff * 2 or BACKOFF_MIN, BACKOFF_MAX)
            self._failed_at = time.monotonic()
            self._retry_at = self._failed_at + self._backoff

    def close(self) -> None:
        """Hand every pending job over now, with its cut values; fetches still running
        are abandoned (their threads end when their client gives up, or with the process)."""
        with self._lock:
            self._closed = True
            self._waiting.notify()
            jobs = list(self._jobs.values())
            self._jobs.clear()
            self.outcomes["skipped"] += len(jobs)
        for job, done, _ in jobs:
            _hand_over(job, done)
        for _ in self._threads:
            self._todo.put(None)


def _hand_over(job: Job, done: Done, meta: dict | None = None) -> None:
    """``job`` to ``done``, completed from ``meta`` if there is one. Whatever fails on the
    way is logged: a thread of the fetcher must go on, and ``done`` be called."""
    if meta is not None:
        try:
            job.complete(meta)
        except Exception:  # an odd value stored by some other client
            log.exception("cannot complete values from the backend's %r", meta.get("task_id"))
    try:
        done(job.finish())
    except Exception:
        log.exception("a job completed from the result backend could not be handed over")


def _is_timeout(exc: BaseException) -> bool:
    """Whether a failure is a timeout, whatever library raised it (redis-py, kombu and
    the socket module each have their own ``TimeoutError``)."""
    return any(cls.__name__ == "TimeoutError" for cls in type(exc).__mro__)
