"""The custom collector: renders an engine snapshot as Prometheus metric families.

Names, types and labels are the contract of design §4; dashboards and alerts use them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from operator import attrgetter

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from clearly_exporter import __version__
from clearly_exporter.engine import BUILD as ENGINE_BUILD
from clearly_exporter.engine import Engine, Snapshot
from clearly_exporter.engine.histogram import (
    DURATION_BUCKETS,
    LAG_BUCKETS,
    Frozen,
    Table,
    cumulative,
)
from clearly_exporter.engine.task_metrics import TaskMetrics
from clearly_exporter.metrics.exposition import CachedFamily, Caches, ScalarFamily
from clearly_exporter.metrics.queues import Probing, QueueProbe
from clearly_exporter.metrics.rows import AgeFamily, CountFamily, HistogramFamily, RowsCache
from clearly_exporter.results import ResultFetcher
from clearly_exporter.source import BrokerHealth
from clearly_exporter.traces.tracing import Tracing


def _histogram(
    name: str, doc: str, bounds: tuple[float, ...], hist: Frozen
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[])
    family.add_metric([], cumulative(bounds, hist), hist[1])
    return family


def _by_label(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    """A counter with one label, a sample per value."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class EngineCollector(Collector):
    """Everything on ``/metrics``: tasks, workers, queues and the exporter's own health."""

    def __init__(
        self,
        engine: Engine,
        health: BrokerHealth,
        probe: QueueProbe | None,
        watch_queues: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
        tracing: Tracing | None = None,
        view_fetcher: ResultFetcher | None = None,
    ) -> None:
        self.engine = engine
        self.tracing = tracing
        #: The task view's result fetches, counted with the spans' ones.
        self.view_fetcher = view_fetcher
        self.health = health
        self.probe = probe
        self.watch_queues = watch_queues
        self.clock = clock
        self.last_duration = 0.0
        #: Per family, its series as last rendered: what a scrape reuses.
        self._rendered = Caches()

    def describe(self) -> list[Metric]:
        """Nothing up front: a describe would run a full collect at registration."""
        return []

    def collect(self) -> Iterator[Metric | CachedFamily]:
        started = time.perf_counter()
        now = self.clock()
        probe = self.probe
        # The task and worker families are yielded holding the engine lock: rendered in
        # this process, they are rendered then (for the render process, their changes are
        # found then), and the consumer waits on the lock instead of splitting the GIL
        # with the scrape for seconds while a backlog drains.
        with self.engine.lock:
            snap = self.engine.snapshot(now)
            # Started now, the queue probe's round trips overlap the rendering.
            queues = set(self.watch_queues) | snap.queues
            probing = probe.start(sorted(queues)) if probe else None
            yield from self._tasks(self.engine.metrics, now)
            yield from self._workers(snap)
        yield from self._exporter(snap)
        yield from self._tracing()
        yield from self._fetches()
        # Last: the families before are rendered while the probe finishes.
        if probe is not None and probing is not None:
            yield from self._queues(probe, probing)
        self.last_duration = time.perf_counter() - started

    def _family(
        self, name: str, doc: str, typ: str, labels: tuple[str, ...], rows: dict
    ) -> ScalarFamily:
        caches = self._rendered.of(name)
        return ScalarFamily(name, doc, typ, labels, list(rows), list(rows.values()), caches)

    def _histogram_family(
        self, name: str, doc: str, labels: tuple[str, ...], table: Table, exemplars: bool = False
    ) -> HistogramFamily:
        caches = self._rendered.of(name, exemplars, RowsCache)
        family = HistogramFamily(
            name,
            doc,
            labels,
            table.keys,
            table.slab,
            caches,
            DURATION_BUCKETS,
            exemplars,
            table.exemplars,
        )
        family.forced = frozenset(table.changed)
        family.generation = table.generation
        return family

    def _tasks(self, t: TaskMetrics, now: float) -> Iterator[CachedFamily]:
        """Each family taken from the engine as it is yielded (the engine lock held):
        the render process starts on one while the next is taken."""
        labels = ("name", "queue")
        rows = t.rows()
        yield CountFamily(
            "celery_tasks",
            "Tasks that reached each state.",
            "counter",
            (*labels, "state"),
            rows.keys,
            rows.slab,
            self._rendered.of("celery_tasks", kind=RowsCache),
        )
        yield self._family(
            "celery_task_failures",
            "Task failures by exception class.",
            "counter",
            (*labels, "exception"),
            t.failures,
        )
        yield self._histogram_family(
            "celery_task_runtime_seconds",
            "Time from started to the end of an attempt, by outcome.",
            (*labels, "state"),
            t.runtime.table(),
            exemplars=True,
        )
        yield self._histogram_family(
            "celery_task_queue_wait_seconds",
            "Time from sent to received by a worker (ETA/countdown tasks excluded).",
            labels,
            t.queue_wait.table(),
        )
        yield self._histogram_family(
            "celery_task_prefetch_wait_seconds",
            "Time from received to started on the worker (ETA tasks excluded).",
            labels,
            t.prefetch_wait.table(),
        )
        in_progress = t.in_progress()
        yield CountFamily(
            "celery_tasks_in_progress",
            "Tasks now in each in-progress state.",
            "gauge",
            (*labels, "state"),
            in_progress.keys,
            in_progress.counts,
            self._rendered.of("celery_tasks_in_progress", kind=RowsCache),
        )
        yield AgeFamily(
            "celery_task_oldest_in_progress_age_seconds",
            "Age of the oldest task in each in-progress state (0 when none).",
            (*labels, "state"),
            in_progress.keys,
            in_progress.since,
            self._rendered.of("celery_task_oldest_in_progress_age_seconds", kind=RowsCache),
            now,
        )

    def _workers(self, snap: Snapshot) -> Iterator[CachedFamily]:
        up, beat, active, processed, load, interval, info = ({} for _ in range(7))
        # By name: the registry keeps them least recently seen first, an order every
        # heartbeat changes, and a family whose keys move is sent and rendered anew.
        for w in sorted(snap.workers, key=attrgetter("hostname")):
            host = (w.hostname,)
            up[host] = 1 if w.up else 0
            if w.last_heartbeat is not None:
                beat[host] = w.last_heartbeat
            active[host] = w.active
            processed[host] = w.processed
            if w.loadavg is not None:
                for period, value in zip(("1m", "5m", "15m"), w.loadavg, strict=True):
                    load[(w.hostname, period)] = value
            interval[host] = w.freq
            info[(w.hostname, w.sw_ident, w.sw_ver, w.sw_sys, w.pid)] = 1
        worker = ("worker",)
        yield self._family(
            "celery_worker_up", "1 while the worker heartbeats.", "gauge", worker, up
        )
        yield self._family(
            "celery_worker_last_heartbeat_timestamp_seconds",
            "When the exporter received the worker's last heartbeat (its own clock).",
            "gauge",
            worker,
            beat,
        )
        yield self._family(
            "celery_worker_tasks_active", "Tasks the worker is running.", "gauge", worker, active
        )
        yield self._family(
            "celery_worker_processed_tasks",
            "Tasks the worker processed since it started (from its heartbeats).",
            "gauge",
            worker,
            processed,
        )
        yield self._family(
            "celery_worker_load_average",
            "Load average of the worker's host.",
            "gauge",
            ("worker", "period"),
            load,
        )
        yield self._family(
            "celery_worker_heartbeat_interval_seconds",
            "The worker's own heartbeat interval.",
            "gauge",
            worker,
            interval,
        )
        last = self._family(
            "celery_worker",
            "Worker software and process.",
            "info",
            ("worker", "sw_ident", "sw_ver", "sw_sys", "pid"),
            info,
        )
        last.final = True
        yield last

    def _queues(self, probe: QueueProbe, probing: Probing) -> Iterator[Metric]:
        depths = probe.result(probing)
        length = GaugeMetricFamily(
            "celery_queue_length", "Messages waiting in the queue.", labels=["queue"]
        )
        consumers = GaugeMetricFamily(
            "celery_queue_consumers", "Consumers of the queue (AMQP).", labels=["queue"]
        )
        for depth in depths or ():
            length.add_metric([depth.name], depth.length)
            if depth.consumers is not None:
                consumers.add_metric([depth.name], depth.consumers)
        yield length
        yield consumers
        yield CounterMetricFamily(
            "clearly_exporter_broker_scrape_errors",
            "Scrapes whose queue depth the broker did not give.",
            value=probe.errors,
        )

    def _tracing(self) -> Iterator[Metric]:
        if self.tracing is None:
            return
        spans = self.tracing.spans
        yield CounterMetricFamily(
            "clearly_exporter_spans_exported",
            "Spans the collector accepted.",
            value=spans.exported,
        )
        yield _by_label(
            "clearly_exporter_spans_dropped",
            "Spans that never reached the collector, by reason.",
            "reason",
            spans.dropped,
        )

    def _fetches(self) -> Iterator[Metric]:
        if self.tracing is None and self.view_fetcher is None:
            return
        outcomes: Counter[str] = Counter()
        if self.tracing is not None:
            outcomes.update(self.tracing.spans.outcomes or {})
        if self.view_fetcher is not None:
            outcomes.update(self.view_fetcher.outcomes)
        yield _by_label(
            "clearly_exporter_result_fetches",
            "Result-backend fetches of values Celery cut (spans and task views), by outcome.",
            "outcome",
            dict(outcomes),
        )

    def _exporter(self, snap: Snapshot) -> Iterator[Metric]:
        yield _by_label("clearly_exporter_events", "Events received, by type.", "type", snap.events)
        yield CounterMetricFamily(
            "clearly_exporter_events_late",
            "Events for a state their attempt had already passed (merged, never moved back).",
            value=snap.events_late,
        )
        yield CounterMetricFamily(
            "clearly_exporter_events_lost",
            "Task-started events never received, estimated from workers' processed counts "
            "(lost in a gap, or never sent by a worker without -E).",
            value=snap.events_lost,
        )
        yield CounterMetricFamily(
            "clearly_exporter_events_invalid",
            "Events that could not be decoded or lacked required fields; skipped.",
            value=snap.events_invalid,
        )
        yield _by_label(
            "clearly_exporter_transitions_inferred",
            "Task states generated because their own event was missing or late.",
            "state",
            snap.inferred,
        )
        yield _histogram(
            "clearly_exporter_event_lag_seconds",
            "Receive time minus event time.",
            LAG_BUCKETS,
            snap.event_lag,
        )
        yield GaugeMetricFamily(
            "clearly_exporter_broker_up",
            "1 while the event consumer is connected to the broker.",
            value=1 if self.health.connected else 0,
        )
        yield CounterMetricFamily(
            "clearly_exporter_broker_reconnects",
            "Times the event consumer reconnected after losing the broker.",
            value=self.health.reconnects,
        )
        yield GaugeMetricFamily(
            "clearly_exporter_tasks_tracked", "Tasks held in memory.", value=snap.tasks_tracked
        )
        yield CounterMetricFamily(
            "clearly_exporter_tasks_evicted",
            "Tasks dropped from memory to stay within --max-tasks.",
            value=snap.tasks_evicted,
        )
        yield GaugeMetricFamily(
            "clearly_exporter_workers_tracked", "Workers held in memory.", value=len(snap.workers)
        )
        yield GaugeMetricFamily(
            "clearly_exporter_scrape_duration_seconds",
            "Time the previous scrape took to collect.",
            value=self.last_duration,
        )
        if snap.last_event is not None:
            yield GaugeMetricFamily(
                "clearly_exporter_last_event_timestamp_seconds",
                "When the last event was received.",
                value=snap.last_event,
            )
        yield InfoMetricFamily(
            "clearly_exporter_build",
            "The exporter's version, and whether its engine is compiled.",
            value={"version": __version__, "engine": ENGINE_BUILD},
        )
