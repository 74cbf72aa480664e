"""When an attempt becomes a span: shortly after it ends, or when it is given up on.

An ended attempt waits ``grace`` seconds for late events (a task-started arriving after
its task-succeeded), then becomes a span; one whose every event has come (task-sent,
task-received, task-started and its outcome, none inferred) has nothing to wait for and
becomes a span on the next tick. Attempts that never end are exported as incomplete
when evicted or older than ``span_max_age``, never lost silently. While the span queue
is full, ended attempts wait for room, up to ``max_waiting`` of them.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

from clearly_exporter.engine import Engine, TaskRecord, Transition
from clearly_exporter.engine.records import SPAN_DONE, Attempt
from clearly_exporter.engine.states import BIT, RANK
from clearly_exporter.traces.spans import view_of
from clearly_exporter.traces.worker import SpanQueue

#: How often a flush at shutdown looks for room in a full span queue: the span process
#: frees room as it exports, and says so through shared counters, not a wake-up.
ROOM_POLL = 0.01
#: The states whose own events, with the outcome's, leave nothing late to wait for.
WHOLE = BIT["PENDING"] | BIT["RECEIVED"] | BIT["STARTED"]


def whole(att: Attempt) -> bool:
    """Whether every event of the ended attempt came (a duplicate changes nothing)."""
    seen = att.reached & ~att.inferred
    return seen & WHOLE == WHOLE and bool(seen & BIT.get(att.outcome or "", 0))


class TraceSink:
    """Engine listener owning the attempts waiting to become spans."""

    def __init__(
        self,
        engine: Engine,
        spans: SpanQueue,
        grace: float = 1.0,
        span_max_age: float = 3600.0,
        max_waiting: int = 20_000,
    ) -> None:
        self.engine = engine
        self.spans = spans
        self.grace = grace
        self.span_max_age = span_max_age
        self.max_waiting = max_waiting
        self._due: deque[tuple[float, TaskRecord, Attempt]] = deque()
        #: Ended attempts with nothing left to wait for but room in the span queue. A
        #: burst the span process cannot keep up with waits here instead of being
        #: dropped (holding records the engine may have evicted meanwhile); past
        #: ``max_waiting`` the oldest are.
        self._ready: deque[tuple[TaskRecord, Attempt]] = deque()
        self._open: OrderedDict[Attempt, tuple[float, TaskRecord]] = OrderedDict()
        engine.subscribe(self.on_transition)
        engine.on_tick(self.tick)
        engine.on_evict(self.on_evict)

    def on_transition(self, tr: Transition) -> None:
        att = tr.attempt
        if att.flags & SPAN_DONE:
            return
        if RANK.get(tr.state) == 3:
            self._open.pop(att, None)
            if whole(att):
                self._ready.append((tr.task, att))
            else:
                self._due.append((tr.task.updated + self.grace, tr.task, att))
        elif att not in self._open and att.outcome is None:
            self._open[att] = (tr.task.updated, tr.task)

    def tick(self, now: float) -> None:
        ready = self._ready
        while self._due and self._due[0][0] <= now:
            _, rec, att = self._due.popleft()
            ready.append((rec, att))
        while ready and not self.spans.full():
            self._export(*ready.popleft())
        while len(ready) > self.max_waiting:
            self._export(*ready.popleft())  # the queue is full: counted as dropped
        while self._open:
            att, (since, rec) = next(iter(self._open.items()))
            if now - since < self.span_max_age:
                break
            del self._open[att]
            self._export(rec, att, incomplete=True)
        self.spans.tick()

    def on_evict(self, rec: TaskRecord) -> None:
        for att in rec.attempts:
            self._open.pop(att, None)
            if att.outcome is not None and self.spans.full():
                # Ended: it waits for room like the rest (an entry already waiting or
                # exported is skipped by its SPAN_DONE).
                self._ready.append((rec, att))
            else:
                self._export(rec, att, incomplete=att.outcome is None)

    def flush(self, until: float) -> None:
        """Export every ended attempt now (at shutdown), without waiting for the grace.

        While the span queue is full they wait for room, until ``until`` (monotonic);
        those still waiting then are dropped (``queue_full``).
        """
        waiting = self._ready
        waiting.extend((rec, att) for _, rec, att in self._due)
        self._due.clear()
        while waiting and (not self.spans.full() or self._room_by(until)):
            self._export(*waiting.popleft())
        while waiting:
            self._export(*waiting.popleft())

    def _room_by(self, until: float) -> bool:
        """Wait for the span queue to have room; False if it has none by ``until``, or
        nothing takes views any more (a dead span process not due for a restart)."""
        while self.spans.full():
            self.spans.tick()  # what is pending goes out, so room can come
            left = until - time.monotonic()
            if left <= 0 or self.spans.stalled():
                return False
            time.sleep(min(ROOM_POLL, left))
        return True

    def _export(self, rec: TaskRecord, att: Attempt, incomplete: bool = False) -> None:
        if att.flags & SPAN_DONE:
            return
        att.flags |= SPAN_DONE
        if self.spans.full():
            self.spans.refuse()
            return
        parent = self.engine.task(rec.parent_id) if rec.parent_id else None
        self.spans.submit(view_of(rec, att, parent, incomplete))
