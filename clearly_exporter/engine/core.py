"""The engine: turns Celery events into task transitions, counters and worker state.

It owns all state, does no I/O and reads no clock: callers pass the receive time, so
tests drive it deterministically. One lock guards it; the consumer holds it per
message and a scrape only long enough to copy a snapshot.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from clearly_exporter.engine.fields import as_number, as_text
from clearly_exporter.engine.histogram import LAG_BUCKETS, Histogram
from clearly_exporter.engine.inference import current_state, reach, select_attempt
from clearly_exporter.engine.records import HAS_ETA, TaskRecord, Transition
from clearly_exporter.engine.rules import RULES, custom_rule
from clearly_exporter.engine.states import IN_PROGRESS, STARTED
from clearly_exporter.engine.task_metrics import OTHER, UNKNOWN, TaskMetrics, TaskMetricsSnapshot
from clearly_exporter.engine.workers import WorkerRegistry, WorkerView

Listener = Callable[[Transition], None]
Ticker = Callable[[float], None]
Evicted = Callable[[TaskRecord], None]

#: Distinct event types counted by name; beyond, hostile producers fold into "other".
MAX_EVENT_TYPES = 64
#: Task names remembered as sending task-sent events.
MAX_SENDING = 10_000
#: Queues seen in events whose depth is watched; a bound against hostile producers.
MAX_QUEUES = 256


@dataclass(frozen=True)
class EngineConfig:
    max_tasks: int = 100_000
    max_workers: int = 10_000
    max_task_names: int = 1_000
    default_queue: str = "celery"
    name_wait: float = 5.0
    worker_timeout: float | None = None
    worker_purge: float = 86_400.0


@dataclass
class Snapshot:
    """Everything a scrape renders, copied under the lock."""

    tasks: TaskMetricsSnapshot
    workers: list[WorkerView]
    events: dict[str, int]
    events_late: int
    events_invalid: int
    inferred: dict[str, int]
    event_lag: Histogram
    tasks_tracked: int
    tasks_evicted: int
    events_lost: int
    last_event: float | None
    queues: set[str]


class Engine:
    """Celery events in; transitions, metric state and worker liveness out."""

    def __init__(
        self, config: EngineConfig | None = None, trace_of: Callable[[str], str] | None = None
    ) -> None:
        """``trace_of`` maps a root task id to its trace id, for runtime exemplars."""
        self.config = config or EngineConfig()
        self._trace_of = trace_of
        self.lock = threading.Lock()
        self.metrics = TaskMetrics(self.config.max_task_names, self.config.default_queue)
        self.workers = WorkerRegistry(
            self.config.max_workers, self.config.worker_timeout, self.config.worker_purge
        )
        self._tasks: OrderedDict[str, TaskRecord] = OrderedDict()
        self._unlabelled: OrderedDict[str, float] = OrderedDict()
        #: Task names seen in task-sent events: their queue label is worth waiting for.
        self._sends: set[str] = set()
        #: Task names whose labels have been fixed at least once.
        self._labelled: set[str] = set()
        self._listeners: list[Listener] = []
        self._tickers: list[Ticker] = []
        self._evicted: list[Evicted] = []
        self.events: dict[str, int] = {}
        self.events_late = 0
        self.events_invalid = 0
        self.inferred: dict[str, int] = {}
        self.event_lag = Histogram(LAG_BUCKETS)
        self.tasks_evicted = 0
        self.last_event: float | None = None
        self.queues: set[str] = set()

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every transition of a named task, in order.

        The list is replaced, never changed in place, so a listener may come and go
        (under the lock) while the consumer runs.
        """
        self._listeners = [*self._listeners, listener]

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener``: a sink with nobody to serve costs nothing per event."""
        self._listeners = [other for other in self._listeners if other != listener]

    def on_tick(self, ticker: Ticker) -> None:
        """Call ``ticker`` with the time whenever the time-driven rules run."""
        self._tickers.append(ticker)

    def on_evict(self, listener: Evicted) -> None:
        """Call ``listener`` with each task dropped to stay within ``max_tasks``."""
        self._evicted.append(listener)

    def ingest(self, events: Iterable[object], now: float) -> None:
        """Apply a batch of decoded events received at ``now``; bad ones are counted."""
        with self.lock:
            for event in events:
                self.handle(event, now)

    def invalid(self, count: int = 1) -> None:
        """Count events that could not even be decoded."""
        with self.lock:
            self.events_invalid += count

    def handle(self, event: object, now: float) -> None:
        """Apply one event (caller holds the lock, or is single-threaded)."""
        if type(event) is not dict:
            self.events_invalid += 1
            return
        etype = event.get("type")
        if type(etype) is not str or not etype:
            self.events_invalid += 1
            return
        ts = event.get("timestamp")
        if type(ts) is not float or ts - ts != 0.0:
            ts = as_number(ts)
        try:
            if etype[:5] == "task-":
                uuid = event.get("uuid")
                if type(uuid) is not str or not uuid:
                    self.events_invalid += 1
                    return
                self._count_event(etype, ts, now)
                self._task_event(etype, uuid, event, ts, now)
            elif etype[:7] == "worker-":
                if type(event.get("hostname")) is not str:
                    self.events_invalid += 1
                    return
                self._count_event(etype, ts, now)
                self.workers.handle(etype, event, now)
            else:
                self._count_event(etype, ts, now)
        except (RecursionError, ValueError, TypeError, OverflowError):
            self.events_invalid += 1

    def _count_event(self, etype: str, ts: float | None, now: float) -> None:
        events = self.events
        count = events.get(etype)
        if count is None:
            count = 0
            if len(events) >= MAX_EVENT_TYPES:
                etype = "other"
                count = events.get(etype, 0)
        events[etype] = count + 1
        self.last_event = now
        if ts is not None:
            self.event_lag.observe(now - ts if now > ts else 0.0)

    def _task_event(self, etype: str, uuid: str, event: dict, ts: float | None, now: float) -> None:
        rec = self._tasks.get(uuid)
        if rec is None:
            rec = self._tasks[uuid] = TaskRecord(uuid, now)
            if len(self._tasks) > self.config.max_tasks:
                self._evict()
        else:
            self._tasks.move_to_end(uuid)
        rec.updated = now
        rule = RULES.get(etype) or custom_rule(etype)
        retries = event.get("retries") if rule.retries else None
        if retries is not None and (type(retries) is not int or not 0 <= retries < 1 << 31):
            retries = None
        att = select_attempt(rec, rule.state, retries, ts)
        for field in rule.task_fields:
            value = event.get(field)
            if value is not None:
                setattr(rec, field, value if type(value) is str else as_text(value))
        for field in rule.attempt_fields:
            value = event.get(field)
            if value is not None:
                setattr(att, field, value if type(value) is str else as_text(value))
        if rule.worker_side:
            worker = event.get("hostname")
            if type(worker) is str:
                att.worker = worker
                if rule.state == STARTED:
                    self.workers.started(worker)
        if rule.retries and event.get("eta"):
            att.flags |= HAS_ETA
        if rule.runtime:
            att.runtime = as_number(event.get("runtime"))
        if rule.sent:
            self._sent(rec)
        transitions, late = reach(rec, att, rule.state, ts, event.get("requeue") is True)
        if late:
            self.events_late += 1
        rec.state = current_state(rec)
        key = rec.key
        if key is None:
            if not self._labels_known(rec):
                if transitions:
                    if rec.pending is None:
                        rec.pending = []
                        self._unlabelled[uuid] = now
                    rec.pending.extend(transitions)
                return
            key = self._fix_labels(rec, now)
        for tr in transitions:
            self._emit(key, tr)
        self.metrics.observe(key, att, rec.root_id or rec.uuid, self._trace_of)
        self.metrics.place(uuid, key, rec.state, now)

    def _sent(self, rec: TaskRecord) -> None:
        """Remember what a task-sent tells beyond the task: its queue, that its type sends."""
        if rec.queue is not None and len(self.queues) < MAX_QUEUES:
            self.queues.add(rec.queue)
        if rec.name is not None and len(self._sends) < MAX_SENDING:
            self._sends.add(rec.name)

    def _labels_known(self, rec: TaskRecord) -> bool:
        """Name known, and queue known unless its task-sent is not to be expected.

        A task-sent is expected for task types seen sending one, and for the first task
        of a new type in a cluster where task-sent events are seen at all.
        """
        if rec.name is None:
            return False
        if rec.queue is not None:
            return True
        if rec.name in self._sends:
            return False
        return not self._sends or rec.name in self._labelled

    def _fix_labels(self, rec: TaskRecord, now: float) -> tuple[str, str]:
        """Fix the task's labels and release the transitions that waited for them."""
        key = rec.key = self.metrics.label(rec.name, rec.queue)
        if rec.name is not None and len(self._labelled) < MAX_SENDING:
            self._labelled.add(rec.name)
        pending, rec.pending = rec.pending, None
        self._unlabelled.pop(rec.uuid, None)
        for tr in pending or ():
            self._emit(key, tr)
        root = rec.root_id or rec.uuid
        for att in rec.attempts:
            self.metrics.observe(key, att, root, self._trace_of)
        self.metrics.place(rec.uuid, key, rec.state, now)
        return key

    def _emit(self, key: tuple[str, str], tr: Transition) -> None:
        self.metrics.count(key, tr)
        if tr.inferred:
            self.inferred[tr.state] = self.inferred.get(tr.state, 0) + 1
        for listener in self._listeners:
            listener(tr)

    def _evict(self) -> None:
        uuid, rec = self._tasks.popitem(last=False)
        self._unlabelled.pop(uuid, None)
        rec.pending = None
        self.metrics.forget(uuid)
        self.tasks_evicted += 1
        for listener in self._evicted:
            listener(rec)

    def tick(self, now: float) -> None:
        """Time-driven rules: labels waited for too long are fixed as known; purge workers."""
        wait = self.config.name_wait
        while self._unlabelled:
            uuid, since = next(iter(self._unlabelled.items()))
            if now - since < wait:
                break
            self._fix_labels(self._tasks[uuid], now)
        self.workers.purge(now)
        for ticker in self._tickers:
            ticker(now)

    def task(self, uuid: str) -> TaskRecord | None:
        return self._tasks.get(uuid)

    @property
    def tasks_stored(self) -> int:
        """How many tasks are in memory, without copying them."""
        return len(self._tasks)

    def stored_tasks(self) -> list[TaskRecord]:
        """Every stored task, least recently updated first (caller holds the lock)."""
        return list(self._tasks.values())

    def children(self, uuid: str) -> list[str]:
        """Stored tasks sent by task ``uuid`` (not its own retries); a scan, for one task."""
        return [r.uuid for r in self._tasks.values() if r.parent_id == uuid and r.uuid != uuid]

    def seen_task_names(self) -> set[str]:
        """Task names ever counted, plus those of stored tasks past ``max_task_names``."""
        names = {name for name, _, _ in self.metrics.tasks if name not in (OTHER, UNKNOWN)}
        names.update(rec.name for rec in self._tasks.values() if rec.name is not None)
        return names

    def forget_finished(self) -> int:
        """Drop tasks that ended for good; return how many.

        In-flight tasks stay, and so do tasks whose transitions still wait for their
        labels, so no count is lost; counters never go back. A later event of a
        forgotten task starts a new record, as after an eviction.
        """
        done = [
            uuid
            for uuid, rec in self._tasks.items()
            if rec.key is not None and rec.state is not None and rec.state not in IN_PROGRESS
        ]
        for uuid in done:
            del self._tasks[uuid]
            self.metrics.forget(uuid)
        return len(done)

    def snapshot(self, now: float) -> Snapshot:
        """Run the time-driven rules, then copy what a scrape renders."""
        with self.lock:
            self.tick(now)
            return Snapshot(
                tasks=self.metrics.snapshot(),
                workers=self.workers.views(now),
                events=dict(self.events),
                events_late=self.events_late,
                events_invalid=self.events_invalid,
                inferred=dict(self.inferred),
                event_lag=self.event_lag.copy(),
                tasks_tracked=len(self._tasks),
                tasks_evicted=self.tasks_evicted,
                events_lost=self.workers.lost,
                last_event=self.last_event,
                queues=set(self.queues),
            )
