"""Drain mode: the exporter, without and with tracing, against celery's bare ``EventReceiver``.

Every consumer is started and truly subscribed, then frozen (SIGSTOP); the storm is
published once, so Redis keeps a backlog of it for each. Then each in turn is thawed
(SIGCONT) with the machine to itself, and the time until it has accounted for every
event is taken; for the tracing exporter, until its OTLP sink also has every span (or
the exporter counts the missing ones dropped). See bench/README.md for the method.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
from hotspots import read, summary
from procs import (
    BareReceiver,
    BenchError,
    Consumer,
    CpuWatch,
    Exporter,
    OtlpSink,
    Profiler,
    TracedExporter,
    freeze,
    memory_kb,
    others_cores,
    parse_metrics,
    settle,
    subscribed,
    total,
    tree_memory_kb,
)
from storm import Storm, describe, publish

#: How often the drain watcher samples the consumer's CPU time.
SAMPLE = 0.005
#: Least time between two queries while a consumer looks idle but is not done.
QUERY_EVERY = 0.5
#: An idle consumer whose progress has not moved for this long has stalled.
STALL = 5.0
#: Other processes' load, in cores, above which a drain is flagged as measured on a busy machine.
SHARED = 0.25
PROFILE_RATE = 100
TARGETS = {Exporter.name: (0.5, 1.0), TracedExporter.name: (0.35, 0.5)}


@dataclass
class Spans:
    """What became of the tracing exporter's spans."""

    expected: int
    received: int
    exported: int
    dropped: dict[str, int]
    #: Seconds from the thaw to the last event's receipt (the exporter's own timestamp).
    events_seconds: float


@dataclass
class Result:
    """One consumer's drain."""

    consumer: str
    events: int
    expected: int
    seconds: float
    cpu_seconds: float
    peak_rss_kb: int
    rss_before_kb: int
    #: False if events are missing, or spans (counted dropped, or never accounted for).
    complete: bool
    #: Cores Redis kept busy meanwhile (it feeds the backlog), and all other processes.
    redis_cores: float = 0.0
    other_cores: float = 0.0
    #: CPU used by the consumer's helpers (the OTLP sink).
    helper_cpu_seconds: float = 0.0
    spans: Spans | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def drain(
    consumer: Consumer,
    expected: int,
    timeout: float,
    redis_pid: int,
    on_thaw: Callable[[], object] | None = None,
) -> Result:
    """Thaw the consumer and time it until it has consumed ``expected`` events and settled.

    The watcher never asks anything while the consumer works (a query would steal its
    CPU): it samples the consumer's CPU time every few ms, asks only once it has been
    idle for a moment, and dates the end at the last sample where it was still working,
    or when the consumer says its follow-up work ended (the sink's last span), if later.
    ``on_thaw`` runs right after the thaw (py-spy cannot attach to a stopped process).
    """
    rss_before = memory_kb(consumer.pid, "VmRSS")
    watch = CpuWatch(consumer.pid, redis_pid, consumer.helpers())
    start = watch.first
    os.kill(consumer.pid, signal.SIGCONT)
    if on_thaw is not None:
        on_thaw()
    last_query = 0.0
    seen: tuple[float, ...] = ()
    moved = start.t
    while True:
        time.sleep(SAMPLE)
        consumer.check_alive()
        watch.sample()
        now = watch.last.t
        if watch.idle() and now - last_query >= QUERY_EVERY:
            end, last_query = watch.last_busy, now
            n = consumer.count()
            done = n >= expected and consumer.settled()
            watch.forget()
            progress = (n, *consumer.progress())
            if done or (progress == seen and now - moved >= STALL):
                break
            if progress != seen:
                seen, moved = progress, now
        if now - start.t > timeout:
            raise BenchError(f"{consumer.name} did not finish within {timeout:.0f} s")
    finished = max(end.t, consumer.finished_at() or 0.0)
    redis_cores, other_cores = others_cores(start, end)
    return Result(
        consumer.name,
        n,
        expected,
        finished - start.t,
        (end.cpu - start.cpu) / 1e9,
        tree_memory_kb(consumer.pid, "VmHWM"),
        rss_before,
        complete=done,
        redis_cores=redis_cores,
        other_cores=other_cores,
        helper_cpu_seconds=(end.helpers - start.helpers) / 1e9,
    )


@dataclass
class Scrapes:
    """/metrics timed after the drain."""

    seconds: list[float] = field(default_factory=list)
    bytes: int = 0
    series: int = 0
    collect_seconds: float = 0.0


