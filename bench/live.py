"""Memory, scrape and freshness modes: the exporter measured while events flow to it live.

- memory: a storm published in chunks, each waited for until the exporter (and a bare
  receiver, the control) has consumed it, so no backlog inflates the figures; RSS
  against tasks tracked after every chunk.
- scrape: a storm that gives every (name, queue, state) series; then ``/metrics`` timed
  while a paced publisher feeds the exporter, and the exporter's ingest rate over a
  backlog with and without one scrape a second.
- freshness: marker tasks published while a paced publisher feeds the exporter, each
  timed from its publication until ``/api/tasks/<uuid>`` shows it SUCCESS.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import itertools
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery.utils.time import utcoffset
from kombu.utils.json import dumps
from procs import (
    BENCH,
    BareReceiver,
    BenchError,
    Child,
    Consumer,
    Exporter,
    OtlpSink,
    freeze,
    memory_kb,
    parse_metrics,
    settle,
    subscribed,
    total,
    wait_for,
)
from storm import (
    Message,
    Publisher,
    Storm,
    StormSpec,
    build_storm,
    describe,
    publish,
    renamed,
)

#: Messages published between two waits for the consumers to catch up (~24k events).
CHUNK = 1000
#: How often a consumer's count is asked while waiting for it to catch up.
POLL = 0.05
#: Prometheus's default scrape_timeout: a longer scrape would fail.
SCRAPE_TIMEOUT = 10.0
MARKER_NAME = "bench.marker"
#: Sample-name suffixes that belong to a family's name.
FAMILY = re.compile(r"_(bucket|sum|count|total|created)$")
#: Task ids of a paced storm start with this; each round after the first rewrites them.
PACED_PREFIX = "c0ffee00"
MARKER_HOST = "celery@bench-marker"


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile, nearest rank (p99 of 50 values is the largest)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def spread(values: Sequence[float], scale: float = 1000.0) -> dict[str, float]:
    """p50, p90, p99 and max of ``values`` times ``scale`` (seconds to ms by default)."""
    if not values:
        return {}
    return {
        "n": len(values),
        "p50": statistics.median(values) * scale,
        "p90": percentile(values, 90) * scale,
        "p99": percentile(values, 99) * scale,
        "max": max(values) * scale,
    }


def spread_text(s: dict[str, float], unit: str = "ms") -> str:
    """``spread``'s figures in one line, for the report."""
    if not s:
        return "none"
    return (
        f"p50 {s['p50']:.1f} {unit}, p90 {s['p90']:.1f}, p99 {s['p99']:.1f}, "
        f"max {s['max']:.1f} (n={s['n']})"
    )


