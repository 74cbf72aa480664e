"""Task metric state: counters, histograms and in-progress sets, keyed by labels.

Aggregated here rather than in prometheus_client so the hot path is a cell update; the
large families' values live in slabs (``slab``), which a scrape reads where they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from clearly_exporter.engine.histogram import DURATION_BUCKETS, Histograms
from clearly_exporter.engine.records import (
    HAS_ETA,
    SEEN_PREFETCH,
    SEEN_QUEUE_WAIT,
    SEEN_RUNTIME,
    Attempt,
    Transition,
)
from clearly_exporter.engine.slab import Slab
from clearly_exporter.engine.states import FAILURE, IN_PROGRESS, SUCCESS

#: A task's labels: (name, queue), held once and shared by every task that has them.
#: Typed as any tuple of str, here and below, so that mypyc keeps each one object: a
#: fixed-length tuple is unboxed and boxed anew wherever it goes.
Key = tuple[str, ...]
#: A series with its state: (name, queue, state).
StateKey = tuple[str, ...]
#: Root task id → trace id, for exemplars; asked only when an observation is made.
TraceOf = Callable[[str], str]

OTHER = "other"
#: An in-progress series' oldest time when it has no task.
NAN = float("nan")
UNKNOWN = "unknown"


def exception_class(exception: str | None) -> str:
    """``"ValueError('x')"`` → ``"ValueError"``: the repr Celery sends, cut at its call."""
    if not exception:
        return UNKNOWN
    return exception.split("(", 1)[0].strip()[:200] or UNKNOWN


class Rows(NamedTuple):
    """A family's series as a scrape takes them: their keys, and their rows by position."""

    keys: list[StateKey]
    slab: Slab


class InProgress(NamedTuple):
    """The in-progress series by position: each one's tasks (``counts``), and since when
    the oldest of them is there (``since``, NaN when it has none)."""

    keys: list[StateKey]
    counts: Slab
    since: Slab


class Bucket:
    """One in-progress series: its tasks since when, oldest first, where its count and
    oldest time go in the in-progress slabs, and whether it changed since the last
    snapshot."""

    __slots__ = ("tasks", "counts", "since", "cell", "dirty")

    def __init__(self, counts: Slab, since: Slab) -> None:
        #: Plain dicts keep insertion order, and are quicker than ``OrderedDict`` both to
        #: update and to ask for their first key.
        self.tasks: dict[str, float] = {}
        # Room in both first: the two slabs' rows stay in step if either cannot grow.
        counts.reserve()
        since.reserve()
        row = counts.add()
        since.add()
        #: Its cells, held here: a scrape writes those of every bucket that changed.
        self.counts = counts.segment(row).q
        self.since = since.segment(row).d
        self.cell = counts.cell(row)
        self.dirty = False