def time_scrapes(exporter: Exporter, count: int) -> Scrapes:
    """GET /metrics ``count`` times in a row, as a Prometheus server would, and time each."""
    out = Scrapes()
    for _ in range(count):
        started = time.perf_counter()
        status, body = exporter.get("/metrics")
        out.seconds.append(time.perf_counter() - started)
        if status != 200:
            raise BenchError(f"/metrics answered {status}")
        out.bytes = len(body)
        samples = parse_metrics(body.decode())
        out.series = len(samples)
        out.collect_seconds = total(samples, "clearly_exporter_scrape_duration_seconds")
    return out


def exporter_checks(exporter: Exporter, storm: Storm) -> list[str]:
    """What the exporter says it holds after the drain, against what the storm sent."""
    samples = exporter.metrics()
    lines = []
    by_type = {lab["type"]: int(v) for n, lab, v in samples if n == "clearly_exporter_events_total"}
    wrong = {t: (by_type.get(t, 0), n) for t, n in storm.counts.items() if by_type.get(t, 0) != n}
    lines.append(
        "events by type match the storm"
        if not wrong
        else "events by type DIFFER (exporter, storm): " + repr(wrong)
    )
    queues: dict[str, set[str]] = {}
    for n, lab, _ in samples:
        if n == "celery_tasks_total" and "name" in lab:
            queues.setdefault(lab["name"], set()).add(lab.get("queue", ""))

    def count(metric: str, /, **labels: str) -> int:
        return int(total(samples, metric, **labels))

    lines.append(
        f"tasks tracked {count('clearly_exporter_tasks_tracked')} of {storm.spec.tasks}, "
        f"evicted {count('clearly_exporter_tasks_evicted_total')}, "
        f"invalid events {count('clearly_exporter_events_invalid_total')}, "
        f"late events {count('clearly_exporter_events_late_total')}, "
        f"SUCCESS counted {count('celery_tasks_total', state='SUCCESS')}, "
        f"task names on /metrics {len(queues)} "
        f"(under more than one queue label: {sum(len(q) > 1 for q in queues.values())})"
    )
    return lines


def span_figures(exporter: TracedExporter, started_wall: float) -> Spans:
    """The sink's count against the exporter's, and when the last event was received."""
    samples = exporter.metrics()
    last_event = total(samples, "clearly_exporter_last_event_timestamp_seconds")
    return Spans(
        expected=exporter.spans,
        received=exporter.sink.state().spans,
        exported=int(total(samples, "clearly_exporter_spans_exported_total")),
        dropped={
            lab["reason"]: int(v)
            for n, lab, v in samples
            if n == "clearly_exporter_spans_dropped_total"
        },
        events_seconds=last_event - started_wall,
    )


class ThawProfiler:
    """py-spy on a consumer from right after its thaw: it cannot attach to a stopped one."""

    def __init__(self, pid: int, out: Path, nonblocking: bool) -> None:
        self.pid = pid
        self.out = out
        self.nonblocking = nonblocking
        self.profiler: Profiler | None = None

    def __call__(self) -> None:
        self.profiler = Profiler(self.pid, self.out, PROFILE_RATE, self.nonblocking)

    def stop(self) -> list[str]:
        """Stop py-spy; the summary of what it recorded."""
        if self.profiler is None:
            return ["py-spy never started"]
        out, counts = self.profiler.stop()
        return [f"py-spy: {counts}", *summary(read(out), PROFILE_RATE)]


@dataclass
class Outcome:
    """Everything one round measured."""

    results: dict[str, Result]
    order: list[str]
    scrapes: Scrapes
    checks: dict[str, list[str]]
    published_seconds: float
    backlog_mb: dict[str, float]
    profiles: dict[str, list[str]] = field(default_factory=dict)


