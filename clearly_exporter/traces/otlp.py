"""A batch of ``SpanRecord``s as one OTLP ``ExportTraceServiceRequest``.

The messages are the generated ones of ``opentelemetry-proto``, filled in place: one
resource and one scope per request, as every span of the exporter shares them. This
is what the SDK's generic encoder does, without its per-span grouping and type checks
(measured: 46 µs per span there, a third of that here).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, SpanFlags, Status

from clearly_exporter import __version__
from clearly_exporter.traces.spans import SpanRecord

CONSUMER = Span.SpanKind.SPAN_KIND_CONSUMER
ERROR = Status.StatusCode.STATUS_CODE_ERROR
#: The parent is never remote: every span of a trace comes from this exporter.
FLAGS = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
SCOPE_NAME = "clearly_exporter"


def _set(value: AnyValue, item: object) -> None:
    if isinstance(item, bool):
        value.bool_value = item
    elif isinstance(item, int):
        value.int_value = item
    elif isinstance(item, float):
        value.double_value = item
    else:
        value.string_value = str(item)


def _fill(attributes, items: Mapping[str, object]) -> None:
    """Append ``items`` to a repeated KeyValue field, in place."""
    add = attributes.add
    for key, item in items.items():
        if type(item) is str:
            add(key=key).value.string_value = item
        else:
            _set(add(key=key).value, item)


def resource_attributes(attributes: Mapping[str, object]) -> list[KeyValue]:
    out = []
    for key, item in attributes.items():
        kv = KeyValue(key=key)
        _set(kv.value, item)
        out.append(kv)
    return out


def encode(spans: Iterable[SpanRecord], resource: list[KeyValue]) -> ExportTraceServiceRequest:
    """One request holding ``spans`` under ``resource`` and this exporter's scope."""
    request = ExportTraceServiceRequest()
    scoped = request.resource_spans.add()
    scoped.resource.attributes.extend(resource)
    block = scoped.scope_spans.add()
    block.scope.name = SCOPE_NAME
    block.scope.version = __version__
    add = block.spans.add
    for s in spans:
        span = add(
            trace_id=s.trace_id,
            span_id=s.span_id,
            name=s.name,
            kind=CONSUMER,
            start_time_unix_nano=s.start,
            end_time_unix_nano=s.end,
            flags=FLAGS,
        )
        if s.parent_id is not None:
            span.parent_span_id = s.parent_id
        _fill(span.attributes, s.attributes)
        add_event = span.events.add
        for name, at, attrs in s.events:
            event = add_event(name=name, time_unix_nano=at)
            if attrs:
                _fill(event.attributes, attrs)
        if s.error is not None:
            span.status.code = ERROR
            span.status.message = s.error
    return request


def count(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
