"""Building one span from one task attempt: pure, no I/O.

Span name ``run <task name>``, kind CONSUMER, from received (or started) to the end of
the attempt, a span event per state reached, status ERROR with an ``exception`` event
on FAILURE. Attribute names are the contract of design §5.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from clearly_exporter import __version__
from clearly_exporter.engine.records import Attempt, TaskRecord
from clearly_exporter.engine.states import BIT, FAILURE, KNOWN, RETRY, SUCCESS
from clearly_exporter.engine.task_metrics import exception_class
from clearly_exporter.traces.ids import span_id, trace_id
from clearly_exporter.traces.redact import Redactor

SCOPE = InstrumentationScope("clearly_exporter", __version__)
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
#: Event reprs at least this long may have been cut by Celery (it cuts at 1024).
MAYBE_CUT = 1000
EVENT_NAMES = {state: f"celery.task.{state.lower()}" for state in KNOWN}


@dataclass(frozen=True)
class SpanSettings:
    resource: Resource
    messaging_system: str
    default_queue: str
    redact: Redactor
    with_args: bool = True
    max_attribute_length: int = 65536


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


def context_of(rec: TaskRecord, att: Attempt) -> SpanContext:
    retries, delivery = attempt_key(rec, att)
    return SpanContext(
        trace_id(rec.root_id or rec.uuid),
        span_id(rec.uuid, retries, delivery),
        is_remote=False,
        trace_flags=SAMPLED,
    )


def parent_context(rec: TaskRecord, parent: TaskRecord | None) -> SpanContext | None:
    """The span of the parent's attempt that sent this task (its first one if unknown)."""
    if not rec.parent_id:
        return None
    root = rec.root_id or rec.parent_id
    if parent is None or not parent.attempts:
        return SpanContext(trace_id(root), span_id(rec.parent_id, 0, 0), False, SAMPLED)
    first_seen = _first_time(rec)
    chosen = parent.attempts[-1]
    if first_seen is not None:
        for att in parent.attempts:
            begun = att.t_started or att.t_received
            if begun is not None and begun <= first_seen:
                chosen = att
    retries, delivery = attempt_key(parent, chosen)
    return SpanContext(trace_id(root), span_id(parent.uuid, retries, delivery), False, SAMPLED)


def _first_time(rec: TaskRecord) -> float | None:
    if not rec.attempts:
        return None
    first = rec.attempts[0]
    return first.t_sent or first.t_received or first.t_started


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _cut(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    return value[:limit] + f"...[cut {len(value) - limit} characters]"


@dataclass
class Draft:
    """A span but for its values (args, kwargs, result), which a backend fetch may replace.

    Values are redacted and attached only in ``finish``, so nothing unredacted is ever
    part of a span.
    """

    fields: dict
    values: dict
    settings: SpanSettings

    def wants_fetch(self) -> bool:
        return any(maybe_cut(v) for v in self.values.values())

    def finish(self, source: str = "event") -> ReadableSpan:
        attrs = self.fields["attributes"]
        limit = self.settings.max_attribute_length
        for key, value in self.values.items():
            if value is not None:
                attrs[key] = _cut(self.settings.redact(value) or "", limit)
        if "celery.task.result" in self.values or "celery.task.traceback" in self.values:
            attrs["celery.task.result.source"] = source
        return ReadableSpan(**self.fields)


def build_draft(
    rec: TaskRecord,
    att: Attempt,
    parent: TaskRecord | None,
    settings: SpanSettings,
    incomplete: bool = False,
) -> Draft:
    """The span of ``att``, read from the record now (on the consumer thread)."""
    times = [t for t in (att.t_received, att.t_started, att.t_ended) if t is not None]
    start = att.t_received or att.t_started or (min(times) if times else att.t_sent) or 0.0
    end = att.t_ended if att.t_ended is not None else (max(times) if times else start)
    queue = rec.queue or settings.default_queue
    state = att.outcome or att.state or "UNKNOWN"
    attrs: dict = {
        "celery.task.id": rec.uuid,
        "celery.task.name": rec.name or "unknown",
        "celery.task.state": state,
        "celery.task.retries": att.retries,
        "celery.task.root_id": rec.root_id or rec.uuid,
        "celery.queue": queue,
        "messaging.system": settings.messaging_system,
        "messaging.operation.type": "process",
        "messaging.message.id": rec.uuid,
        "messaging.destination.name": queue,
    }
    optional = {
        "celery.task.parent_id": rec.parent_id,
        "celery.task.eta": rec.eta,
        "celery.worker": att.worker,
        "celery.routing_key": rec.routing_key,
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    if incomplete:
        attrs["celery.task.incomplete"] = True
    events = _state_events(att, start, end)
    status = Status(StatusCode.UNSET)
    if state == FAILURE:
        exc_type = exception_class(att.exception)
        attrs["error.type"] = exc_type
        status = Status(StatusCode.ERROR, att.exception or exc_type)
        events.append(
            Event(
                "exception",
                {
                    "exception.type": exc_type,
                    "exception.message": att.exception or "",
                    "exception.stacktrace": att.traceback or "",
                },
                _ns(end),
            )
        )
    elif state == RETRY and att.exception:
        attrs["celery.task.retry.reason"] = att.exception
    values = {}
    if settings.with_args:
        values = {"celery.task.args": rec.args, "celery.task.kwargs": rec.kwargs}
        if state == SUCCESS:
            values["celery.task.result"] = rec.result
        elif state in (FAILURE, RETRY) and att.traceback:
            values["celery.task.traceback"] = att.traceback
    fields = dict(
        name=f"run {rec.name or 'unknown'}",
        context=context_of(rec, att),
        parent=parent_context(rec, parent),
        resource=settings.resource,
        attributes=attrs,
        events=events,
        kind=SpanKind.CONSUMER,
        status=status,
        start_time=_ns(start),
        end_time=_ns(max(end, start)),
        instrumentation_scope=SCOPE,
    )
    return Draft(fields, values, settings)


def _state_events(att: Attempt, start: float, end: float) -> list[Event]:
    stamps = {
        "PENDING": att.t_sent,
        "RECEIVED": att.t_received,
        "STARTED": att.t_started,
    }
    out = []
    for state in KNOWN:
        bit = BIT[state]
        if not att.reached & bit:
            continue
        ts = stamps.get(state, att.t_ended if state == att.outcome else None)
        inferred = bool(att.inferred & bit)
        if ts is None:
            ts = start if state == "RECEIVED" else end
        attrs = {"celery.inferred": True} if inferred else {}
        out.append(Event(EVENT_NAMES[state], attrs, _ns(ts)))
    for state in sorted(att.custom or ()):
        out.append(Event(f"celery.task.{state.lower()}", {}, _ns(end)))
    return out
