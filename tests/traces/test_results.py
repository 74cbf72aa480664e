"""Values completed from the result backend: only where the backend's are the attempt's."""

from __future__ import annotations

import queue
import socket

from clearly_exporter.traces.redact import Redactor
from clearly_exporter.traces.results import ResultFetcher
from clearly_exporter.traces.spans import SpanSettings, build_draft, view_of
from tests.engine.events import feed, retried_with_new_args

CUT = "('" + "x" * 1100 + "...', )"


def test_a_retried_attempt_sent_with_other_args_keeps_its_own_from_the_event():
    """The backend holds the task's latest request: its args are the last attempt's."""
    events = [event for stream in retried_with_new_args() for event in stream]
    for event in events:
        if event["type"] in ("task-sent", "task-received") and event["retries"] == 0:
            event["args"] = CUT
    rec = feed(events).task("a")
    settings = SpanSettings("redis", "celery", Redactor(), max_attribute_length=10_000)
    meta = {"status": "SUCCESS", "result": "done", "args": [1], "kwargs": {"n": 2}}
    spans = []
    for att in rec.attempts:
        draft = build_draft(view_of(rec, att, None), settings)
        ResultFetcher._complete(draft, meta)
        spans.append(draft.finish("backend").attributes)
    assert spans[0]["celery.task.args"] == CUT, "not the latest attempt's (1,)"
    assert spans[0]["celery.task.kwargs"] == "{'n': 0}"
    assert [s["celery.task.args"] for s in spans[1:]] == ["(2,)", "(1,)"]
    assert spans[2]["celery.task.kwargs"] == "{'n': 2}"
    assert spans[2]["celery.task.result"] == "'done'"


def test_args_of_the_task_s_latest_attempt_are_completed_from_the_backend():
    rec = feed(retried_with_new_args()[-1]).task("a")
    rec.args = CUT
    settings = SpanSettings("redis", "celery", Redactor(), max_attribute_length=10_000)
    draft = build_draft(view_of(rec, rec.attempts[0], None), settings)
    assert draft.wants_fetch()
    ResultFetcher._complete(draft, {"status": "SUCCESS", "result": 3, "args": ["y" * 1100]})
    assert draft.finish("backend").attributes["celery.task.args"] == repr(("y" * 1100,))


def test_a_span_waits_for_its_fetch_no_longer_than_the_deadline_whatever_the_client():
    """A backend that takes connections and never answers, reached by a client with no
    timeout of the fetcher's (its socket timeout raised past the test's own wait): the
    span still goes out at the deadline, and the next is not tried while it is left alone."""
    hung = socket.create_server(("127.0.0.1", 0))
    fetcher = ResultFetcher(f"redis://127.0.0.1:{hung.getsockname()[1]}/0", timeout=0.5)
    fetcher.app.conf.redis_socket_timeout = fetcher.app.conf.redis_socket_connect_timeout = 120
    settings = SpanSettings("redis", "celery", Redactor(), max_attribute_length=10_000)
    rec = feed(retried_with_new_args()[-1]).task("a")
    rec.args = CUT
    done: queue.SimpleQueue = queue.SimpleQueue()
    try:
        fetcher.fetch("a", build_draft(view_of(rec, rec.attempts[0], None), settings), done.put)
        span = done.get(timeout=60)
        assert span.attributes["celery.task.args"] == CUT
        assert fetcher.outcomes["timeout"] == 1
        fetcher.fetch("a", build_draft(view_of(rec, rec.attempts[0], None), settings), done.put)
        assert done.get_nowait().attributes["celery.task.args"] == CUT, "handed over at once"
        assert fetcher.outcomes["skipped"] == 1
    finally:
        fetcher.close()
        hung.close()
    assert done.empty(), "each span once"