class TaskMetrics:
    """Owner of every task metric; fed transitions and attempts of labelled tasks."""

    def __init__(self, max_names: int, default_queue: str, shared: bool = False) -> None:
        """``shared``: the slabs in memory files, for a render process to map."""
        self.max_names = max_names
        self.default_queue = default_queue
        self._names: set[str] = set()
        #: ``celery_tasks``: each series' row in ``_counted``, in the order they came.
        self._rows: dict[StateKey, int] = {}
        self._keys: list[StateKey] = []
        self._counted = Slab(1, shared)
        self.failures: dict[StateKey, int] = {}
        self.runtime = Histograms(DURATION_BUCKETS, shared)
        self.queue_wait = Histograms(DURATION_BUCKETS, shared)
        self.prefetch_wait = Histograms(DURATION_BUCKETS, shared)
        self._buckets: dict[StateKey, Bucket] = {}
        self._placed: dict[str, StateKey] = {}
        #: The in-progress series by row: their tasks and oldest times as the last snapshot
        #: left them; only the buckets changed since (``_changed``) are read again: reading
        #: all 16,000 at 1,000 names took 7 ms of a quiet scrape's 12 under the engine lock.
        self._series: list[StateKey] = []
        self._counts = Slab(1, shared)
        self._since = Slab(1, shared)
        self._changed: list[Bucket] = []

    @property
    def tasks(self) -> dict[StateKey, int]:
        """``celery_tasks`` as a dict: a copy, for queries and tests (rows come in the
        order of their keys)."""
        return dict(zip(self._keys, self._counted.column(), strict=True))

    def label(self, name: str | None, queue: str | None) -> Key:
        """Fix a task's labels: its name (``other`` past ``max_names``) and queue."""
        name = name or UNKNOWN
        if name != UNKNOWN and name not in self._names:
            if len(self._names) < self.max_names:
                self._names.add(name)
            else:
                name = OTHER
        return (name, queue or self.default_queue)

    def count(self, key: Key, tr: Transition) -> None:
        state_key = (key[0], key[1], tr.state)
        slab = self._counted
        row = self._rows.get(state_key)
        if row is None:
            row = self._rows[state_key] = slab.add()
            self._keys.append(state_key)
        slab.segment(row).q[slab.cell(row)] += 1
        if tr.state == FAILURE:
            fkey = (key[0], key[1], exception_class(tr.attempt.exception))
            self.failures[fkey] = self.failures.get(fkey, 0) + 1

    def observe(
        self, key: Key, att: Attempt, root: str = "", trace_of: TraceOf | None = None
    ) -> None:
        """Record the attempt's durations that became known; each at most once."""
        flags = att.flags
        if not flags & SEEN_RUNTIME and att.outcome is not None:
            value = att.runtime if att.outcome == SUCCESS else None
            if value is None and att.t_started is not None and att.t_ended is not None:
                value = att.t_ended - att.t_started
            if value is not None:
                att.flags |= SEEN_RUNTIME
                trace = trace_of(root) if trace_of is not None else None
                self.runtime.observe(
                    (key[0], key[1], att.outcome), max(value, 0.0), trace, att.t_ended
                )
        if flags & HAS_ETA:
            return
        if not flags & SEEN_QUEUE_WAIT and att.t_sent is not None and att.t_received is not None:
            att.flags |= SEEN_QUEUE_WAIT
            self.queue_wait.observe(key, max(att.t_received - att.t_sent, 0.0))
        if not flags & SEEN_PREFETCH and att.t_received is not None and att.t_started is not None:
            att.flags |= SEEN_PREFETCH
            self.prefetch_wait.observe(key, max(att.t_started - att.t_received, 0.0))

    def place(self, uuid: str, key: Key, state: str | None, now: float) -> None:
        """Move a task into the in-progress set of its state (or out of all of them)."""
        old = self._placed.get(uuid)
        new = (key[0], key[1], state) if state in IN_PROGRESS else None
        if old == new:
            return
        bucket = None
        if new is not None:
            bucket = self._buckets.get(new)
            if bucket is None:
                # First: its memory may not be had (OSError), and nothing has changed yet.
                bucket = self._buckets[new] = Bucket(self._counts, self._since)
                self._series.append(new)
        if old is not None:
            self._leave(old, uuid)
            if new is None:
                del self._placed[uuid]
        if bucket is not None and new is not None:
            bucket.tasks[uuid] = now
            if not bucket.dirty:
                bucket.dirty = True
                self._changed.append(bucket)
            self._placed[uuid] = new

    def forget(self, uuid: str) -> None:
        """Drop an evicted task from the in-progress sets."""
        old = self._placed.pop(uuid, None)
        if old is not None:
            self._leave(old, uuid)

    def _leave(self, key: StateKey, uuid: str) -> None:
        bucket = self._buckets[key]
        del bucket.tasks[uuid]
        if not bucket.dirty:
            bucket.dirty = True
            self._changed.append(bucket)

    def rows(self) -> Rows:
        """``celery_tasks``: its keys as they are, and its slab."""
        return Rows(self._keys.copy(), self._counted)

    def in_progress(self) -> InProgress:
        """The series' counts and oldest times, brought up to date in their rows where
        they changed (a scrape takes each family as it renders it: ``rows``, the
        histograms' tables, this)."""
        for bucket in self._changed:
            tasks, cell = bucket.tasks, bucket.cell
            bucket.counts[cell] = len(tasks)
            bucket.since[cell] = tasks[next(iter(tasks))] if tasks else NAN
            bucket.dirty = False
        self._changed.clear()
        return InProgress(self._series.copy(), self._counts, self._since)
