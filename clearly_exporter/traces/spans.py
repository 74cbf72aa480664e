"""Building one span from one task attempt: pure, no I/O, no SDK objects.

Span name ``run <task name>``, kind CONSUMER, from received (or started) to the end of
the attempt, a span event per state reached, status ERROR with an ``exception`` event
on FAILURE. Attribute names are the contract of design §5.

Two steps, so the second can run in another process: ``view_of`` reads what the span
needs from the engine's records into a tuple of plain values (on the consumer thread,
under the engine lock), ``build_draft`` makes the span of a view. A span is plain data
(``SpanRecord``); ``encoding`` turns a batch of them into one OTLP request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from clearly_exporter.engine.records import HAS_ETA, OPENED_LATE, Attempt, TaskRecord, call_of
from clearly_exporter.engine.states import BIT, FAILURE, KNOWN, RETRY, SUCCESS
from clearly_exporter.engine.task_metrics import exception_class
from clearly_exporter.reprs import CUT_KEYS, cut, maybe_cut
from clearly_exporter.results import whole_values
from clearly_exporter.retries import as_logged
from clearly_exporter.traces.ids import span_id, trace_id
from clearly_exporter.traces.redact import Redactor

#: Values Celery's events may cut (at 1024 characters), which a backend fetch completes.
CUT_VALUES = tuple(f"celery.task.{key}" for key in CUT_KEYS)
#: Span events by state; a task-sent's state is PENDING, its event ``celery.task.sent``.
EVENT_NAMES = {
    state: "celery.task.sent" if state == "PENDING" else f"celery.task.{state.lower()}"
    for state in KNOWN
}
INFERRED = {"celery.inferred": True}
NO_ATTRIBUTES: dict = {}

#: A span event: (name, time in ns since the epoch, attributes).
SpanEvent = tuple[str, int, dict]
#: Which attempt a span is: (task id, retries, delivery of that retry count).
AttemptKey = tuple[str, int, int]
#: The first delivery number of attempts opened late: past any a task really has.
LATE_DELIVERY = 1 << 20


@dataclass(frozen=True)
class SpanSettings:
    messaging_system: str
    default_queue: str
    redact: Redactor
    with_args: bool = True
    max_attribute_length: int = 65536


class AttemptView(NamedTuple):
    """What the span of one attempt needs, read from the records at export time."""

    key: AttemptKey
    parent: AttemptKey | None
    name: str | None
    queue: str | None
    routing_key: str | None
    root_id: str | None
    parent_id: str | None
    eta: str | None
    args: str | None
    kwargs: str | None
    result: str | None
    state: str
    outcome: str | None
    t_sent: float | None
    t_received: float | None
    t_started: float | None
    t_ended: float | None
    worker: str | None
    reached: int
    inferred: int
    custom: tuple[str, ...]
    exception: str | None
    traceback: str | None
    incomplete: bool
    #: Sent with args other than the task's latest (``retry(args=...)``).
    own_args: bool = False


@dataclass(slots=True)
class SpanRecord:
    """One finished span, as OTLP will carry it; ``error`` set means status ERROR.

    ``shared`` holds the attributes every span of one task type, queue and worker has
    in common, so the encoder can encode them once per such group.
    """

    trace_id: bytes
    span_id: bytes
    parent_id: bytes | None
    name: str
    start: int
    end: int
    shared: dict
    attributes: dict
    events: list[SpanEvent]
    error: str | None


def attempt_key(rec: TaskRecord, att: Attempt) -> AttemptKey:
    """(task, retries, delivery): which delivery of that retry count this attempt was.

    Attempts opened late, before the last one, are numbered from ``LATE_DELIVERY`` among
    themselves: the attempts after them keep the ids their spans already went out with.
    """
    late = att.flags & OPENED_LATE
    delivery = LATE_DELIVERY if late else 0
    for other in rec.attempts:
        if other is att:
            break
        if other.retries == att.retries and (other.flags & OPENED_LATE) == late:
            delivery += 1
    return rec.uuid, att.retries, delivery


def parent_key(rec: TaskRecord, parent: TaskRecord | None) -> AttemptKey | None:
    """The parent's attempt that sent this task (its first one if unknown)."""
    if not rec.parent_id:
        return None
    if parent is None or not parent.attempts:
        return rec.parent_id, 0, 0
    first_seen = _first_time(rec)
    chosen = parent.attempts[-1]
    if first_seen is not None:
        for att in parent.attempts:
            begun = att.t_started or att.t_received
            if begun is not None and begun <= first_seen:
                chosen = att
    return attempt_key(parent, chosen)


def _first_time(rec: TaskRecord) -> float | None:
    if not rec.attempts:
        return None
    first = rec.attempts[0]
    return first.t_sent or first.t_received or first.t_started


def view_of(
    rec: TaskRecord, att: Attempt, parent: TaskRecord | None, incomplete: bool = False
) -> AttemptView:
    """The view of ``att``, read now: later events may still change the records."""
    args, kwargs = call_of(rec, att)
    own_args = args != rec.args or kwargs != rec.kwargs
    return AttemptView(
        attempt_key(rec, att),
        parent_key(rec, parent),
        rec.name,
        rec.queue,
        rec.routing_key,
        rec.root_id,
        rec.parent_id,
        rec.eta if att.flags & HAS_ETA else None,  # a retry's next delivery has its own
        args,
        kwargs,
        rec.result,
        att.outcome or att.state or "UNKNOWN",
        att.outcome,
        att.t_sent,
        att.t_received,
        att.t_started,
        att.t_ended,
        att.worker,
        att.reached,
        att.inferred,
        tuple(sorted(att.custom)) if att.custom else (),
        att.exception,
        att.traceback,
        incomplete,
        own_args,
    )


