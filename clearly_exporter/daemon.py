"""Wires the pieces of ``clearly-exporter run`` together and runs them until a signal."""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from clearly_exporter.api.queries import Queries
from clearly_exporter.api.routes import Api
from clearly_exporter.api.stream import StreamHub
from clearly_exporter.brokers import connection_config, messaging_system, redact_url
from clearly_exporter.engine import Engine, EngineConfig
from clearly_exporter.gcpolicy import FreezingGc
from clearly_exporter.metrics.collector import EngineCollector
from clearly_exporter.metrics.queues import QueueProbe
from clearly_exporter.metrics.renderer import RenderProcess
from clearly_exporter.results import ResultFetcher
from clearly_exporter.server import HttpServer
from clearly_exporter.source import EventSource, SourceConfig, queue_lifetimes
from clearly_exporter.traces.ids import trace_id_hex
from clearly_exporter.traces.redact import DEFAULT_PATTERNS, Redactor
from clearly_exporter.traces.tracing import Tracing, TracingSettings
from clearly_exporter.webconfig import WebConfig

log = logging.getLogger(__name__)

#: How long stopping may take before the process exits anyway.
STOP_DEADLINE = 8.0


@dataclass(frozen=True)
class Settings:
    broker: str
    host: str = "0.0.0.0"
    port: int = 9808
    queues: tuple[str, ...] = ()
    transport_options: dict | None = None
    ssl: dict | None = None
    enable_events_every: float | None = None
    event_queue: str | None = None
    #: None: the default for the kind of queue (see ``source.queue_lifetimes``).
    event_queue_ttl: float | None = None
    event_queue_expires: float | None = None
    engine: EngineConfig = field(default_factory=EngineConfig)
    tracing: TracingSettings | None = None
    #: Result backend URL, to complete the API's task view (spans have theirs in
    #: ``tracing``).
    backend: str | None = None
    #: Redaction of values the API and its stream show (the spans' own, from ``--redact``).
    redact: tuple[str, ...] = DEFAULT_PATTERNS
    #: Serve ``/api`` (queries and the live stream); off, no stream hub exists at all.
    api: bool = True
    #: TLS and basic auth of the HTTP server (``--web-config``); None: plain, open HTTP.
    web: WebConfig | None = None


class Daemon:
    """The running exporter: engine, consumer thread, queue probe and HTTP server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url, options = connection_config(settings.broker, settings.transport_options)
        self.engine = Engine(
            settings.engine, trace_id_hex if settings.tracing else None, shared=True
        )
        self.engine.on_tick(FreezingGc().tick)
        self.tracing = None
        if settings.tracing is not None:
            system = messaging_system(settings.broker)
            self.tracing = Tracing(settings.tracing, self.engine, system)
        self.source = EventSource(
            SourceConfig(
                url,
                options,
                settings.ssl,
                settings.enable_events_every,
                settings.event_queue,
                *queue_lifetimes(
                    settings.event_queue, settings.event_queue_ttl, settings.event_queue_expires
                ),
            ),
            self.engine,
        )
        self.probe = QueueProbe(url, options, settings.ssl)
        self.registry = CollectorRegistry(auto_describe=False)
        #: Completes the task view's cut values (the span process has its own fetcher).
        self.view_fetcher = (
            ResultFetcher(settings.backend) if settings.backend and settings.api else None
        )
        if settings.backend and not settings.api and settings.tracing is None:
            log.warning("--backend is unused: it completes the API's task view and spans")
        self.collector = EngineCollector(
            self.engine,
            self.source.health,
            self.probe,
            settings.queues,
            tracing=self.tracing,
            view_fetcher=self.view_fetcher,
        )
        self.registry.register(self.collector)
        self.renderer = RenderProcess()
        self.hub: StreamHub | None = None
        api = None
        if settings.api:
            redactor = Redactor(settings.redact)
            self.hub = StreamHub(self.engine, redactor)
            queries = Queries(self.engine, redactor, problem=self._problem)
            api = Api(queries, self.hub, self.view_fetcher)
        self.server = HttpServer(
            settings.host,
            settings.port,
            self.registry,
            self._problem,
            api=api,
            web_config=settings.web,
            renderer=self.renderer,
        )

    def _problem(self) -> str | None:
        health = self.source.health
        return None if health.connected else f"broker not connected: {health.reason}"

    def start(self) -> None:
        """Bind the server first (a port in use is a user error), then consume."""
        self.server.start()
        self.renderer.start()
        if self.tracing is not None:
            self.tracing.start()
        self.source.start()
        log.info(
            "clearly-exporter on %s://%s:%d/metrics, broker %s",
            self.server.scheme,
            self.settings.host,
            self.server.port,
            redact_url(self.settings.broker),
        )

    def stop(self) -> None:
        """Stop consuming, flush spans, stop serving: within ``STOP_DEADLINE`` in all."""
        self.source.stop()
        self.source.join(STOP_DEADLINE / 4)
        if self.tracing is not None:
            # Attempts whose task name had not come yet become spans too.
            with self.engine.lock:
                self.engine.settle(time.time())
            self.tracing.stop(STOP_DEADLINE / 2)
        if self.view_fetcher is not None:
            self.view_fetcher.close()  # a task view waiting on a fetch is answered now
        self.server.stop(STOP_DEADLINE / 8)
        self.renderer.stop(STOP_DEADLINE / 8)
        self.probe.close()


def run_until_signalled(daemon: Daemon) -> None:
    """Run until SIGINT or SIGTERM, then stop within the deadline."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    daemon.start()
    stop.wait()
    log.info("stopping")
    daemon.stop()
