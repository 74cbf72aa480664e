"""The span process: spans made, completed and sent beside the exporter, not inside it.

A span costs about as much as all the engine's work for its task (building it,
redaction, OTLP encoding: ~20 µs), and one Python process runs one thread at a time,
so spans made in the exporter slow the consumption of events. Here the consumer only
reads each ended attempt into a view (a tuple of plain values) and a child process,
on another core, turns views into spans and ships them (``worker.SpanWorker``).

The consumer never waits: views are batched, a thread of their own writes them to the
pipe, and at most ``max_queue`` are in flight (submitted, not yet taken by the child);
more are dropped and counted as ``queue_full``. The child's counts come back through
shared memory. A child that dies is started again (after ``RESTART_EVERY``, doubling
while new ones keep dying) and its spans in flight are counted as ``export_error``; if the
exporter dies, the child sees its pipe close, flushes and exits.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from typing import Any

from clearly_exporter import logs
from clearly_exporter.results import OUTCOMES, ResultFetcher
from clearly_exporter.traces.encoding import Encoder
from clearly_exporter.traces.exporters import make_exporter
from clearly_exporter.traces.shipper import SpanShipper
from clearly_exporter.traces.spans import AttemptView, SpanSettings
from clearly_exporter.traces.worker import SpanWorker

log = logging.getLogger(__name__)

#: Shared counters, written by the child only: the worker's counts.
COUNTS = ("exported", "queue_full", "export_error", *(f"fetch_{o}" for o in OUTCOMES))
#: The counts that end a span's way, one way or another.
ENDS = ("exported", "queue_full", "export_error")
INDEX = {name: i for i, name in enumerate(COUNTS)}
BATCH = 256
REPORT_EVERY = 0.2
RESTART_EVERY = 5.0
#: While a new span process keeps dying, the wait before the next doubles up to this.
RESTART_MAX = 300.0
#: How long a child orphaned by the exporter's death may take to flush.
ORPHAN_FLUSH = 5.0
#: Sent to the whole process group to stop the exporter: not for the child.
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@dataclass(frozen=True)
class ChildConfig:
    """Everything the child needs, picklable."""

    protocol: str
    endpoint: str
    headers: dict[str, str] | None
    insecure: bool | None
    timeout: float
    backend: str | None
    max_queue: int
    spans: SpanSettings
    resource: dict[str, Any]
    logs: tuple[str, str, tuple[str, ...]] | None


def child_main(reader: Connection, counts: Any, config: ChildConfig) -> None:
    """The span process: views from ``reader`` until a stop message or the pipe closes."""
    # Ctrl-C and SIGTERM reach the whole process group; the exporter decides when to stop.
    # Blocked since before this process existed (see ``SpanProcess.start``): ignored now,
    # any that came meanwhile are discarded as they are unblocked.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if config.logs is not None:
        logs.setup(*config.logs)
    try:
        _serve(reader, counts, config)
    except Exception:
        # Through logging (masked, in the chosen format), not multiprocessing's raw print.
        log.critical("the span process failed", exc_info=True)
        sys.exit(1)


def _serve(reader: Connection, counts: Any, config: ChildConfig) -> None:
    exporter = make_exporter(
        config.protocol, config.endpoint, config.headers, config.insecure, config.timeout
    )
    reported = dict.fromkeys(COUNTS, 0)
    lock = threading.Lock()

    def report() -> None:
        """Counts out as soon as a batch is sent, so /metrics agrees with the collector."""
        with lock:
            _report(counts, reported, worker.counts())

    shipper = SpanShipper(exporter, Encoder(config.resource), config.max_queue, on_export=report)
    fetcher = ResultFetcher(config.backend) if config.backend else None
    worker = SpanWorker(config.spans, shipper, fetcher)
    worker.start()
    deadline = None
    try:
        while deadline is None:
            if reader.poll(REPORT_EVERY):
                message = reader.recv()
                if isinstance(message, float):
                    deadline = message
                    break
                for item in message:
                    worker.handle(AttemptView._make(item))
            report()
    except (EOFError, OSError):  # OSError: the exporter died in the middle of a message
        log.warning("the exporter went away; flushing spans for up to %.0fs", ORPHAN_FLUSH)
    finally:
        worker.stop(deadline or time.monotonic() + ORPHAN_FLUSH)
        report()


def _report(counts: Any, reported: dict[str, int], now: dict[str, int]) -> None:
    """Add what changed since the last report (a restarted child adds to the same totals)."""
    for name, value in now.items():
        delta = value - reported[name]
        if delta:
            counts[INDEX[name]] += delta
            reported[name] = value


class SpanProcess:
    """The exporter's side of the span process (a ``worker.SpanQueue``)."""

    def __init__(self, config: ChildConfig) -> None:
        self.config = config
        self.max_queue = config.max_queue
        self._ctx = multiprocessing.get_context("spawn")
        self._counts = self._ctx.Array("q", len(COUNTS), lock=False)
        self._pending: list[tuple] = []
        self._submitted = 0
        self._refused = 0
        self._lost = 0
        self._started_at = float("-inf")
        self._restart_after = RESTART_EVERY
        self._stopping = False
        self._child: Any = None
        self._outbox: queue.SimpleQueue | None = None

    @property
    def exported(self) -> int:
        return self._counts[INDEX["exported"]]

    @property
    def dropped(self) -> dict[str, int]:
        return {
            "queue_full": self._counts[INDEX["queue_full"]] + self._refused,
            "export_error": self._counts[INDEX["export_error"]] + self._lost,
        }

    @property
    def outcomes(self) -> dict[str, int] | None:
        if self.config.backend is None:
            return None
        return {o: self._counts[INDEX[f"fetch_{o}"]] for o in OUTCOMES}

    def _ended(self) -> int:
        return sum(self._counts[INDEX[name]] for name in ENDS) + self._lost

    def _in_flight(self) -> int:
        """Views submitted and not yet ended: waiting, in the pipe, or in the child."""
        return self._submitted - self._ended()

    def full(self) -> bool:
        return self._in_flight() >= self.max_queue

    def refuse(self) -> None:
        self._refused += 1

    def stalled(self) -> bool:
        return self._outbox is None

    def submit(self, view: AttemptView) -> None:
        self._submitted += 1
        self._pending.append(tuple(view))
        if len(self._pending) >= BATCH:
            self._send_pending()

    def tick(self) -> None:
        if self._child is not None and not self._child.is_alive() and not self._stopping:
            self._on_death()
        if self._pending:
            self._send_pending()

    def _send_pending(self) -> None:
        if self._outbox is not None:
            self._outbox.put(self._pending)
            self._pending = []

    def start(self) -> None:
        reader, writer = self._ctx.Pipe(duplex=False)
        self._child = self._ctx.Process(
            target=child_main,
            args=(reader, self._counts, self.config),
            name="clearly-span-process",
            daemon=True,
        )
        # Blocked in the child from its first instant: a spawned interpreter takes ~0.3 s
        # to reach ``child_main``, and a Ctrl-C to the group meanwhile would kill it.
        # multiprocessing's resource tracker is started first: starting it in the
        # blocked window would unblock them (it blocks and unblocks them for its own).
        resource_tracker.ensure_running()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self._child.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        reader.close()
        if self._started_at == float("-inf"):
            # Without it an interpreter exiting without stop() waits forever on the child
            # (it ignores SIGTERM and its pipe stays open); this runs before that join.
            atexit.register(self._at_exit)
        self._started_at = time.monotonic()
        self._outbox = queue.SimpleQueue()
        threading.Thread(
            target=_write, args=(writer, self._outbox), name="clearly-span-writer", daemon=True
        ).start()

    def _at_exit(self) -> None:
        if not self._stopping:
            self.stop(time.monotonic() + 2)

    def _on_death(self) -> None:
        """Count what the dead child held as lost; start another when due."""
        if self._outbox is not None:
            code = self._child.exitcode
            self._outbox.put(None)
            self._outbox = None
            lost = self._in_flight() - len(self._pending)
            self._lost += lost
            log.error("the span process exited (code %s): %d spans lost", code, lost)
        if time.monotonic() - self._started_at >= self._restart_after:
            # One that lived long was fine until something happened: start again soon.
            lived = time.monotonic() - self._started_at
            self._restart_after = (
                RESTART_EVERY if lived > RESTART_MAX else min(self._restart_after * 2, RESTART_MAX)
            )
            self.start()
            self._send_pending()

    def stop(self, deadline: float) -> None:
        """Send what waits and a stop message; the child flushes until ``deadline``."""
        self._stopping = True
        if self._child is None or self._outbox is None:
            self._lost += max(self._in_flight(), 0)  # no child to take them
            return
        self._send_pending()
        self._outbox.put(deadline)
        self._outbox.put(None)
        self._child.join(max(deadline - time.monotonic(), 0) + 0.5)
        if self._child.is_alive():
            log.warning("the span process did not stop in time; killed")
            self._child.kill()
            self._child.join(1)
        unaccounted = self._in_flight()
        if unaccounted > 0:
            self._lost += unaccounted
            log.warning("%d spans not exported before the stop deadline", unaccounted)


def _write(writer: Connection, outbox: queue.SimpleQueue) -> None:
    """Write batches (and a final stop message) to the child until ``None``."""
    while (item := outbox.get()) is not None:
        try:
            writer.send(item)
        except (OSError, ValueError):
            break  # the child is gone: its spans are counted when its death is seen
    writer.close()
