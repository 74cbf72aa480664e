"""Worker liveness from heartbeats, judged on the exporter's own receive clock.

A worker is up while its last heartbeat is younger than the timeout (``--worker-timeout``
or 3 × the worker's own heartbeat interval) and it has not said goodbye. A worker
that went down stays known, reading down, until ``--worker-purge`` has passed, so
that alerts on ``celery_worker_up == 0`` have something to fire on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from clearly_exporter.engine.fields import integer, number, text
from clearly_exporter.engine.records import WorkerRecord

ALIVE = frozenset({"worker-online", "worker-heartbeat"})
OFFLINE = "worker-offline"

#: Called with a worker just changed and the event type that changed it.
WorkerWatcher = Callable[[WorkerRecord, str], None]


@dataclass(frozen=True)
class WorkerView:
    """One worker as rendered for a scrape."""

    hostname: str
    up: bool
    last_heartbeat: float | None
    freq: float
    active: int
    processed: int
    loadavg: tuple[float, float, float] | None
    sw_ident: str
    sw_ver: str
    sw_sys: str
    pid: str


class WorkerRegistry:
    """Owner of every worker record; bounded by ``max_workers`` (least recently seen go)."""

    def __init__(self, max_workers: int, timeout: float | None, purge: float) -> None:
        self.max_workers = max_workers
        self.timeout = timeout
        self.purge_after = purge
        self._workers: OrderedDict[str, WorkerRecord] = OrderedDict()
        self.evicted = 0
        #: Estimated task-started events never received (see ``_account``).
        self.lost = 0
        self._watcher: WorkerWatcher | None = None

    def watch(self, watcher: WorkerWatcher | None) -> None:
        """Call ``watcher`` after each change (``None`` stops): a live view of workers."""
        self._watcher = watcher

    def __len__(self) -> int:
        return len(self._workers)

    def handle(self, etype: str, event: dict, now: float) -> None:
        """Apply a ``worker-*`` event; other worker types (``worker-elect``) change nothing."""
        if etype not in ALIVE and etype != OFFLINE:
            return
        hostname = event["hostname"]
        worker = self._workers.get(hostname)
        if worker is None:
            worker = self._workers[hostname] = WorkerRecord(hostname)
            if len(self._workers) > self.max_workers:
                self._workers.popitem(last=False)
                self.evicted += 1
        else:
            self._workers.move_to_end(hostname)
        worker.last_event = now
        if etype == OFFLINE:
            worker.offline = True
        else:
            worker.offline = False
            worker.alive_at = now
        freq = number(event, "freq")
        if freq is not None and freq > 0:
            worker.freq = freq
        worker.active = integer(event, "active", worker.active)
        processed = event.get("processed")
        if type(processed) is int and etype != OFFLINE:
            self._account(worker, processed)
            worker.processed = processed
        load = event.get("loadavg")
        if isinstance(load, list) and len(load) == 3 and all(_is_number(v) for v in load):
            worker.loadavg = (float(load[0]), float(load[1]), float(load[2]))
        worker.sw_ident = text(event, "sw_ident") or worker.sw_ident
        worker.sw_ver = text(event, "sw_ver") or worker.sw_ver
        worker.sw_sys = text(event, "sw_sys") or worker.sw_sys
        pid = event.get("pid")
        if isinstance(pid, int | str) and not isinstance(pid, bool):
            worker.pid = str(pid)
        if self._watcher is not None:
            self._watcher(worker, etype)

    def started(self, hostname: str) -> None:
        """A task-started from ``hostname``: one task its heartbeats will count."""
        worker = self._workers.get(hostname)
        if worker is not None and worker.base is not None:
            worker.started += 1

    def _account(self, worker: WorkerRecord, processed: int) -> None:
        """Compare a worker's own count of tasks started with the task-started events seen.

        ``processed`` counts tasks the worker accepted since it started. Task events
        leave the worker buffered, behind its heartbeats, so the count of the previous
        heartbeat (two seconds old) is compared, never the fresh one. The shortfall is
        events lost in a gap (a reconnection, a Redis output-buffer cut-off) or never
        sent (a worker without -E); it only grows.
        """
        if worker.base is None or processed < worker.prev:
            worker.base = worker.prev = processed
            worker.started = worker.missing = 0
            return
        missing = worker.prev - worker.base - worker.started
        if missing > worker.missing:
            self.lost += missing - worker.missing
            worker.missing = missing
        worker.prev = processed

    def is_up(self, worker: WorkerRecord, now: float) -> bool:
        if worker.offline or worker.alive_at is None:
            return False
        timeout = self.timeout if self.timeout is not None else 3 * worker.freq
        return now - worker.alive_at <= timeout

    def purge(self, now: float) -> int:
        """Forget workers silent for longer than the purge delay; return how many."""
        stale = [h for h, w in self._workers.items() if now - w.last_event > self.purge_after]
        for hostname in stale:
            del self._workers[hostname]
        return len(stale)

    def records(self) -> list[WorkerRecord]:
        """Every worker record (caller holds the engine lock)."""
        return list(self._workers.values())

    def views(self, now: float) -> list[WorkerView]:
        return [
            WorkerView(
                hostname=w.hostname,
                up=self.is_up(w, now),
                last_heartbeat=w.alive_at,
                freq=w.freq,
                active=w.active,
                processed=w.processed,
                loadavg=w.loadavg,
                sw_ident=w.sw_ident,
                sw_ver=w.sw_ver,
                sw_sys=w.sw_sys,
                pid=w.pid,
            )
            for w in self._workers.values()
        ]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
