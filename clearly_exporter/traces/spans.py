"""Building one span from one task attempt: pure, no I/O, no SDK objects.

Span name ``run <task name>``, kind CONSUMER, from received (or started) to the end of
the attempt, a span event per state reached, status ERROR with an ``exception`` event
on FAILURE. Attribute names are the contract of design §5. A span is plain data
(``SpanRecord``); ``encoding`` turns a batch of them into one OTLP request, which costs a
fraction of building the SDK's span objects and running its generic encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

from clearly_exporter.engine.records import Attempt, TaskRecord
from clearly_exporter.engine.states import BIT, FAILURE, KNOWN, RETRY, SUCCESS
from clearly_exporter.engine.task_metrics import exception_class
from clearly_exporter.traces.ids import span_id, trace_id
from clearly_exporter.traces.redact import Redactor

#: Event reprs at least this long may have been cut by Celery (it cuts at 1024).
MAYBE_CUT = 1000
EVENT_NAMES = {state: f"celery.task.{state.lower()}" for state in KNOWN}
INFERRED = {"celery.inferred": True}
NO_ATTRIBUTES: dict = {}

#: A span event: (name, time in ns since the epoch, attributes).
SpanEvent = tuple[str, int, dict]


@dataclass(frozen=True)
class SpanSettings:
    messaging_system: str
    default_queue: str
    redact: Redactor
    with_args: bool = True
    max_attribute_length: int = 65536


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


def maybe_cut(value: str | None) -> bool:
    return value is not None and len(value) >= MAYBE_CUT and "..." in value


def attempt_key(rec: TaskRecord, att: Attempt) -> tuple[int, int]:
    """(retries, delivery): which delivery of that retry count this attempt was."""
    delivery = 0
    for other in rec.attempts:
        if other is att:
            break
        if other.retries == att.retries:
            delivery += 1
    return att.retries, delivery


def parent_span_id(rec: TaskRecord, parent: TaskRecord | None) -> bytes | None:
    """The span of the parent's attempt that sent this task (its first one if unknown)."""
    if not rec.parent_id:
        return None
    if parent is None or not parent.attempts:
        return span_id(rec.parent_id, 0, 0)
    first_seen = _first_time(rec)
    chosen = parent.attempts[-1]
    if first_seen is not None:
        for att in parent.attempts:
            begun = att.t_started or att.t_received
            if begun is not None and begun <= first_seen:
                chosen = att
    return span_id(parent.uuid, *attempt_key(parent, chosen))


def _first_time(rec: TaskRecord) -> float | None:
    if not rec.attempts:
        return None
    first = rec.attempts[0]
    return first.t_sent or first.t_received or first.t_started


def _cut(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    return value[:limit] + f"...[cut {len(value) - limit} characters]"


@dataclass(slots=True)
class Draft:
    """A span but for its values (args, kwargs, result), which a backend fetch may replace.

    Values are redacted and attached only in ``finish``, so nothing unredacted is ever
    part of a span.
    """

    span: SpanRecord
    values: dict
    settings: SpanSettings

    def wants_fetch(self) -> bool:
        return any(maybe_cut(v) for v in self.values.values())

    def finish(self, source: str = "event") -> SpanRecord:
        attrs = self.span.attributes
        limit = self.settings.max_attribute_length
        redact = self.settings.redact
        for key, value in self.values.items():
            if value is not None:
                attrs[key] = _cut(redact(value) or "", limit)
        if "celery.task.result" in self.values or "celery.task.traceback" in self.values:
            attrs["celery.task.result.source"] = source
        return self.span


def build_draft(
    rec: TaskRecord,
    att: Attempt,
    parent: TaskRecord | None,
    settings: SpanSettings,
    incomplete: bool = False,
) -> Draft:
    """The span of ``att``, read from the record now (on the consumer thread)."""
    received, started, ended = att.t_received, att.t_started, att.t_ended
    start = received or started or ended or att.t_sent or 0.0
    if ended is None:
        ended = max(t for t in (received, started, start) if t is not None)
    queue = rec.queue or settings.default_queue
    state = att.outcome or att.state or "UNKNOWN"
    name = rec.name or "unknown"
    shared: dict = {
        "celery.task.name": name,
        "celery.queue": queue,
        "messaging.system": settings.messaging_system,
        "messaging.operation.type": "process",
        "messaging.destination.name": queue,
    }
    if att.worker is not None:
        shared["celery.worker"] = att.worker
    if rec.routing_key is not None:
        shared["celery.routing_key"] = rec.routing_key
    attrs: dict = {
        "celery.task.id": rec.uuid,
        "celery.task.state": state,
        "celery.task.retries": att.retries,
        "celery.task.root_id": rec.root_id or rec.uuid,
        "messaging.message.id": rec.uuid,
    }
    if rec.parent_id is not None:
        attrs["celery.task.parent_id"] = rec.parent_id
    if rec.eta is not None:
        attrs["celery.task.eta"] = rec.eta
    if incomplete:
        attrs["celery.task.incomplete"] = True
    start_ns, end_ns = int(start * 1e9), int(max(ended, start) * 1e9)
    events = _state_events(att, start_ns, end_ns)
    error = None
    if state == FAILURE:
        exc_type = exception_class(att.exception)
        attrs["error.type"] = exc_type
        error = att.exception or exc_type
        exception = {
            "exception.type": exc_type,
            "exception.message": att.exception or "",
            "exception.stacktrace": att.traceback or "",
        }
        events.append(("exception", end_ns, exception))
    elif state == RETRY and att.exception:
        attrs["celery.task.retry.reason"] = att.exception
    values = {}
    if settings.with_args:
        values = {"celery.task.args": rec.args, "celery.task.kwargs": rec.kwargs}
        if state == SUCCESS:
            values["celery.task.result"] = rec.result
        elif state in (FAILURE, RETRY) and att.traceback:
            values["celery.task.traceback"] = att.traceback
    span = SpanRecord(
        trace_id(rec.root_id or rec.uuid),
        span_id(rec.uuid, *attempt_key(rec, att)),
        parent_span_id(rec, parent),
        f"run {name}",
        start_ns,
        end_ns,
        shared,
        attrs,
        events,
        error,
    )
    return Draft(span, values, settings)


def _state_events(att: Attempt, start: int, end: int) -> list[SpanEvent]:
    stamps = {"PENDING": att.t_sent, "RECEIVED": att.t_received, "STARTED": att.t_started}
    reached, inferred = att.reached, att.inferred
    out = []
    for state in KNOWN:
        bit = BIT[state]
        if not reached & bit:
            continue
        ts = stamps.get(state, att.t_ended if state == att.outcome else None)
        fallback = start if state == "RECEIVED" else end
        at = fallback if ts is None else int(ts * 1e9)
        out.append((EVENT_NAMES[state], at, INFERRED if inferred & bit else NO_ATTRIBUTES))
    for state in sorted(att.custom or ()):
        out.append((f"celery.task.{state.lower()}", end, NO_ATTRIBUTES))
    return out