def start_consumers(
    args: argparse.Namespace, r: redis.Redis, db: int, storm: Storm, workdir: Path
) -> list[Consumer]:
    """Start each consumer (and the sink), each waited for until Redis shows it subscribed."""
    max_tasks = args.max_tasks or max(storm.spec.tasks * 11 // 10, storm.spec.tasks + 1000)
    started: list[Consumer] = []
    sink = None
    try:
        started.append(BareReceiver(args.broker, workdir / "bare_receiver.log"))
        subscribed(started[-1], r, db)
        started.append(Exporter(args.broker, max_tasks, args.exporter_arg, workdir / "exp.log"))
        subscribed(started[-1], r, db)
        if not args.no_tracing:
            sink = OtlpSink(workdir / "otlp_sink.log")
            traced = TracedExporter(
                args.broker,
                max_tasks,
                args.exporter_arg,
                workdir / "exp_traced.log",
                sink,
                storm.spans,
            )
            started.append(traced)
            subscribed(traced, r, db)
    except BaseException:
        for child in [*started, sink]:
            if child is not None:
                child.stop()
        raise
    return started


def stop_all(consumers: list[Consumer]) -> None:
    """Stop consumers and the sinks they own (stopping twice is harmless)."""
    for consumer in consumers:
        consumer.stop()
        if isinstance(consumer, TracedExporter):
            consumer.sink.stop()


def thaw_order(consumers: list[Consumer], order: str, round_index: int) -> list[Consumer]:
    """``rotate``: each round starts one further along the list; ``fixed``: as listed."""
    k = round_index % len(consumers) if order == "rotate" else 0
    return consumers[k:] + consumers[:k]


def measure(
    args: argparse.Namespace,
    r: redis.Redis,
    db: int,
    storm: Storm,
    workdir: Path,
    round_index: int,
) -> Outcome:
    """One round: subscribe all, freeze, publish, then thaw and drain each in turn."""
    consumers = start_consumers(args, r, db, storm, workdir)
    redis_pid = int(r.info("server").get("process_id", 0))
    results: dict[str, Result] = {}
    checks: dict[str, list[str]] = {}
    profiles: dict[str, list[str]] = {}
    scrapes = Scrapes()
    try:
        for consumer in consumers:
            settle(consumer)
            freeze(consumer)
        published = publish(storm, args.broker)
        backlog = {}
        for consumer in consumers:
            client = consumer.subscription(r, db)
            if client is None:
                raise BenchError(f"Redis dropped {consumer.name}'s subscription while frozen")
            backlog[consumer.name] = int(client["omem"]) / 1e6
        order = thaw_order(consumers, args.order, round_index)
        for consumer in order:
            profiler = None
            if args.profile and isinstance(consumer, Exporter):
                slug = "traced" if isinstance(consumer, TracedExporter) else "plain"
                out = args.profile / f"round{round_index + 1}-{slug}.txt"
                profiler = ThawProfiler(consumer.pid, out, args.profile_nonblocking)
            started_wall = time.time()
            result = drain(consumer, storm.events, args.timeout, redis_pid, profiler)
            if profiler is not None:
                profiles[consumer.name] = profiler.stop()
            results[consumer.name] = result
            print(f"  {consumer.name}: drained in {result.seconds:.2f} s", flush=True)
            if isinstance(consumer, TracedExporter):
                result.spans = span_figures(consumer, started_wall)
                result.complete = result.complete and result.spans.received == storm.spans
            if isinstance(consumer, Exporter):
                checks[consumer.name] = exporter_checks(consumer, storm)
                if not isinstance(consumer, TracedExporter):
                    scrapes = time_scrapes(consumer, args.scrapes)
                result.peak_rss_kb = tree_memory_kb(consumer.pid, "VmHWM")
            stop_all([consumer])
    finally:
        stop_all(consumers)
    return Outcome(
        results,
        [c.name for c in order],
        scrapes,
        checks,
        published,
        backlog,
        profiles,
    )


def medians(rounds: list[Outcome]) -> dict[str, Result]:
    """Per consumer: the median drain time and CPU over the rounds, the highest peak RSS."""
    out = {}
    for name in rounds[0].results:
        results = [o.results[name] for o in rounds]
        out[name] = Result(
            name,
            min(r.events for r in results),
            results[0].expected,
            statistics.median(r.seconds for r in results),
            statistics.median(r.cpu_seconds for r in results),
            max(r.peak_rss_kb for r in results),
            max(r.rss_before_kb for r in results),
            complete=all(r.complete for r in results),
            redis_cores=statistics.median(r.redis_cores for r in results),
            other_cores=statistics.median(r.other_cores for r in results),
        )
    return out


def table(rounds: list[Outcome]) -> str:
    """Each round's consumers in thaw order, then the medians; ratios to the bare receiver."""
    head = (
        "round",
        "consumer",
        "events",
        "seconds",
        "events/s",
        "ratio",
        "CPU s",
        "peak RSS MB",
        "Redis cores",
        "others' cores",
    )
    rows = [head]

    def row(label: str, r: Result, bare_rate: float) -> tuple[str, ...]:
        return (
            label,
            r.consumer + ("" if r.complete else " (INCOMPLETE)"),
            f"{r.events:,}",
            f"{r.seconds:.2f}",
            f"{r.rate:,.0f}",
            f"{r.rate / bare_rate:.2f}" if bare_rate else "-",
            f"{r.cpu_seconds:.2f}",
            f"{r.peak_rss_kb / 1024:.0f}",
            f"{r.redis_cores:.2f}",
            f"{r.other_cores:.2f}",
        )

    for i, out in enumerate(rounds, 1):
        bare = out.results[BareReceiver.name].rate
        for name in out.order:
            rows.append(row(f"{i}", out.results[name], bare))
    med = medians(rounds)
    for r in med.values():
        rows.append(row("median", r, med[BareReceiver.name].rate))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def report(storm: Storm, rounds: list[Outcome]) -> dict:
    """Print the table, ratios, spans and scrape times; return the same as a dict."""
    med = medians(rounds)
    bare = med[BareReceiver.name]
    print()
    print(f"storm: {describe(storm)}")
    for i, out in enumerate(rounds, 1):
        print(
            f"round {i}: published in {out.published_seconds:.1f} s to the frozen consumers; "
            "Redis backlog "
            + ", ".join(f"{name} {mb:.0f} MB" for name, mb in out.backlog_mb.items())
            + "; thawed in turn: "
            + ", ".join(out.order)
        )
    print()
    print(table(rounds))
    print()
    ratios = {}
    for name, (now, later) in TARGETS.items():
        if name not in med:
            continue
        ratio = ratios[name] = med[name].rate / bare.rate if bare.rate else 0.0
        per_round = ", ".join(
            f"{o.results[name].rate / o.results[bare.consumer].rate:.2f}" for o in rounds
        )
        by_cpu = bare.cpu_seconds / med[name].cpu_seconds if med[name].cpu_seconds else 0.0
        print(
            f"{name}: ratio of medians {ratio:.2f} (per round {per_round}; by CPU time "
            f"{by_cpu:.2f}): target >= {now} {'met' if ratio >= now else 'NOT met'}, "
            f"later >= {later} {'met' if ratio >= later else 'not met'}"
        )
    busiest = max(r.other_cores for o in rounds for r in o.results.values())
    if busiest > SHARED:
        print(
            f"note: other processes kept up to {busiest:.2f} cores busy during a drain; "
            "on this 2-core machine that slows the consumer: compare rounds, rerun when quiet"
        )
    for i, out in enumerate(rounds, 1):
        for name, lines in out.checks.items():
            for line in lines:
                print(f"round {i}, {name}: {line}")
        traced = out.results.get(TracedExporter.name)
        if traced is not None and traced.spans is not None:
            s = traced.spans
            print(
                f"round {i}, spans: {s.received:,} of {s.expected:,} received by the sink "
                f"(exporter: exported {s.exported:,}, dropped "
                + ", ".join(f"{reason} {n:,}" for reason, n in s.dropped.items())
                + f"); events all received {s.events_seconds:.2f} s after the thaw "
                f"({traced.events / s.events_seconds:,.0f} events/s), last span "
                f"{traced.seconds:.2f} s after it; the sink used "
                f"{traced.helper_cpu_seconds:.2f} CPU s"
            )
    ms = [s * 1000 for out in rounds for s in out.scrapes.seconds]
    last = rounds[-1].scrapes
    print(
        f"/metrics after the drain, {len(ms)} GETs ({last.series:,} samples, "
        f"{last.bytes / 1e3:.0f} kB): median {statistics.median(ms):.1f} ms, "
        f"max {max(ms):.1f} ms (collect in the exporter: {last.collect_seconds * 1000:.1f} ms)"
    )
    for i, out in enumerate(rounds, 1):
        for name, lines in out.profiles.items():
            print(f"round {i}, py-spy profile of {name}'s drain:")
            print("\n".join("  " + line for line in lines))
    return {
        "storm": {
            **asdict(storm.spec),
            "events": storm.events,
            "messages": len(storm.messages),
            "bytes": storm.size,
            "spans": storm.spans,
        },
        "median": {name: {**asdict(r), "rate": r.rate} for name, r in med.items()},
        "ratios": ratios,
        "rounds": [
            {
                "results": {name: {**asdict(r), "rate": r.rate} for name, r in o.results.items()},
                "order": o.order,
                "checks": o.checks,
                "scrapes": asdict(o.scrapes),
                "published_seconds": o.published_seconds,
                "backlog_mb": o.backlog_mb,
                "profiles": o.profiles,
            }
            for o in rounds
        ],
        "scrape_ms": {"median": statistics.median(ms), "max": max(ms)},
    }


def run(args: argparse.Namespace, storm: Storm, r: redis.Redis, db: int, workdir: Path) -> dict:
    """The rounds, then the report."""
    rounds = []
    for i in range(args.rounds):
        print(f"drain round {i + 1} of {args.rounds}", flush=True)
        rounds.append(measure(args, r, db, storm, workdir, i))
    return report(storm, rounds)
