"""From engine transitions to spans: shape, ids, tree, retries, failures, incomplete ones."""

from __future__ import annotations

import time
import uuid

from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from clearly_exporter.engine import Engine, EngineConfig
from clearly_exporter.traces.sink import TraceSink
from clearly_exporter.traces.tracing import Tracing, TracingSettings
from tests.engine.events import T0, failed, received, retried, sent, started, succeeded
from tests.otlp_receiver import MemoryExporter, Span


def pipeline(
    config: EngineConfig | None = None, **settings
) -> tuple[Engine, Tracing, MemoryExporter]:
    engine = Engine(config)
    memory = MemoryExporter()
    tracing = Tracing(TracingSettings(endpoint="unused", **settings), engine, "redis", memory)
    tracing.start()
    return engine, tracing, memory


def run(events: list[dict], **kw) -> list[Span]:
    engine, tracing, memory = pipeline(**kw)
    for i, event in enumerate(events):
        engine.handle(event, T0 + i * 0.01)
    tracing.stop(5)
    return memory.snapshot()


def ids() -> tuple[str, str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())


def test_a_chain_is_one_trace_whose_tree_matches_the_workflow():
    a, b, c = ids()
    life = []
    for task, parent in ((c, b), (b, a), (a, None)):
        extra = {"root_id": a, "parent_id": parent}
        life += [succeeded(task, T0 + 3), started(task, T0 + 2), received(task, T0 + 1, **extra)]
    spans = {s.attributes["celery.task.id"]: s for s in run(life)}
    assert set(spans) == {a, b, c}
    assert {s.trace_id for s in spans.values()} == {a.replace("-", "")}
    assert spans[a].parent_id == ""
    assert spans[b].parent_id == spans[a].span_id
    assert spans[c].parent_id == spans[b].span_id


def test_span_shape():
    (a, _, _) = ids()
    events = [
        sent(a, T0, kwargs="{'password': 'hunter2', 'user': 'bob'}"),
        received(a, T0 + 1, kwargs="{'password': 'hunter2', 'user': 'bob'}"),
        succeeded(a, T0 + 3, runtime=1.5),
    ]
    (span,) = run(events)
    assert span.name == "run app.add"
    assert span.kind == PbSpan.SPAN_KIND_CONSUMER
    assert (span.start, span.end) == (int((T0 + 1) * 1e9), int((T0 + 3) * 1e9))
    attrs = span.attributes
    assert attrs["celery.task.state"] == "SUCCESS"
    assert attrs["celery.task.result"] == "3"
    assert attrs["celery.task.result.source"] == "event"
    assert attrs["messaging.system"] == "redis"
    assert attrs["messaging.destination.name"] == attrs["celery.queue"] == "q1"
    assert "hunter2" not in attrs["celery.task.kwargs"] and "bob" in attrs["celery.task.kwargs"]
    names = [(name, attrs) for name, _, attrs in span.events]
    assert names == [
        ("celery.task.sent", {}),
        ("celery.task.received", {}),
        ("celery.task.started", {"celery.inferred": True}),
        ("celery.task.success", {}),
    ]


def test_failure_is_an_error_with_an_exception_event():
    (a, _, _) = ids()
    (span,) = run([received(a, T0), started(a, T0 + 1), failed(a, T0 + 2, "KeyError('k')")])
    assert span.status == Status.STATUS_CODE_ERROR
    assert span.status_message == "KeyError('k')"
    assert span.attributes["error.type"] == "KeyError"
    (exc,) = [attrs for name, _, attrs in span.events if name == "exception"]
    assert exc["exception.type"] == "KeyError"
    assert exc["exception.stacktrace"] == "Traceback ..."


def test_retries_are_sibling_attempts_and_not_errors():
    (a, _, _) = ids()
    events = [
        received(a, T0, retries=0),
        started(a, T0 + 1),
        retried(a, T0 + 2),
        received(a, T0 + 3, retries=1),
        started(a, T0 + 4),
        succeeded(a, T0 + 5),
    ]
    spans = run(events)
    assert [s.attributes["celery.task.retries"] for s in spans] == [0, 1]
    assert len({s.span_id for s in spans}) == 2
    assert {s.trace_id for s in spans} == {a.replace("-", "")}
    assert all(s.parent_id == "" for s in spans)
    assert spans[0].attributes["celery.task.retry.reason"] == "Retry('again')"
    assert spans[0].status == Status.STATUS_CODE_UNSET


