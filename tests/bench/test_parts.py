"""The benchmark's parts that need no broker: OTLP sink, scraper, profile summary,
statistics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder, gzip_accepted

from clearly_exporter.server import HttpServer
from tests.bench.loader import BENCH, bench_module

otlp_sink = bench_module("otlp_sink")
hotspots = bench_module("hotspots")
live = bench_module("live")
scraper = bench_module("scraper")


def request(*spans_per_scope: int) -> trace_service_pb2.ExportTraceServiceRequest:
    rs = trace_pb2.ResourceSpans(
        scope_spans=[
            trace_pb2.ScopeSpans(spans=[trace_pb2.Span(name=f"s{i}") for i in range(n)])
            for n in spans_per_scope
        ]
    )
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[rs, rs])


def test_the_sink_counts_every_span_of_every_request():
    server, port, service = otlp_sink.serve("127.0.0.1", 0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            stub.Export(request(3, 2), timeout=10)
            stub.Export(request(1), timeout=10)
        spans, requests, last = service.line().split()
        assert (int(spans), int(requests)) == (2 * 5 + 2 * 1, 2)
        assert float(last) > 0
    finally:
        server.stop(0)


def test_the_sink_process_answers_the_exporters_own_client():
    """The real path: the OpenTelemetry SDK's OTLP/gRPC exporter, the sink in a process."""
    sink = subprocess.Popen(
        [sys.executable, str(BENCH / "otlp_sink.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        said = sink.stdout.readline().split()
        assert said[0] == "listening"
        provider = TracerProvider()
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{said[1]}", insecure=True)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("bench-test")
        for i in range(3):
            with tracer.start_as_current_span(f"run task {i}"):
                pass
        provider.shutdown()
        sink.stdin.write("\n")
        sink.stdin.flush()
        spans, requests, _ = sink.stdout.readline().split()
        assert (int(spans), int(requests)) == (3, 3)
    finally:
        sink.stdin.close()
        sink.wait(10)
    assert sink.returncode == 0


RAW = """\
thread (11): clearly-exporter-source;Thread._bootstrap (threading.py:990);EventSource.run (clearly_exporter/source.py:90);Engine.ingest (clearly_exporter/engine/core.py:140) 6
thread (11): clearly-exporter-source;Thread._bootstrap (threading.py:990);EventSource.run (clearly_exporter/source.py:90) 2
thread (12): clearly-span-shipper;Thread._bootstrap (threading.py:990);encode_spans (trace_encoder/__init__.py:40) 2
"""  # noqa: E501


class Wide:
    """A collector of 5,000 series."""

    def collect(self):
        family = GaugeMetricFamily("wide", "wide", labels=["l"])
        for i in range(5_000):
            family.add_metric([f"{i:06d}"], i)
        yield family

    def describe(self):
        return []


def scraped_sizes(port: int, *flags: str) -> list[int]:
    """Three scrapes by bench/scraper.py: the sizes it reports. Its stdin stays open
    meanwhile: closed, it would stop."""
    argv = [sys.executable, str(BENCH / "scraper.py"), *flags]
    argv += [f"http://127.0.0.1:{port}/metrics", "0", "3"]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as run:
        out = run.stdout.read()  # type: ignore[union-attr]
    assert run.wait(60) == 0
    lines = [line.split() for line in out.splitlines()]
    assert len(lines) == 3 and all(float(seconds) > 0 for seconds, _ in lines)
    return [int(size) for _, size in lines]


def test_the_scraper_asks_as_prometheus_only_when_told():
    """Plain, the text format as sent; as Prometheus, OpenMetrics gzipped, far fewer bytes."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Wide())
    server = HttpServer("127.0.0.1", 0, registry, lambda: None)
    server.start()
    try:
        plain = scraped_sizes(server.port)
        packed = scraped_sizes(server.port, "--as-prometheus")
    finally:
        server.stop()
    assert len(set(plain)) == 1 and plain[0] > 100_000
    assert max(packed) * 3 < plain[0]
    _, content_type = choose_encoder(scraper.PROMETHEUS["Accept"])
    assert content_type.startswith("application/openmetrics-text")
    assert gzip_accepted(scraper.PROMETHEUS["Accept-Encoding"])


def test_a_profile_is_summarised_by_thread_own_and_inclusive_time(tmp_path: Path):
    raw = tmp_path / "raw.txt"
    raw.write_text(RAW)
    profile = hotspots.read(raw)
    assert profile.samples == 10
    assert profile.threads == {"clearly-exporter-source": 8, "clearly-span-shipper": 2}
    ingest = "Engine.ingest (clearly_exporter/engine/core.py)"
    run = "EventSource.run (clearly_exporter/source.py)"
    assert profile.own[ingest] == 6 and profile.own[run] == 2
    assert profile.inclusive == {run: 8, ingest: 6}
    packages = {"clearly_exporter/engine": 6, "clearly_exporter": 2, "trace_encoder": 2}
    assert profile.packages == packages
    lines = hotspots.summary(profile, rate=100, top=2)
    assert "clearly-exporter-source 80%" in lines[0]
    assert lines[1] == (
        "own time by package: clearly_exporter/engine 60%, clearly_exporter 20%, trace_encoder 20%"
    )
    assert lines[3] == f"   60.0%  {ingest}  [clearly-exporter-source]"


def test_percentiles_are_nearest_rank_and_the_slope_is_least_squares():
    values = [i / 1000 for i in range(1, 101)]
    assert live.percentile(values, 99) == pytest.approx(0.099)
    assert live.percentile(values[:50], 99) == pytest.approx(0.050)
    s = live.spread(values)
    assert (s["n"], s["p50"], s["max"]) == (100, pytest.approx(50.5), pytest.approx(100.0))
    assert live.fit([(0, 10), (1, 12), (2, 14)]) == pytest.approx(2.0)
