"""Values completed from the result backend: only where the backend's are the attempt's."""

from __future__ import annotations

import queue
import socket

import pytest

from clearly_exporter.engine.records import TaskRecord
from clearly_exporter.results import ResultFetcher
from clearly_exporter.traces.redact import Redactor
from clearly_exporter.traces.spans import Draft, SpanSettings, build_draft, view_of
from tests.cluster import private_redis
from tests.engine.events import feed, retried_with_new_args

CUT = "('" + "x" * 1100 + "...', )"
#: What the backend keeps of a task whose args the events cut as ``CUT``.
WHOLE = ["x" * 1100 + "tail"]
SETTINGS = SpanSettings("redis", "celery", Redactor(), max_attribute_length=10_000)


def draft_of(rec: TaskRecord, attempt: int = 0) -> Draft:
    return build_draft(view_of(rec, rec.attempts[attempt], None), SETTINGS)


def test_a_retried_attempt_sent_with_other_args_keeps_its_own_from_the_event():
    """The backend holds the task's latest request: its args are the last attempt's."""
    events = [event for stream in retried_with_new_args() for event in stream]
    for event in events:
        if event["type"] in ("task-sent", "task-received") and event["retries"] == 0:
            event["args"] = CUT
    rec = feed(events).task("a")
    meta = {"status": "SUCCESS", "result": "done", "args": WHOLE, "kwargs": {"n": 2}}
    spans = []
    for attempt in range(len(rec.attempts)):
        draft = draft_of(rec, attempt)
        draft.complete(meta)
        spans.append(draft.finish().attributes)
    assert spans[0]["celery.task.args"] == CUT, "not the latest attempt's, though it fits"
    assert spans[0]["celery.task.kwargs"] == "{'n': 0}"
    assert [s["celery.task.args"] for s in spans[1:]] == ["(2,)", "(1,)"]
    assert spans[2]["celery.task.kwargs"] == "{'n': 2}"
    assert spans[2]["celery.task.result"] == "3", "not cut: the event's"
    assert spans[2]["celery.task.result.source"] == "event"


def test_args_of_the_task_s_latest_attempt_are_completed_from_the_backend():
    rec = feed(retried_with_new_args()[-1]).task("a")
    rec.args = CUT
    draft = draft_of(rec)
    assert draft.wants_fetch()
    draft.complete({"status": "SUCCESS", "result": 3, "args": WHOLE})
    assert draft.finish().attributes["celery.task.args"] == repr(tuple(WHOLE))


@pytest.mark.parametrize(
    ("stored", "source"),
    [("r" * 2000, "backend"), ("s" * 2000, "truncated"), (None, "truncated")],
    ids=["completed", "another value", "not stored"],
)
def test_a_span_says_where_its_result_comes_from(stored: str | None, source: str):
    rec = feed(retried_with_new_args()[-1]).task("a")
    rec.args = rec.result = repr("r" * 2000)[:1020] + "...'"
    draft = draft_of(rec)
    draft.complete({"status": "SUCCESS", "result": stored, "args": None})
    attributes = draft.finish().attributes
    assert attributes["celery.task.result.source"] == source
    assert (attributes["celery.task.result"] == repr(stored)) == (source == "backend")


class Exploding:
    """A job whose values cannot take the backend's (an odd value stored by another
    client): it must still be handed over, and the fetcher go on."""

    def complete(self, meta: dict) -> None:
        raise TypeError("not a value this job takes")

    def finish(self) -> str:
        return "handed over"


def test_a_job_that_cannot_take_the_backend_s_values_is_still_handed_over():
    backend = private_redis()
    fetcher = ResultFetcher(backend, timeout=5)
    done: queue.SimpleQueue = queue.SimpleQueue()
    try:
        fetcher.app.backend.store_result("stored", "value", "SUCCESS")
        for _ in range(2):  # and the thread that fetched it goes on
            fetcher.fetch("stored", Exploding(), done.put)
            assert done.get(timeout=30) == "handed over"
    finally:
        fetcher.close()
    assert fetcher.outcomes["ok"] == 2 and done.empty()


def test_a_span_waits_for_its_fetch_no_longer_than_the_deadline_whatever_the_client():
    """A backend that takes connections and never answers, reached by a client with no
    timeout of the fetcher's (its socket timeout raised past the test's own wait): the
    span still goes out at the deadline, and the next is not tried while it is left alone."""
    hung = socket.create_server(("127.0.0.1", 0))
    fetcher = ResultFetcher(f"redis://127.0.0.1:{hung.getsockname()[1]}/0", timeout=0.5)
    fetcher.app.conf.redis_socket_timeout = fetcher.app.conf.redis_socket_connect_timeout = 120
    rec = feed(retried_with_new_args()[-1]).task("a")
    rec.args = CUT
    done: queue.SimpleQueue = queue.SimpleQueue()
    try:
        fetcher.fetch("a", draft_of(rec), done.put)
        span = done.get(timeout=60)
        assert span.attributes["celery.task.args"] == CUT
        assert fetcher.outcomes["timeout"] == 1
        fetcher.fetch("a", draft_of(rec), done.put)
        assert done.get_nowait().attributes["celery.task.args"] == CUT, "handed over at once"
        assert fetcher.outcomes["skipped"] == 1
    finally:
        fetcher.close()
        hung.close()
    assert done.empty(), "each span once"