def test_no_args_drops_values_and_long_values_are_cut():
    (a, _, _) = ids()
    events = [received(a, T0, args="(" + "x" * 500 + ",)"), succeeded(a, T0 + 1)]
    (span,) = run(events, with_args=False)
    assert "celery.task.args" not in span.attributes
    (span,) = run(events, max_attribute_length=100)
    assert span.attributes["celery.task.args"].endswith("[cut 403 characters]")


def test_values_celery_cut_without_a_backend_say_so():
    (a, _, _) = ids()
    cut = "'" + "y" * 1100 + "...'"
    events = [received(a, T0), {**succeeded(a, T0 + 1), "result": cut}]
    (span,) = run(events)
    assert span.attributes["celery.task.result.source"] == "truncated"


def test_evicted_and_too_old_attempts_are_exported_as_incomplete():
    a, b, _c = ids()
    engine, tracing, memory = pipeline(EngineConfig(max_tasks=1), span_max_age=60)
    engine.handle(received(a, T0), T0)
    engine.handle(received(b, T0), T0 + 1)
    engine.tick(T0 + 2)
    assert [s.attributes["celery.task.id"] for s in memory.snapshot()] == []
    engine.tick(T0 + 62)
    tracing.stop(5)
    spans = {s.attributes["celery.task.id"]: s for s in memory.snapshot()}
    assert set(spans) == {a, b}
    assert all(s.attributes["celery.task.incomplete"] is True for s in spans.values())


def test_a_late_started_within_the_grace_is_in_the_span():
    (a, _, _) = ids()
    engine, tracing, memory = pipeline()
    engine.handle(received(a, T0), T0)
    engine.handle(succeeded(a, T0 + 2), T0 + 2)
    engine.handle(started(a, T0 + 1), T0 + 2.5)
    engine.tick(T0 + 3.5)
    tracing.stop(5)
    (span,) = memory.snapshot()
    started_event = next(e for e in span.events if e[0] == "celery.task.started")
    assert started_event[1:] == (int((T0 + 1) * 1e9), {"celery.inferred": True})


def test_export_errors_and_full_queues_are_counted_never_block():
    engine = Engine()
    tracing = Tracing(
        TracingSettings(endpoint="unused", max_queue=5), engine, "redis", MemoryExporter(False)
    )
    for i in range(15):
        engine.handle(received(f"t{i}", T0), T0)
        engine.handle(succeeded(f"t{i}", T0 + 1), T0)
    engine.tick(T0 + 10)
    assert tracing.spans.dropped["queue_full"] == 5, "5 in the queue, 5 waiting for room"
    tracing.start()
    tracing.stop(5)
    dropped = tracing.spans.dropped
    assert dropped["queue_full"] >= 5 and dropped["export_error"] >= 5
    assert dropped["queue_full"] + dropped["export_error"] == 15
    assert tracing.spans.exported == 0


class Recorder:
    """A ``SpanQueue`` that keeps the views the sink hands over, in order; with a
    ``room``, full once that many are waiting to be taken."""

    exported = 0
    outcomes = None

    def __init__(self, room: int | None = None) -> None:
        self.views: list = []
        self.room = room
        self.taken = 0
        self.dropped = {"queue_full": 0}
        #: Whether a tick takes every view submitted, as a span process that keeps up.
        self.taking = False
        #: Whether nothing takes views, as a dead span process not yet replaced.
        self.dead = False

    def full(self) -> bool:
        return self.room is not None and len(self.views) - self.taken >= self.room

    def refuse(self) -> None:
        self.dropped["queue_full"] += 1

    def stalled(self) -> bool:
        return self.dead

    def submit(self, view) -> None:
        self.views.append(view)

    def tick(self) -> None:
        if self.taking:
            self.taken = len(self.views)


def whole_tasks(engine: Engine, count: int) -> list[str]:
    """``count`` tasks each with every event of its life: their spans need no grace."""
    tasks = [f"t{i:02}" for i in range(count)]
    for task in tasks:
        for event in (sent(task, T0), received(task, T0), started(task, T0), succeeded(task, T0)):
            engine.handle(event, T0)
    return tasks


