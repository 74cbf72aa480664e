"""Sending a ready OTLP request through the SDK's OTLP exporters.

The SDK's exporters bring what must not be rewritten here (TLS, headers, compression,
retries with backoff, the ``OTEL_EXPORTER_OTLP_*`` variables) but encode SDK span
objects, which costs more than everything else the exporter does per task. These thin
subclasses take the request ``otlp.encode`` built instead; they rely on the SDK's
internals, hence the pinned ``opentelemetry-exporter-otlp`` range.
"""

from __future__ import annotations

from typing import Protocol

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult

from clearly_exporter.traces.encoding import count


class RequestExporter(Protocol):
    def send(self, request: ExportTraceServiceRequest) -> bool:
        """Export ``request``; True when the collector accepted it."""

    def shutdown(self) -> None:
        """Release the connection."""


class GrpcRequestExporter(GrpcSpanExporter):
    """OTLP/gRPC; the exporter mixin's translation hook receives the request as is."""

    def _translate_data(self, data: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
        return data

    def _count_data(self, data: ExportTraceServiceRequest) -> int:
        return count(data)

    def send(self, request: ExportTraceServiceRequest) -> bool:
        return self._export(request) is SpanExportResult.SUCCESS


class HttpRequestExporter(HttpSpanExporter):
    """OTLP/HTTP with protobuf bodies, through the SDK's HTTP client (retries included)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if not callable(getattr(getattr(self, "_client", None), "export", None)):
            raise RuntimeError(
                "this opentelemetry-exporter-otlp-proto-http has no request client; "
                "install the version pyproject.toml asks for"
            )

    def send(self, request: ExportTraceServiceRequest) -> bool:
        return self._client.export(request.SerializePartialToString()).success


def make_exporter(
    protocol: str,
    endpoint: str,
    headers: dict[str, str] | None,
    insecure: bool | None,
    timeout: float,
) -> RequestExporter:
    """The exporter for ``protocol``; the SDK also reads ``OTEL_EXPORTER_OTLP_*``."""
    if protocol == "grpc":
        return GrpcRequestExporter(
            endpoint=endpoint, insecure=insecure, headers=headers, timeout=timeout
        )
    endpoint = endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    return HttpRequestExporter(endpoint=endpoint, headers=headers, timeout=timeout)