class PacedPublisher(threading.Thread):
    """Publishes a storm at a steady event rate on a connection of its own.

    It goes round the storm again (as new tasks: its ids rewritten, see
    ``storm.renamed``) until halted or ``seconds`` have passed, so a long steady load
    needs no storm of that size. What is due is published every ``TICK`` in one of kombu's
    pipelined batches: one at a time, kombu made a Redis client per message, and 20k events/s
    took 73 % of a core, on the 2 cores the exporter and its scrapes are measured on.
    """

    #: How often what is due goes out: 20k events/s is ~130 events a tick.
    TICK = 0.005
    #: The most messages a batch takes: one that cannot keep up still stops when told.
    BATCH = 64

    def __init__(self, url: str, storm: Storm, rate: float, seconds: float | None = None) -> None:
        super().__init__(name="paced-publisher", daemon=True)
        if not storm.spec.id_prefix:
            raise BenchError("a paced storm needs an id_prefix, to go round it again")
        self.url = url
        self.storm = storm
        self.rate = rate
        self.limit = seconds
        self.events = 0
        self.rounds = 0
        self.seconds = 0.0
        self.behind = 0.0
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Publisher(self.url) as publisher:
                self._publish(publisher)
        except BaseException as exc:
            self.error = exc

    def _messages(self) -> Iterator[Message]:
        """The storm's messages, round after round, renamed from the second on."""
        prefix = self.storm.spec.id_prefix
        while True:
            for message in self.storm.messages:
                yield renamed(message, prefix, f"{self.rounds:08x}") if self.rounds else message
            self.rounds += 1

    def _publish(self, publisher: Publisher) -> None:
        """What the rate allows, a tick at a time, until the limit or told to stop."""
        started = time.monotonic()
        messages = self._messages()
        message = next(messages)
        while not self.halt.is_set():
            now = time.monotonic()
            if self.limit is not None and now - started >= self.limit:
                return
            due = started + self.events / self.rate
            # Pacing, not synchronisation: hold the rate, stop early if told.
            if due > now:
                if self.halt.wait(max(due - now, self.TICK)):
                    return
                continue
            self.behind = max(self.behind, now - due)
            with publisher.batch():
                for _ in range(self.BATCH):
                    publisher.send(message)
                    self.events += message.events
                    message = next(messages)
                    if started + self.events / self.rate > now:
                        break
            self.seconds = time.monotonic() - started

    @property
    def achieved(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def finish(self) -> None:
        """Stop if still going; re-raise what went wrong in the thread."""
        self.halt.set()
        self.join(60)
        if self.error is not None:
            raise BenchError(f"the paced publisher failed: {self.error!r}")


class Scraper:
    """GETs /metrics every ``every`` seconds from a process of its own (bench/scraper.py),
    as Prometheus would, and collects how long each took."""

    #: Numbers each one's log file.
    _started = itertools.count(1)

    def __init__(
        self,
        exporter: Exporter,
        every: float,
        count: int | None = None,
        as_prometheus: bool = False,
    ) -> None:
        self.exporter = exporter
        self.every = every
        self.count = count
        #: Prometheus's headers (OpenMetrics, gzip) rather than none.
        self.as_prometheus = as_prometheus
        self.seconds: list[float] = []
        self.bytes = 0
        self.error: str | None = None
        self._child: Child | None = None
        self._reader = threading.Thread(target=self._read, name="scraper-reader", daemon=True)

    def start(self) -> None:
        argv = [sys.executable, str(BENCH / "scraper.py")]
        argv += ["--as-prometheus"] * self.as_prometheus + [self.exporter.base + "/metrics"]
        argv += [str(self.every), *([str(self.count)] if self.count is not None else [])]
        log = self.exporter.log.with_name(f"scraper-{next(Scraper._started)}.log")
        self._child = Child(argv, log, lines=True)
        self._child.name = "the scraper"
        self._reader.start()

    def _read(self) -> None:
        assert self._child is not None
        for line in self._child.proc.stdout:  # type: ignore[union-attr]
            match line.decode().split():
                case ["error", status]:
                    self.error = f"/metrics answered {status}"
                    return
                case [seconds, size]:
                    self.seconds.append(float(seconds))
                    self.bytes = int(size)
                case _:
                    self.error = f"it printed {line!r}"
                    return

    def is_alive(self) -> bool:
        return self._reader.is_alive()

    def run(self) -> None:
        """Start, and wait for ``count`` scrapes."""
        self.start()
        self._reader.join()
        self.finish()

    def finish(self) -> None:
        """Stop if still going (its stdin closed); fail if a scrape did."""
        if self._child is None:
            return
        self._child.proc.stdin.close()  # type: ignore[union-attr]
        self._reader.join(120)
        try:
            self._child.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.error = self.error or "it did not stop within 60 s of being told to"
        finally:
            self._child.stop()
        if self.error is not None:
            raise BenchError(f"the scraper failed: {self.error}")
        if self._child.proc.returncode:
            self._child.check_alive()


def caught_up(consumers: Sequence[Consumer], events: int, timeout: float) -> None:
    """Wait until every consumer has counted ``events``."""
    for consumer in consumers:

        def done(consumer: Consumer = consumer) -> bool:
            consumer.check_alive()
            return consumer.count() >= events

        wait_for(f"{consumer.name} to count {events:,} events", done, timeout, POLL)


def publish_in_step(
    url: str,
    messages: list[Message],
    consumers: Sequence[Consumer],
    base: int,
    timeout: float,
    after_chunk: Callable[[], None] | None = None,
) -> None:
    """Publish CHUNK messages at a time, each time waiting for the consumers to catch up.

    ``base`` is the events each consumer had counted before; ``after_chunk`` is called
    once they have caught up with each chunk.
    """
    published = base
    with Publisher(url) as publisher:
        for first in range(0, len(messages), CHUNK):
            for message in messages[first : first + CHUNK]:
                publisher.send(message)
                published += message.events
            caught_up(consumers, published, timeout)
            if after_chunk is not None:
                after_chunk()


def start_exporter(
    args: argparse.Namespace,
    r: redis.Redis,
    db: int,
    max_tasks: int,
    log: Path,
    extra: Sequence[str] = (),
) -> Exporter:
    """An exporter subscribed and settled, so what is measured next is not its startup."""
    exporter = Exporter(args.broker, max_tasks, [*args.exporter_arg, *extra], log)
    try:
        subscribed(exporter, r, db)
        settle(exporter)
    except BaseException:
        exporter.stop()
        raise
    return exporter


def start_traced(
    args: argparse.Namespace, r: redis.Redis, db: int, max_tasks: int, workdir: Path, mode: str
) -> tuple[Exporter, OtlpSink | None]:
    """``start_exporter``, sending spans to a sink of its own if ``--tracing``."""
    sink = OtlpSink(workdir / f"{mode}_sink.log") if args.tracing else None
    extra = ["--otlp-endpoint", sink.endpoint] if sink else []
    try:
        return start_exporter(args, r, db, max_tasks, workdir / f"{mode}_exporter.log", extra), sink
    except BaseException:
        if sink:
            sink.stop()
        raise


def fit(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y against x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


# --- memory ---------------------------------------------------------------------------


def memory(args: argparse.Namespace, storm: Storm, r: redis.Redis, db: int, workdir: Path) -> dict:
    """RSS against tasks tracked, the storm published in step with the consumers."""
    max_tasks = args.max_tasks or 1_000_000
    print(f"memory: {describe(storm)}; exporter --max-tasks {max_tasks:,}", flush=True)
    exporter = start_exporter(args, r, db, max_tasks, workdir / "memory_exporter.log")
    bare = BareReceiver(args.broker, workdir / "memory_bare.log")
    try:
        subscribed(bare, r, db)
        settle(bare)
        start = {c.name: memory_kb(c.pid, "VmRSS") for c in (exporter, bare)}
        points: list[tuple[int, int, int]] = [(0, start[exporter.name], start[bare.name])]

        def note() -> None:
            tracked = int(exporter.stats()["tasks_stored"])
            points.append((tracked, memory_kb(exporter.pid, "VmRSS"), memory_kb(bare.pid, "VmRSS")))

        began = time.monotonic()
        publish_in_step(args.broker, storm.messages, (exporter, bare), 0, args.timeout, note)
        seconds = time.monotonic() - began
        samples = exporter.metrics()
        tracked = int(total(samples, "clearly_exporter_tasks_tracked"))
        evicted = int(total(samples, "clearly_exporter_tasks_evicted_total"))
        end = {c.name: memory_kb(c.pid, "VmRSS") for c in (exporter, bare)}
        peak = {c.name: memory_kb(c.pid, "VmHWM") for c in (exporter, bare)}
    finally:
        exporter.stop()
        bare.stop()
    grown = (end[exporter.name] - start[exporter.name]) * 1024
    bare_grown = (end[bare.name] - start[bare.name]) * 1024
    slope = fit([(t, kb * 1024) for t, kb, _ in points if t > 0])
    out = {
        "storm": {**asdict(storm.spec), "events": storm.events},
        "max_tasks": max_tasks,
        "tasks_tracked": tracked,
        "tasks_evicted": evicted,
        "publish_seconds": seconds,
        "rss_start_kb": start,
        "rss_end_kb": end,
        "peak_rss_kb": peak,
        "growth_per_100k_mb": grown / tracked * 100_000 / 2**20,
        "peak_growth_per_100k_mb": (peak[exporter.name] - start[exporter.name])
        / 1024
        / tracked
        * 100_000,
        "bytes_per_task": grown / tracked,
        "bytes_per_task_slope": slope,
        "bare_growth_mb": bare_grown / 2**20,
        "points": points,
    }
    print(
        f"memory: {tracked:,} tasks tracked ({evicted} evicted), published in step in "
        f"{seconds:.0f} s\n"
        f"  exporter RSS {start[exporter.name] / 1024:.0f} MB at start, "
        f"{end[exporter.name] / 1024:.0f} MB after, peak {peak[exporter.name] / 1024:.0f} MB: "
        f"{out['growth_per_100k_mb']:.0f} MB per 100k tasks tracked (peak-based "
        f"{out['peak_growth_per_100k_mb']:.0f} MB), {out['bytes_per_task']:,.0f} bytes per "
        f"finished task ({slope:,.0f} by the slope over {len(points) - 1} chunks)\n"
        f"  bare receiver (control, keeps nothing): {start[bare.name] / 1024:.0f} MB at start, "
        f"{end[bare.name] / 1024:.0f} MB after ({out['bare_growth_mb']:+.0f} MB)",
        flush=True,
    )
    return out


# --- scrape ---------------------------------------------------------------------------


@dataclass
class Ingest:
    """A backlog drained by the exporter, timed by the exporter's own last-event stamp."""

    events: int
    seconds: float
    scrapes: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def share(part: float, whole: float) -> float:
    """``part / whole``, 0 for a whole of 0 (a drain that never started)."""
    return part / whole if whole else 0.0


def last_event(exporter: Exporter) -> float:
    """When the exporter received its last event (wall clock, its own stamp)."""
    return total(exporter.metrics(), "clearly_exporter_last_event_timestamp_seconds")


def ingest(
    exporter: Exporter,
    storm: Storm,
    url: str,
    scrape_every: float | None,
    timeout: float,
    as_prometheus: bool = False,
) -> Ingest:
    """Freeze, publish the storm as a backlog, thaw; time until its last event was received.

    The end is the exporter's ``clearly_exporter_last_event_timestamp_seconds`` (the
    receive time of its last event), so asking whether it is done, every POLL seconds
    through the cheap /api/stats, never has to be precise.
    """
    base = exporter.count()
    freeze(exporter)
    publish(storm, url)
    scraper = Scraper(exporter, scrape_every, None, as_prometheus) if scrape_every else None
    thawed = time.time()
    os.kill(exporter.pid, signal.SIGCONT)
    if scraper is not None:
        scraper.start()
    try:
        caught_up((exporter,), base + storm.events, timeout)
    finally:
        if scraper is not None:
            scraper.finish()
    return Ingest(storm.events, last_event(exporter) - thawed, scraper.seconds if scraper else [])


def scrape(
    args: argparse.Namespace, spec: StormSpec, r: redis.Redis, db: int, workdir: Path
) -> dict:
    """Series of every (name, queue, state); scrape times under load; ingest with scrapes."""
    prime = build_storm(spec)
    print(f"scrape: prime storm {describe(prime)}", flush=True)
    max_tasks = args.max_tasks or 1_000_000
    exporter, sink = start_traced(args, r, db, max_tasks, workdir, "scrape")
    try:
        publish_in_step(args.broker, prime.messages, (exporter,), 0, args.timeout)
        idle = Scraper(exporter, 0.0, 5, args.as_prometheus)
        idle.run()
        body = exporter.get("/metrics")[1].decode()
        samples = parse_metrics(body)
        families = Counter(FAMILY.sub("", n) for n, _, _ in samples)
        collect = total(samples, "clearly_exporter_scrape_duration_seconds")
        states = sorted({lab["state"] for n, lab, _ in samples if n == "celery_tasks_total"})
        names = {lab["name"] for n, lab, _ in samples if n == "celery_tasks_total"}
        queues = {lab["queue"] for n, lab, _ in samples if n == "celery_tasks_total"}
        print(
            f"scrape: after the prime storm, /metrics has {len(samples):,} samples "
            f"({len(body) / 1e6:.1f} MB): {len(names)} names x {len(queues)} queues, states "
            f"{', '.join(states)}; idle scrapes {spread_text(spread(idle.seconds))}, of which "
            f"the exporter's collect {collect * 1000:.0f} ms; samples by family: "
            + ", ".join(f"{name} {n:,}" for name, n in families.most_common()),
            flush=True,
        )
        plain, scraped = ingest_rounds(args, spec, exporter)
        steady = steady_scrapes(args, spec, exporter, 2 * args.ingest_rounds + 1)
    finally:
        exporter.stop()
        if sink:
            sink.stop()
    ratio = share(
        statistics.median(i.rate for i in scraped), statistics.median(i.rate for i in plain)
    )
    pairs = zip(plain, scraped, strict=True)
    rounds = ", ".join(f"{share(s.rate, p.rate):.2f}" for p, s in pairs)
    print(
        f"scrape: ingest rate with scrapes / without: {ratio:.2f} (ratio of medians; "
        f"per round {rounds})",
        flush=True,
    )
    all_scrapes = [t for i in scraped for t in i.scrapes]
    return {
        "storm": {**asdict(spec), "events": prime.events, "spans": prime.spans},
        "max_tasks": max_tasks,
        "samples": len(samples),
        "bytes": len(body),
        "families": dict(families.most_common()),
        "collect_ms": collect * 1000,
        "states": states,
        "names": len(names),
        "queues": len(queues),
        "idle_ms": spread(idle.seconds),
        "ingest_plain": [{**asdict(i), "rate": i.rate} for i in plain],
        "ingest_scraped": [{**asdict(i), "rate": i.rate} for i in scraped],
        "ingest_ratio": ratio,
        "ingest_scrape_ms": spread(all_scrapes),
        **steady,
    }


def ingest_rounds(
    args: argparse.Namespace, spec: StormSpec, exporter: Exporter
) -> tuple[list[Ingest], list[Ingest]]:
    """``--ingest-rounds`` backlogs drained without scrapes and as many with, each a storm
    of its own seed; in the order without, with, with, without...: every drain leaves the
    exporter more tasks to hold, so each kind gets as many early drains as late ones."""
    plain: list[Ingest] = []
    scraped: list[Ingest] = []
    for k in range(args.ingest_rounds):
        for every in (None, args.scrape_every) if k % 2 == 0 else (args.scrape_every, None):
            seed = spec.seed + 1 + len(plain) + len(scraped)
            storm = build_storm(dataclasses.replace(spec, seed=seed))
            done = ingest(exporter, storm, args.broker, every, args.timeout, args.as_prometheus)
            if every is None:
                plain.append(done)
                print(
                    f"scrape: backlog drained without scrapes at {done.rate:,.0f} events/s",
                    flush=True,
                )
            else:
                scraped.append(done)
                print(
                    f"scrape: backlog drained with a scrape every {every:g} s at "
                    f"{done.rate:,.0f} events/s ({len(done.scrapes)} scrapes: "
                    f"{spread_text(spread(done.scrapes))})",
                    flush=True,
                )
    return plain, scraped


def steady_scrapes(
    args: argparse.Namespace, spec: StormSpec, exporter: Exporter, seed_offset: int
) -> dict:
    """``--scrape-count`` scrapes, one every ``--scrape-every`` s, while events flow steadily."""
    storm = build_storm(
        dataclasses.replace(spec, seed=spec.seed + seed_offset, id_prefix=PACED_PREFIX)
    )
    print(
        f"scrape: {args.scrape_count} scrapes while publishing at {args.load_rate:,.0f} events/s",
        flush=True,
    )
    base = exporter.count()
    publisher = PacedPublisher(args.broker, storm, args.load_rate)
    scraper = Scraper(exporter, args.scrape_every, args.scrape_count, args.as_prometheus)
    publisher.start()
    wait_for("the publisher's first second", lambda: publisher.events >= args.load_rate, 30)
    scraper.start()
    try:
        wait_for(
            f"{args.scrape_count} scrapes",
            lambda: len(scraper.seconds) >= args.scrape_count or not scraper.is_alive(),
            args.timeout * 4,
            0.1,
        )
    finally:
        scraper.finish()
        publisher.finish()
    caught = time.monotonic()
    caught_up((exporter,), base + publisher.events, args.timeout)
    lag = time.monotonic() - caught
    s = spread(scraper.seconds)
    over = sum(1 for x in scraper.seconds if x > SCRAPE_TIMEOUT)
    print(
        f"scrape: under a steady {publisher.achieved:,.0f} events/s "
        f"({publisher.events:,} events): {spread_text(s)}, {scraper.bytes / 1e6:.1f} MB each "
        f"{'as Prometheus asks (OpenMetrics, gzip)' if args.as_prometheus else 'plain'}; "
        f"over {SCRAPE_TIMEOUT:g} s: "
        f"{over}; the exporter was {lag:.1f} s behind when the load stopped",
        flush=True,
    )
    return {
        "steady_scrape_ms": s,
        "steady_scrape_bytes": scraper.bytes,
        "steady_as_prometheus": args.as_prometheus,
        "steady_load_rate": publisher.achieved,
        "steady_events": publisher.events,
        "steady_catch_up_seconds": lag,
        "steady_scrapes_over_timeout": over,
    }


# --- freshness ------------------------------------------------------------------------


class Marker:
    """Publishes marker tasks and polls /api/tasks/<uuid> until each shows SUCCESS."""

    def __init__(self, url: str, exporter: Exporter, poll: float) -> None:
        self.publisher = Publisher(url)
        self.poll = poll
        host, port = exporter.base.removeprefix("http://").split(":")
        self.http = http.client.HTTPConnection(host, int(port), timeout=30)
        self.clock = 0
        self.offset = utcoffset()
        self.sent = 0
        self.last = ""
        self.round_trips: list[float] = []

    def _body(self, task_id: str) -> bytes:
        """The four events of a success in one list body, as a worker would batch them."""
        now = time.time()
        fields = {"name": MARKER_NAME, "args": "()", "kwargs": "{}"}
        sent = {**fields, "retries": 0, "eta": None, "expires": None}
        routing = {"queue": "celery", "exchange": "", "routing_key": "celery"}
        steps = [
            ("task-sent", {**sent, **routing}),
            ("task-received", sent),
            ("task-started", {}),
            ("task-succeeded", {"result": "None", "runtime": 0.001}),
        ]
        events = []
        for etype, extra in steps:
            self.clock += 1
            identity = {"hostname": MARKER_HOST, "utcoffset": self.offset, "pid": os.getpid()}
            events.append(
                {**identity, "clock": self.clock, "uuid": task_id, **extra}
                | {"timestamp": now, "type": etype}
            )
        return dumps(events).encode()

    def view(self, task_id: str) -> dict[str, Any] | None:
        """The exporter's view of the task, None while it does not know it."""
        began = time.perf_counter()
        self.http.request("GET", f"/api/tasks/{task_id}")
        response = self.http.getresponse()
        body = response.read()
        self.round_trips.append(time.perf_counter() - began)
        return json.loads(body) if response.status == 200 else None

    def answer_times(self, task_id: str, count: int) -> list[float]:
        """Seconds each of ``count`` GETs of the task's view took."""
        self.round_trips.clear()
        for _ in range(count):
            self.view(task_id)
        return list(self.round_trips)

    def delay(self, timeout: float = 60) -> tuple[float, float]:
        """Publish one marker; seconds until the API showed it SUCCESS, and until the
        exporter received it (its ``first_seen``, a wall-clock stamp of the receipt)."""
        task_id = self.last = str(uuid.uuid4())
        message = Message("task.multi", self._body(task_id), MARKER_HOST, 4)
        published_wall = time.time()
        published = time.monotonic()
        self.publisher.send(message)
        self.sent += 1
        while (view := self.view(task_id)) is None or view["state"] != "SUCCESS":
            if time.monotonic() - published > timeout:
                raise BenchError(f"marker {task_id} not shown within {timeout:.0f} s")
            time.sleep(self.poll)
        return time.monotonic() - published, view["first_seen"] - published_wall

    def close(self) -> None:
        self.http.close()
        self.publisher.close()


def freshness(
    args: argparse.Namespace, spec: StormSpec, r: redis.Redis, db: int, workdir: Path
) -> dict:
    """Marker delays with no load, then under a steady load of ``--load-rate`` events/s."""
    spec = dataclasses.replace(spec, rate=args.load_rate / 4, id_prefix=PACED_PREFIX)
    storm = build_storm(spec)
    print(f"freshness: load {describe(storm)}", flush=True)
    expected = int(args.load_rate * args.freshness_seconds / storm.events * spec.tasks)
    max_tasks = args.max_tasks or expected * 11 // 10 + 10_000
    exporter, sink = start_traced(args, r, db, max_tasks, workdir, "freshness")
    marker = Marker(args.broker, exporter, args.poll_ms / 1000)
    gap = threading.Event()
    try:
        idle: list[tuple[float, float]] = []
        for _ in range(args.idle_markers):
            idle.append(marker.delay())
            gap.wait(args.marker_every)
        idle_trips = list(marker.round_trips)
        marker.round_trips.clear()
        base = exporter.count()
        publisher = PacedPublisher(args.broker, storm, args.load_rate, args.freshness_seconds)
        publisher.start()
        wait_for("the publisher's first second", lambda: publisher.events >= args.load_rate, 30)
        loaded: list[tuple[float, float]] = []
        try:
            while publisher.is_alive():
                loaded.append(marker.delay())
                gap.wait(args.marker_every)
        finally:
            publisher.finish()
        loaded_trips = list(marker.round_trips)
        caught_up((exporter,), base + publisher.events + 4 * len(loaded), args.timeout)
        stored = int(exporter.stats()["tasks_stored"])
        found = marker.answer_times(marker.last, 10)
        missing = marker.answer_times(str(uuid.uuid4()), 10)
        spans = settled_spans(exporter, sink, args.timeout) if sink else {}
        shown = total(exporter.metrics(), "celery_tasks_total", name=MARKER_NAME, state="SUCCESS")
    finally:
        marker.close()
        exporter.stop()
        if sink:
            sink.stop()
    out = {
        "storm": {**asdict(spec), "events": storm.events},
        "load_rate": publisher.achieved,
        "publisher_behind_max_s": publisher.behind,
        "idle_ms": spread([shown for shown, _ in idle]),
        "loaded_ms": spread([shown for shown, _ in loaded]),
        "idle_received_ms": spread([received for _, received in idle]),
        "loaded_received_ms": spread([received for _, received in loaded]),
        "poll_ms": args.poll_ms,
        "poll_round_trip_idle_ms": spread(idle_trips),
        "poll_round_trip_loaded_ms": spread(loaded_trips),
        "tasks_stored": stored,
        "view_found_ms": spread(found),
        "view_missing_ms": spread(missing),
        "markers_sent": marker.sent,
        "markers_in_metrics": int(shown),
        "spans": spans,
    }
    print(
        f"freshness: publication -> /api/tasks/<uuid> shows SUCCESS\n"
        f"  idle: {spread_text(out['idle_ms'])}\n"
        f"  under {publisher.achieved:,.0f} events/s: {spread_text(out['loaded_ms'])}\n"
        f"publication -> received by the exporter (its first_seen stamp)\n"
        f"  idle: {spread_text(out['idle_received_ms'])}\n"
        f"  under load: {spread_text(out['loaded_received_ms'])}\n"
        f"  each poll's round trip: idle {spread_text(out['poll_round_trip_idle_ms'])}; "
        f"under load {spread_text(out['poll_round_trip_loaded_ms'])}\n"
        f"  /api/tasks/<uuid> after the load, {stored:,} tasks stored, nothing else going on: "
        f"a known task {spread_text(out['view_found_ms'])}; an unknown one "
        f"{spread_text(out['view_missing_ms'])}\n"
        f"  markers counted SUCCESS on /metrics: {int(shown)} of {marker.sent}; "
        f"publisher at most {publisher.behind * 1000:.0f} ms behind its schedule",
        flush=True,
    )
    if spans:
        print(
            f"  tracing: {spans['received']:,} spans received by the sink for "
            f"{spans['ended']:,} ended attempts (exporter: exported {spans['exported']:,}, "
            "dropped " + ", ".join(f"{k} {n:,}" for k, n in spans["dropped"].items()) + ")",
            flush=True,
        )
    return out


def settled_spans(exporter: Exporter, sink: OtlpSink, timeout: float) -> dict[str, Any]:
    """Once every ended attempt's span is accounted for (received, or counted dropped):
    the sink's count, the exporter's, and the attempts that ended (every outcome of the
    load is a success, so its SUCCESS count)."""
    figures: dict[str, Any] = {}

    def accounted() -> bool:
        samples = exporter.metrics()
        dropped = {
            lab["reason"]: int(v)
            for n, lab, v in samples
            if n == "clearly_exporter_spans_dropped_total"
        }
        figures.update(
            received=sink.state().spans,
            exported=int(total(samples, "clearly_exporter_spans_exported_total")),
            dropped=dropped,
            ended=int(total(samples, "celery_tasks_total", state="SUCCESS")),
        )
        return figures["exported"] + sum(dropped.values()) >= figures["ended"]

    wait_for("every span to be accounted for", accounted, timeout, 0.5)
    return figures


def run(
    mode: str,
    args: argparse.Namespace,
    spec: StormSpec,
    r: redis.Redis,
    db: int,
    workdir: Path,
) -> dict[str, Any]:
    """One live mode; each builds its own storms from ``spec``."""
    if mode == "memory":
        return memory(args, build_storm(spec), r, db, workdir)
    if mode == "scrape":
        return scrape(args, spec, r, db, workdir)
    return freshness(args, spec, r, db, workdir)
