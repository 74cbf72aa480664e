"""Complete values from the result backend, for reprs Celery cut at 1024 characters.

Fetched off the consumer thread, with bounded concurrency and pending work, a socket
timeout, and JSON only (a pickled result is never loaded).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from celery import Celery

from clearly_exporter.brokers import redact_url
from clearly_exporter.traces.spans import Draft, SpanRecord

log = logging.getLogger(__name__)

OUTCOMES = ("ok", "missing", "error", "skipped")


class ResultFetcher:
    """Owns the backend connection pool, its worker threads and the fetch counts."""

    def __init__(
        self, url: str, timeout: float = 5.0, concurrency: int = 4, max_pending: int = 1000
    ) -> None:
        self.url = url
        self.max_pending = max_pending
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self._lock = threading.Lock()
        self._pending = 0
        self.app = Celery("clearly-exporter-results", set_as_current=False)
        self.app.conf.update(
            result_backend=url,
            accept_content=["json"],
            result_accept_content=["json"],
            redis_socket_timeout=timeout,
            redis_socket_connect_timeout=timeout,
            result_cache_max=-1,
        )
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="clearly-result-fetch")

    def fetch(self, task_id: str, draft: Draft, done: Callable[[SpanRecord], None]) -> None:
        """Complete ``draft`` from the backend, then hand the span to ``done``."""
        with self._lock:
            if self._pending >= self.max_pending:
                self.outcomes["skipped"] += 1
                busy = True
            else:
                self._pending += 1
                busy = False
        if busy:
            done(draft.finish("truncated"))
            return
        self._pool.submit(self._fetch, task_id, draft, done)

    def _fetch(self, task_id: str, draft: Draft, done: Callable[[SpanRecord], None]) -> None:
        outcome, source = "error", "truncated"
        try:
            meta = self.app.backend.get_task_meta(task_id)
            if meta.get("status") in ("SUCCESS", "FAILURE", "RETRY"):
                self._complete(draft, meta)
                outcome, source = "ok", "backend"
            else:
                outcome = "missing"
        except Exception as exc:
            log.debug("result fetch of %s from %s failed: %s", task_id, redact_url(self.url), exc)
        with self._lock:
            self._pending -= 1
            self.outcomes[outcome] += 1
        done(draft.finish(source))

    @staticmethod
    def _complete(draft: Draft, meta: dict) -> None:
        values = draft.values
        if "celery.task.result" in values and meta.get("status") == "SUCCESS":
            values["celery.task.result"] = repr(meta.get("result"))
        if "celery.task.traceback" in values and meta.get("traceback"):
            values["celery.task.traceback"] = meta["traceback"]
        if meta.get("args") is not None and "celery.task.args" in values:
            values["celery.task.args"] = repr(tuple(meta["args"]))
        if meta.get("kwargs") is not None and "celery.task.kwargs" in values:
            values["celery.task.kwargs"] = repr(meta["kwargs"])

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
