"""Tracing as one piece the daemon starts and stops: the sink and where spans are made.

Spans are made in a process of their own (``process``); an exporter given in code
(tests, embedding) makes them on the consumer thread instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from opentelemetry.sdk.resources import Resource

from clearly_exporter import __version__, logs
from clearly_exporter.engine import Engine
from clearly_exporter.results import ResultFetcher
from clearly_exporter.traces.encoding import Encoder
from clearly_exporter.traces.exporters import RequestExporter, make_exporter
from clearly_exporter.traces.process import ChildConfig, SpanProcess
from clearly_exporter.traces.redact import DEFAULT_PATTERNS, Redactor
from clearly_exporter.traces.shipper import SpanShipper
from clearly_exporter.traces.sink import TraceSink
from clearly_exporter.traces.spans import SpanSettings
from clearly_exporter.traces.worker import LocalSpans, SpanQueue, SpanWorker

PROTOCOLS = ("grpc", "http/protobuf")


@dataclass(frozen=True)
class TracingSettings:
    endpoint: str
    protocol: str = "grpc"
    headers: dict[str, str] = field(default_factory=dict)
    insecure: bool | None = None
    timeout: float = 10.0
    service_name: str = "celery"
    backend: str | None = None
    redact: tuple[str, ...] = DEFAULT_PATTERNS
    with_args: bool = True
    max_attribute_length: int = 65536
    span_max_age: float = 3600.0
    max_queue: int = 20_000


class TracingConfigError(ValueError):
    """A tracing setting the OTLP exporter refuses: a user error, said in one line."""


def check(settings: TracingSettings) -> None:
    """Make an exporter once and discard it: the span process makes its own, and a bad
    setting must fail at start, in one line, not in the child."""
    try:
        make_exporter(
            settings.protocol,
            settings.endpoint,
            settings.headers or None,
            settings.insecure,
            settings.timeout,
        ).shutdown()
    except Exception as exc:
        raise TracingConfigError(
            f"--otlp-endpoint {settings.endpoint!r} cannot be used: {exc}"
        ) from None


class Tracing:
    """Owns the span pipeline of one daemon."""

    def __init__(
        self,
        settings: TracingSettings,
        engine: Engine,
        messaging_system: str,
        exporter: RequestExporter | None = None,
    ) -> None:
        self.settings = settings
        resource = Resource.create(
            {
                "service.name": settings.service_name,
                "telemetry.sdk.name": "clearly-exporter",
                "service.version": __version__,
            }
        )
        span_settings = SpanSettings(
            messaging_system=messaging_system,
            default_queue=engine.config.default_queue,
            redact=Redactor(settings.redact),
            with_args=settings.with_args,
            max_attribute_length=settings.max_attribute_length,
        )
        self.spans: SpanQueue
        if exporter is None:
            self.spans = SpanProcess(
                ChildConfig(
                    protocol=settings.protocol,
                    endpoint=settings.endpoint,
                    headers=settings.headers or None,
                    insecure=settings.insecure,
                    timeout=settings.timeout,
                    backend=settings.backend,
                    max_queue=settings.max_queue,
                    spans=span_settings,
                    resource=dict(resource.attributes),
                    logs=logs.applied(),
                )
            )
        else:
            fetcher = ResultFetcher(settings.backend) if settings.backend else None
            shipper = SpanShipper(exporter, Encoder(resource.attributes), settings.max_queue)
            self.spans = LocalSpans(SpanWorker(span_settings, shipper, fetcher))
        self.sink = TraceSink(
            engine,
            self.spans,
            span_max_age=settings.span_max_age,
            max_waiting=settings.max_queue,
        )
        self.engine = engine

    def start(self) -> None:
        self.spans.start()

    def stop(self, seconds: float) -> None:
        """Export what ended (waiting for room in a full queue for half of ``seconds``),
        then flush the queue within ``seconds``."""
        now = time.monotonic()
        deadline = now + seconds
        with self.engine.lock:  # no tick (a consumer not stopped yet) may send meanwhile
            self.sink.flush(now + seconds / 2)
            self.spans.stop(deadline)