def test_a_burst_waits_for_room_in_the_queue_and_past_its_bound_the_oldest_are_dropped():
    engine, recorder = Engine(), Recorder(room=10)
    TraceSink(engine, recorder, grace=1.0, max_waiting=15)
    tasks = whole_tasks(engine, 30)
    engine.tick(T0 + 0.1)
    assert [v.key[0] for v in recorder.views] == tasks[:10]
    assert recorder.dropped["queue_full"] == 5
    engine.tick(T0 + 0.2)
    assert len(recorder.views) == 10, "still full: they wait"
    recorder.taken += 10
    engine.tick(T0 + 0.3)
    recorder.taken += 10
    engine.tick(T0 + 0.4)
    assert [v.key[0] for v in recorder.views] == tasks[:10] + tasks[15:]
    assert recorder.dropped["queue_full"] == 5


def test_at_shutdown_attempts_waiting_for_room_wait_for_it_until_the_deadline():
    for taking, delivered in ((True, 30), (False, 10)):
        engine, recorder = Engine(), Recorder(room=10)
        sink = TraceSink(engine, recorder, grace=1.0)
        tasks = whole_tasks(engine, 30)
        engine.tick(T0 + 0.1)
        assert len(recorder.views) == 10, "20 wait for room"
        recorder.taking = taking
        sink.flush(time.monotonic() + (5 if taking else 0.05))
        assert [v.key[0] for v in recorder.views] == tasks[:delivered]
        assert recorder.dropped["queue_full"] == 30 - delivered


def test_at_shutdown_nothing_waits_for_room_a_dead_span_process_cannot_make():
    engine, recorder = Engine(), Recorder(room=10)
    sink = TraceSink(engine, recorder, grace=1.0)
    whole_tasks(engine, 30)
    engine.tick(T0 + 0.1)
    recorder.dead = True
    began = time.monotonic()
    sink.flush(began + 60)
    assert time.monotonic() - began < 30, "waited for the deadline"
    assert len(recorder.views) == 10 and recorder.dropped["queue_full"] == 20


def test_an_attempt_whose_every_event_came_needs_no_grace():
    a, b, _ = ids()
    engine, recorder = Engine(), Recorder()
    TraceSink(engine, recorder, grace=1.0)
    for event in (sent(a, T0), received(a, T0), started(a, T0 + 1), succeeded(a, T0 + 2)):
        engine.handle(event, T0 + 2)
    for event in (sent(b, T0), received(b, T0), succeeded(b, T0 + 2)):
        engine.handle(event, T0 + 2)
    engine.tick(T0 + 2.1)
    assert [v.key[0] for v in recorder.views] == [a]
    engine.tick(T0 + 3.1)
    assert [v.key[0] for v in recorder.views] == [a, b], "an inferred STARTED waits"


def test_exception_texts_are_redacted_and_cut_wherever_they_go():
    a, b, _ = ids()
    secret = "hunter2-in-an-exception"
    message = f"KeyError({{'password': '{secret}', 'user': 'bob'}})"
    trace = f"Traceback (most recent call last):\n  login(password='{secret}')\n{message}"
    events = [
        received(a, T0),
        started(a, T0 + 1),
        {**failed(a, T0 + 2, message), "traceback": trace},
        received(b, T0, retries=0),
        started(b, T0 + 1),
        {**retried(b, T0 + 2), "exception": message},
    ]
    for with_args in (True, False):
        spans = {s.attributes["celery.task.id"]: s for s in run(events, with_args=with_args)}
        assert spans[a].status == Status.STATUS_CODE_ERROR
        exported = repr([(s.status_message, s.attributes, s.events) for s in spans.values()])
        assert secret not in exported and "bob" in exported
        assert "[redacted]" in spans[b].attributes["celery.task.retry.reason"]
    (span,) = run(
        [received(a, T0), failed(a, T0 + 1, "E('" + "x" * 500 + "')")], max_attribute_length=100
    )
    assert span.status_message.endswith("characters]")


def test_an_ended_attempt_evicted_while_the_queue_is_full_waits_too():
    engine, recorder = Engine(EngineConfig(max_tasks=20)), Recorder(room=10)
    TraceSink(engine, recorder, grace=1.0, max_waiting=100)
    tasks = whole_tasks(engine, 40)
    engine.tick(T0 + 0.1)
    assert recorder.dropped["queue_full"] == 0, "20 evicted while the queue was full: waiting"
    for _ in range(3):
        recorder.taken = len(recorder.views)
        engine.tick(T0 + 0.2)
    assert sorted(v.key[0] for v in recorder.views) == tasks
    assert recorder.dropped["queue_full"] == 0
