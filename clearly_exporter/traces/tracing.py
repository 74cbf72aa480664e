"""Tracing as one piece the daemon starts and stops: exporter, shipper, fetcher, sink."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from opentelemetry.sdk.resources import Resource

from clearly_exporter import __version__
from clearly_exporter.engine import Engine
from clearly_exporter.traces.encoding import Encoder
from clearly_exporter.traces.exporters import RequestExporter, make_exporter
from clearly_exporter.traces.redact import DEFAULT_PATTERNS, Redactor
from clearly_exporter.traces.results import ResultFetcher
from clearly_exporter.traces.shipper import SpanShipper
from clearly_exporter.traces.sink import TraceSink
from clearly_exporter.traces.spans import SpanSettings

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
        if exporter is None:
            exporter = make_exporter(
                settings.protocol,
                settings.endpoint,
                settings.headers or None,
                settings.insecure,
                settings.timeout,
            )
        self.shipper = SpanShipper(exporter, Encoder(resource.attributes), settings.max_queue)
        self.fetcher = ResultFetcher(settings.backend) if settings.backend else None
        self.sink = TraceSink(
            engine, span_settings, self.shipper, self.fetcher, span_max_age=settings.span_max_age
        )
        self.engine = engine

    def start(self) -> None:
        self.shipper.start()

    def stop(self, seconds: float) -> None:
        """Export what ended, then flush the queue within ``seconds``."""
        deadline = time.monotonic() + seconds
        with self.engine.lock:
            self.sink.flush()
        if self.fetcher is not None:
            self.fetcher.close()
        self.shipper.stop(deadline)
