"""``traces.encoding``: the request it builds decodes as the SDK's encoder would encode it."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from clearly_exporter import __version__
from clearly_exporter.traces.encoding import Encoder
from clearly_exporter.traces.spans import SpanRecord
from tests.otlp_receiver import Receiver, Span

RESOURCE = Resource.create({"service.name": "celery", "service.version": "1"})
SHARED = {"celery.task.name": "app.add", "celery.queue": "q1", "messaging.system": "redis"}


def record(n: int, error: str | None = None, parent: bytes | None = None) -> SpanRecord:
    return SpanRecord(
        trace_id=bytes(range(16)),
        span_id=n.to_bytes(8, "big"),
        parent_id=parent,
        name="run app.add",
        start=1_000 + n,
        end=2_000 + n,
        shared=dict(SHARED),
        attributes={"celery.task.id": f"t{n}", "celery.task.retries": n, "ok": True, "f": 0.5},
        events=[("celery.task.received", 1_000, {}), ("celery.task.started", 1_500, {"i": True})],
        error=error,
    )


def sdk_span(r: SpanRecord) -> ReadableSpan:
    """The same span as the SDK's objects, for its own encoder."""
    sampled = TraceFlags(TraceFlags.SAMPLED)
    trace = int.from_bytes(r.trace_id, "big")
    parent = r.parent_id and SpanContext(trace, int.from_bytes(r.parent_id, "big"), False, sampled)
    return ReadableSpan(
        name=r.name,
        context=SpanContext(trace, int.from_bytes(r.span_id, "big"), False, sampled),
        parent=parent or None,
        resource=RESOURCE,
        attributes={**r.shared, **r.attributes},
        events=[Event(name, attrs, at) for name, at, attrs in r.events],
        kind=SpanKind.CONSUMER,
        status=Status(StatusCode.ERROR, r.error) if r.error else Status(StatusCode.UNSET),
        start_time=r.start,
        end_time=r.end,
        instrumentation_scope=InstrumentationScope("clearly_exporter", __version__),
    )


def decoded(body: bytes) -> list[Span]:
    receiver = Receiver()
    receiver.accept(body)
    return receiver.snapshot()


def test_requests_decode_like_the_sdk_encoders_own():
    records = [record(1), record(2, error="KeyError('k')", parent=(7).to_bytes(8, "big"))]
    ours = decoded(Encoder(RESOURCE.attributes).encode(records).SerializeToString())
    sdk = decoded(encode_spans([sdk_span(r) for r in records]).SerializeToString())
    assert ours == sdk
    assert ours[1].status == 2 and ours[1].parent_id == "0000000000000007"
    assert ours[0].attributes["celery.task.retries"] == 1 and ours[0].attributes["f"] == 0.5


def test_spans_sharing_a_part_keep_their_own_attributes_and_the_cache_is_bounded():
    encoder = Encoder(RESOURCE.attributes, max_shared=2)
    records = [record(i) for i in range(4)]
    for i, r in enumerate(records):
        r.shared["celery.worker"] = f"celery@w{i % 3}"
    spans = decoded(encoder.encode(records).SerializeToString())
    assert [s.attributes["celery.worker"] for s in spans] == [
        "celery@w0",
        "celery@w1",
        "celery@w2",
        "celery@w0",
    ]
    assert [s.attributes["celery.task.id"] for s in spans] == ["t0", "t1", "t2", "t3"]
    assert all(s.name == "run app.add" and s.kind == 5 for s in spans)
    assert len(encoder._shared) <= 2


def test_a_lone_surrogate_spoils_neither_its_span_nor_the_batch():
    """Valid in a Python string (a result backend's JSON can hold one), not in UTF-8."""
    records = [record(i) for i in range(3)]
    records[1].attributes["celery.task.result"] = "ok \ud800 ok"
    records[1].events.append(("celery.task.retried", 1_700, {"why": "\udfff"}))
    records[1].error = "E('\ud83d')"
    spans = decoded(Encoder(RESOURCE.attributes).encode(records).SerializeToString())
    assert [s.attributes["celery.task.id"] for s in spans] == ["t0", "t1", "t2"]
    assert spans[1].attributes["celery.task.result"] == "ok \ufffd ok"
    assert spans[1].status == 2
    assert (
        spans[0].attributes
        == decoded(Encoder(RESOURCE.attributes).encode([record(0)]).SerializeToString())[
            0
        ].attributes
    )