@dataclass(slots=True)
class Draft:
    """A span but for its values (args, kwargs, result, exception texts), which a
    backend fetch may replace.

    Every value is cut and redacted only in ``finish``, so nothing unredacted is ever
    part of a span: exception messages and tracebacks carry arguments too.
    """

    span: SpanRecord
    values: dict
    settings: SpanSettings
    #: (exception class, message, traceback) of a FAILURE, as the event told them.
    failure: tuple[str, str, str] | None = None
    retry_reason: str | None = None
    #: Sent with args other than the task's latest: the backend's (the latest) are not
    #: this attempt's.
    own_args: bool = False
    #: Values the backend completed.
    completed: set[str] = field(default_factory=set)

    @property
    def task_id(self) -> str:
        return self.span.attributes["celery.task.id"]

    def wants_fetch(self) -> bool:
        return any(maybe_cut(self.values.get(name)) for name in CUT_VALUES)

    def complete(self, meta: dict) -> None:
        """The backend's values where they are this attempt's (``results.Job``)."""
        # A retry changed the args: the backend's are the latest attempt's.
        keys = ("result",) if self.own_args else CUT_KEYS
        sent = {key: self.values.get(f"celery.task.{key}") for key in keys}
        state = self.span.attributes["celery.task.state"]
        for key, whole in whole_values(meta, state, sent).items():
            self.values[f"celery.task.{key}"] = whole
            self.completed.add(f"celery.task.{key}")

    def _result_source(self) -> str:
        if "celery.task.result" in self.completed:
            return "backend"
        return "truncated" if maybe_cut(self.values.get("celery.task.result")) else "event"

    def _clean(self, value: str) -> str:
        """Cut first: redacting parses the value, and a fetched one may be megabytes."""
        return self.settings.redact(cut(value, self.settings.max_attribute_length)) or ""

    def finish(self) -> SpanRecord:
        span = self.span
        attrs = span.attributes
        for key, value in self.values.items():
            if value is not None:
                attrs[key] = self._clean(value)
        if "celery.task.result" in self.values or "celery.task.traceback" in self.values:
            attrs["celery.task.result.source"] = self._result_source()
        if self.failure is not None:
            exc_type, message, stack = self.failure
            stack = self.values.get("celery.task.traceback") or stack
            message = self._clean(message)
            span.error = message or exc_type
            exception = {
                "exception.type": exc_type,
                "exception.message": message,
                "exception.stacktrace": self._clean(stack),
            }
            span.events.append(("exception", span.end, exception))
        if self.retry_reason is not None:
            attrs["celery.task.retry.reason"] = self._clean(self.retry_reason)
        return span


def build_draft(view: AttemptView, settings: SpanSettings) -> Draft:
    """The span of the attempt ``view`` shows."""
    received, started, ended = view.t_received, view.t_started, view.t_ended
    start = received or started or ended or view.t_sent or 0.0
    if ended is None:
        ended = max(t for t in (received, started, start) if t is not None)
    task_id = view.key[0]
    queue = view.queue or settings.default_queue
    state = view.state
    name = view.name or "unknown"
    shared: dict = {
        "celery.task.name": name,
        "celery.queue": queue,
        "messaging.system": settings.messaging_system,
        "messaging.operation.type": "process",
        "messaging.destination.name": queue,
    }
    if view.worker is not None:
        shared["celery.worker"] = view.worker
    if view.routing_key is not None:
        shared["celery.routing_key"] = view.routing_key
    attrs: dict = {
        "celery.task.id": task_id,
        "celery.task.state": state,
        "celery.task.retries": view.key[1],
        "celery.task.root_id": view.root_id or task_id,
        "messaging.message.id": task_id,
    }
    if view.parent_id is not None:
        attrs["celery.task.parent_id"] = view.parent_id
    if view.eta is not None:
        attrs["celery.task.eta"] = view.eta
    if view.incomplete:
        attrs["celery.task.incomplete"] = True
    start_ns, end_ns = int(start * 1e9), int(max(ended, start) * 1e9)
    events = _state_events(view, start_ns, end_ns)
    failure = retry_reason = None
    if state == FAILURE:
        exc_type = exception_class(view.exception)
        attrs["error.type"] = exc_type
        failure = (exc_type, view.exception or "", view.traceback or "")
    elif state == RETRY and view.exception:
        retry_reason = as_logged(view.exception)
    values = {}
    if settings.with_args:
        values = {"celery.task.args": view.args, "celery.task.kwargs": view.kwargs}
        if state == SUCCESS:
            values["celery.task.result"] = view.result
        elif state in (FAILURE, RETRY) and view.traceback:
            values["celery.task.traceback"] = view.traceback
    span = SpanRecord(
        trace_id(view.root_id or task_id),
        span_id(*view.key),
        span_id(*view.parent) if view.parent else None,
        f"run {name}",
        start_ns,
        end_ns,
        shared,
        attrs,
        events,
        None,
    )
    return Draft(span, values, settings, failure, retry_reason, view.own_args)


def _state_events(view: AttemptView, start: int, end: int) -> list[SpanEvent]:
    stamps = {"PENDING": view.t_sent, "RECEIVED": view.t_received, "STARTED": view.t_started}
    reached, inferred, outcome = view.reached, view.inferred, view.outcome
    out = []
    for state in KNOWN:
        bit = BIT[state]
        if not reached & bit:
            continue
        ts = stamps.get(state, view.t_ended if state == outcome else None)
        fallback = start if state == "RECEIVED" else end
        at = fallback if ts is None else int(ts * 1e9)
        out.append((EVENT_NAMES[state], at, INFERRED if inferred & bit else NO_ATTRIBUTES))
    for state in view.custom:
        out.append((f"celery.task.{state.lower()}", end, NO_ATTRIBUTES))
    return out
