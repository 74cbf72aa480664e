"""The engine: turns Celery events into task transitions, counters and worker state.

It owns all state, does no I/O and reads no clock: callers pass the receive time, so
tests drive it deterministically. One lock guards it; the consumer holds it per
message and a scrape only long enough to copy a snapshot.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from clearly_exporter.engine.fields import COMMON_VALUES, as_number, as_text
from clearly_exporter.engine.histogram import LAG_BUCKETS, Frozen, Histogram
from clearly_exporter.engine.inference import current_state, reach, select_attempt
from clearly_exporter.engine.records import HAS_ETA, Attempt, TaskRecord, Transition
from clearly_exporter.engine.rules import RULES, EventRule, custom_rule
from clearly_exporter.engine.states import IN_PROGRESS, STARTED
from clearly_exporter.engine.task_metrics import (
    OTHER,
    UNKNOWN,
    Key,
    TaskMetrics,
)
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
#: Label-like strings (task names, queues, routing keys, worker names) and label keys
#: held once and shared by every record; beyond, records keep their own copies.
MAX_SHARED = 10_000
#: Longer strings are never shared: a bound on what hostile producers can pin.
MAX_SHARED_LENGTH = 256


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

    workers: list[WorkerView]
    events: dict[str, int]
    events_late: int
    events_invalid: int
    inferred: dict[str, int]
    event_lag: Frozen
    tasks_tracked: int
    tasks_evicted: int
    events_lost: int
    last_event: float | None
    queues: set[str]


def _field_text(value: object) -> str:
    """A task field as the record keeps it: text, common values shared (as inlined in
    ``Engine._task_event``, where a call per field would cost)."""
    text = value if type(value) is str else as_text(value)
    return COMMON_VALUES.get(text, text)


def _pin_calls(rec: TaskRecord, att: Attempt, event: dict) -> None:
    """Each of a retried task's attempts keeps the args it was sent with.

    A retry may change them (``retry(args=...)``), and the next attempt's events often
    arrive before the retried attempt has become a span. Attempts that came before
    keep the task's args as they stand, the event's go to ``att``.
    """
    for other in rec._attempts:  # type: ignore[union-attr]
        if other.call is None:
            other.call = (rec.args, rec.kwargs)
    args, kwargs = att.call  # type: ignore[misc]
    att.call = (_sent_with(event.get("args"), args), _sent_with(event.get("kwargs"), kwargs))


def _sent_with(value: object, kept: str | None) -> str | None:
    """An event's args (or kwargs) as its attempt keeps them: the text it kept when the
    event has none or the same (one string for every attempt of a task retried as it
    was sent)."""
    if value is None:
        return kept
    text = _field_text(value)
    return kept if text == kept else text


class Engine:
    """Celery events in; transitions, metric state and worker liveness out."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        trace_of: Callable[[str], str] | None = None,
        shared: bool = False,
    ) -> None:
        """``trace_of`` maps a root task id to its trace id, for runtime exemplars;
        ``shared``: the metric slabs in memory files, for a render process to map."""
        self.config = config or EngineConfig()
        self._trace_of = trace_of
        self.lock = threading.Lock()
        self.metrics = TaskMetrics(self.config.max_task_names, self.config.default_queue, shared)
        self.workers = WorkerRegistry(
            self.config.max_workers, self.config.worker_timeout, self.config.worker_purge
        )
        self._tasks: OrderedDict[str, TaskRecord] = OrderedDict()
        #: Tasks whose name (or queue) is awaited: since when, and their held transitions.
        self._unlabelled: OrderedDict[str, tuple[float, list[Transition]]] = OrderedDict()
        #: Stored tasks by parent id: the one child's uuid, or a dict (ordered set) of them.
        self._children: dict[str, str | dict[str, None]] = {}
        self._shared: dict[str, str] = {}
        self._keys: dict[Key, Key] = {}
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
        """Call ``ticker`` with the time on each of the consumer's ticks."""
        self._tickers.append(ticker)

    def on_evict(self, listener: Evicted) -> None:
        """Call ``listener`` with each task dropped to stay within ``max_tasks``."""
        self._evicted.append(listener)

    def ingest(self, events: Iterable[object], now: float) -> None:
        """Apply a batch of decoded events received at ``now``; bad ones are counted."""
        with self.lock:
            self._apply(events, now)

    def invalid(self, count: int = 1) -> None:
        """Count events that could not even be decoded."""
        with self.lock:
            self.events_invalid += count

    def handle(self, event: object, now: float) -> None:
        """Apply one event (caller holds the lock, or is single-threaded)."""
        self._apply((event,), now)

    def _apply(self, events: Iterable[object], now: float) -> None:
        """The per-event loop, kept in one frame: it runs for every event received."""
        rules = RULES
        counts = self.events
        for event in events:
            if type(event) is not dict:
                self.events_invalid += 1
                continue
            etype = event.get("type")
            if type(etype) is not str or not etype:
                self.events_invalid += 1
                continue
            ts = event.get("timestamp")
            if type(ts) is not float or ts - ts != 0.0:
                ts = as_number(ts)
            rule = rules.get(etype)
            if rule is None and etype[:5] == "task-":
                rule = custom_rule(etype)
            if rule is not None:
                uuid = event.get("uuid")
                if type(uuid) is not str or not uuid:
                    self.events_invalid += 1
                    continue
            elif etype[:7] == "worker-" and type(event.get("hostname")) is not str:
                self.events_invalid += 1
                continue
            try:
                counted = etype
                count = counts.get(counted)
                if count is None:
                    count = 0
                    if len(counts) >= MAX_EVENT_TYPES:
                        counted = "other"
                        count = counts.get(counted, 0)
                counts[counted] = count + 1
                self.last_event = now
                if ts is not None:
                    self.event_lag.observe(now - ts if now > ts else 0.0)
                if rule is not None:
                    self._task_event(rule, uuid, event, ts, now)  # type: ignore[arg-type]
                elif etype[:7] == "worker-":
                    self.workers.handle(etype, event, now)
            except (RecursionError, ValueError, TypeError, OverflowError):
                self.events_invalid += 1

    def _task_event(
        self, rule: EventRule, uuid: str, event: dict, ts: float | None, now: float
    ) -> None:
        tasks = self._tasks
        rec = tasks.get(uuid)
        if rec is None:
            rec = tasks[uuid] = TaskRecord(uuid, now)
            if len(tasks) > self.config.max_tasks:
                self._evict()
        else:
            tasks.move_to_end(uuid)
        rec.updated = now
        retries = event.get("retries") if rule.retries else None
        if retries is not None and (type(retries) is not int or not 0 <= retries < 1 << 31):
            retries = None
        att = select_attempt(rec, rule.state, retries, ts)
        shared = self._shared
        for field in rule.labels:
            value = event.get(field)
            if value is not None:
                if type(value) is not str:
                    value = as_text(value)
                setattr(rec, field, shared.get(value) or self._share(value))
        if rule.retries and type(rec._attempts) is list:
            _pin_calls(rec, att, event)
        for field in rule.task_fields:
            value = event.get(field)
            if value is not None:
                if type(value) is not str:
                    value = as_text(value)
                setattr(rec, field, COMMON_VALUES.get(value, value))
        if rule.ids:
            self._ids(rec, event)
        for field in rule.attempt_fields:
            value = event.get(field)
            if value is not None:
                setattr(att, field, value if type(value) is str else as_text(value))
        if rule.worker_side:
            worker = event.get("hostname")
            if type(worker) is str:
                att.worker = shared.get(worker) or self._share(worker)
                if rule.state == STARTED:
                    self.workers.started(worker)
        if rule.retries and event.get("eta"):
            att.flags |= HAS_ETA
        if rule.runtime:
            att.runtime = as_number(event.get("runtime"))
        if rule.sent:
            self._sent(rec)
        requeue = rule.requeue and event.get("requeue") is True
        transitions, late = reach(rec, att, rule.state, ts, requeue)
        if late:
            self.events_late += 1
        before = rec.state
        state = rec.state = current_state(rec)
        key = rec.key
        fixing = key is None
        if key is None:
            if not self._labels_known(rec):
                if transitions:
                    waiting = self._unlabelled.get(uuid)
                    if waiting is None:
                        waiting = self._unlabelled[uuid] = (now, [])
                    waiting[1].extend(transitions)
                return
            key = self._fix_labels(rec, now)  # which observes and places the task too
        count = self.metrics.count
        for tr in transitions:
            count(key, tr)
            if tr.inferred:
                self.inferred[tr.state] = self.inferred.get(tr.state, 0) + 1
            for listener in self._listeners:
                listener(tr)
        if not fixing:
            self.metrics.observe(key, att, rec.root_id or uuid, self._trace_of)
            if state != before:
                self.metrics.place(uuid, key, state, now)

    def _share(self, value: str) -> str:
        """The one copy of a label-like string, once there is room to keep it."""
        kept = self._shared.get(value)
        if kept is not None:
            return kept
        if len(self._shared) < MAX_SHARED and len(value) <= MAX_SHARED_LENGTH:
            self._shared[value] = value
        return value

    def _ids(self, rec: TaskRecord, event: dict) -> None:
        """Merge ``root_id`` and ``parent_id``, keeping the children index in step.

        An id naming a stored task (or the task itself, as a root) holds that task's uuid
        string rather than a decoded copy of it.
        """
        uuid = rec.uuid
        root = event.get("root_id")
        if root is not None and root != rec.root_id:
            rec.root_id = self._task_id(root, uuid)
        parent = event.get("parent_id")
        if parent is not None and parent != rec.parent_id:
            parent = self._task_id(parent, uuid)
            # A retry of a task that had no parent names the task itself: Celery takes
            # the task that sends a message for its parent. It is not one; kept, it loops.
            if parent != uuid and parent != rec.parent_id:
                if rec.parent_id is not None:
                    self._unlink(rec)
                rec.parent_id = parent
                self._link(parent, uuid)

    def _task_id(self, value: object, uuid: str) -> str:
        if type(value) is not str:
            return as_text(value)
        if value == uuid:
            return uuid
        other = self._tasks.get(value)
        return value if other is None else other.uuid

    def _link(self, parent: str, child: str) -> None:
        kids = self._children.get(parent)
        if kids is None:
            self._children[parent] = child
        elif isinstance(kids, str):
            if kids != child:
                self._children[parent] = {kids: None, child: None}
        else:
            kids[child] = None

    def _unlink(self, rec: TaskRecord) -> None:
        """Take ``rec`` out of its parent's children (it moves, or leaves the store)."""
        parent = rec.parent_id
        if parent is None:
            return
        kids = self._children.get(parent)
        if isinstance(kids, str):
            if kids == rec.uuid:
                del self._children[parent]
        elif kids is not None:
            kids.pop(rec.uuid, None)
            if len(kids) == 1:
                self._children[parent] = next(iter(kids))

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

    def _fix_labels(self, rec: TaskRecord, now: float) -> Key:
        """Fix the task's labels and release the transitions that waited for them."""
        key = self.metrics.label(rec.name, rec.queue)
        kept = self._keys.get(key)
        if kept is None:
            if len(self._keys) < MAX_SHARED:
                self._keys[key] = key
        else:
            key = kept
        rec.key = key
        if rec.name is not None and len(self._labelled) < MAX_SENDING:
            self._labelled.add(rec.name)
        _, pending = self._unlabelled.pop(rec.uuid, (None, ()))
        for tr in pending:
            self._emit(key, tr)
        root = rec.root_id or rec.uuid
        for att in rec.attempts:
            self.metrics.observe(key, att, root, self._trace_of)
        self.metrics.place(rec.uuid, key, rec.state, now)
        return key

    def _emit(self, key: Key, tr: Transition) -> None:
        self.metrics.count(key, tr)
        if tr.inferred:
            self.inferred[tr.state] = self.inferred.get(tr.state, 0) + 1
        for listener in self._listeners:
            listener(tr)

    def _evict(self) -> None:
        uuid, rec = self._tasks.popitem(last=False)
        self._unlabelled.pop(uuid, None)
        self._unlink(rec)
        self.metrics.forget(uuid)
        self.tasks_evicted += 1
        for listener in self._evicted:
            listener(rec)

    def tick(self, now: float) -> None:
        """The time-driven rules, then the tickers: the consumer's, every ``TICK``."""
        self._rules(now)
        for ticker in self._tickers:
            ticker(now)

    def _rules(self, now: float) -> None:
        """Labels waited for too long are fixed as known; workers long gone are purged."""
        self._fix_waiting(now, self.config.name_wait)
        self.workers.purge(now)

    def settle(self, now: float) -> None:
        """Fix every task's labels as known, however short its wait so far: at shutdown,
        the transitions waiting for them are counted and their attempts become spans."""
        self._fix_waiting(now, -math.inf)

    def _fix_waiting(self, now: float, wait: float) -> None:
        while self._unlabelled:
            uuid, (since, _) = next(iter(self._unlabelled.items()))
            if now - since < wait:
                break
            self._fix_labels(self._tasks[uuid], now)

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
        """Stored tasks sent by task ``uuid`` (not its own retries), first linked first."""
        kids = self._children.get(uuid)
        if kids is None:
            return []
        return [kids] if type(kids) is str else list(kids)

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
            self._unlink(self._tasks.pop(uuid))
            self.metrics.forget(uuid)
        return len(done)

    def snapshot(self, now: float) -> Snapshot:
        """Run the time-driven rules, then copy what a scrape renders; the caller holds
        ``lock`` (and keeps it while rendering: taking it twice a scrape, each time
        behind a consumer that holds the GIL, cost up to 5 ms a try). Not the tickers:
        a garbage collection or a hand-over of spans would make the scrape wait.
        The task families are taken from ``metrics`` family by family, as a scrape
        renders them."""
        self._rules(now)
        return Snapshot(
            workers=self.workers.views(now),
            events=dict(self.events),
            events_late=self.events_late,
            events_invalid=self.events_invalid,
            inferred=dict(self.inferred),
            event_lag=self.event_lag.freeze(),
            tasks_tracked=len(self._tasks),
            tasks_evicted=self.tasks_evicted,
            events_lost=self.workers.lost,
            last_event=self.last_event,
            queues=set(self.queues),
        )
