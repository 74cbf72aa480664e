"""An OTLP/gRPC trace sink for the benchmark: it only counts the spans it is sent.

A process of its own, so that receiving spans costs the measured exporter nothing but
its own sending. Each request is parsed by protobuf (upb, in C) and its spans counted;
nothing else is kept.

Protocol with the runner, as bench/bare_receiver.py's: the line ``listening <port>``
on stdout once the server accepts; then, for every line read on stdin, the line
``<spans> <requests> <monotonic time of the last request>`` (0 before any). End of
stdin ends the process. CLOCK_MONOTONIC is system-wide on Linux, so the runner can
compare that time with its own ``time.monotonic()``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

#: An exporter's batch of 512 large spans stays far below this.
MAX_MESSAGE = 64 * 1024 * 1024


class CountingService(trace_service_pb2_grpc.TraceServiceServicer):
    """Counts spans and requests; remembers when the last request came."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans = 0
        self.requests = 0
        self.last = 0.0

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        """Count and forget: the sink must cost the exporter nothing but its sending."""
        spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        now = time.monotonic()
        with self.lock:
            self.spans += spans
            self.requests += 1
            self.last = now
        return trace_service_pb2.ExportTraceServiceResponse()

    def line(self) -> str:
        with self.lock:
            return f"{self.spans} {self.requests} {self.last:.6f}"


def serve(host: str, port: int) -> tuple[grpc.Server, int, CountingService]:
    """Start the server; return it, the port it bound and its service."""
    service = CountingService()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE)],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(service, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server, bound, service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    args = parser.parse_args(argv)
    server, port, service = serve(args.host, args.port)
    print(f"listening {port}", flush=True)
    for _ in sys.stdin:
        print(service.line(), flush=True)
    server.stop(0)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
