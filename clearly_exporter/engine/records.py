"""The engine's entities: a task, its attempts, a worker, and a transition.

Plain slotted classes: the engine keeps up to millions of them, so each field costs
(see the sizing notes in docs/production.md). A task's only attempt, the common
case, is held without a list around it.
"""

from __future__ import annotations

from typing import NamedTuple

#: Attempt flags (bits of ``Attempt.flags``).
HAS_ETA = 1
SEEN_RUNTIME = 2
SEEN_QUEUE_WAIT = 4
SEEN_PREFETCH = 8
SPAN_DONE = 16
#: Opened before the task's last attempt: a second, different outcome ended an attempt
#: never seen. Its place in the list is not the order it was opened in.
OPENED_LATE = 32


class Attempt:
    """One delivery of a task: its states, their times and its outcome."""

    __slots__ = (
        "retries",
        "state",
        "outcome",
        "reopen",
        "reached",
        "inferred",
        "custom",
        "t_sent",
        "t_received",
        "t_started",
        "t_ended",
        "runtime",
        "worker",
        "exception",
        "traceback",
        "flags",
        "call",
    )

    def __init__(self, retries: int) -> None:
        self.retries = retries
        self.state: str | None = None
        self.outcome: str | None = None
        self.reopen: str | None = None
        self.reached = 0
        self.inferred = 0
        self.custom: set[str] | None = None
        self.t_sent: float | None = None
        self.t_received: float | None = None
        self.t_started: float | None = None
        self.t_ended: float | None = None
        self.runtime: float | None = None
        self.worker: str | None = None
        self.exception: str | None = None
        self.traceback: str | None = None
        self.flags = 0
        #: The args and kwargs it was sent with, once the task has several attempts: a
        #: retry may change them (``retry(args=...)``). None: its task's.
        self.call: tuple[str | None, str | None] | None = None


class TaskRecord:
    """Everything known of one task uuid, across its attempts."""

    __slots__ = (
        "uuid",
        "name",
        "key",
        "queue",
        "exchange",
        "routing_key",
        "args",
        "kwargs",
        "result",
        "root_id",
        "parent_id",
        "eta",
        "expires",
        "_attempts",
        "state",
        "first_seen",
        "updated",
    )

    def __init__(self, uuid: str, now: float) -> None:
        self.uuid = uuid
        self.name: str | None = None
        #: (name, queue) labels of its metrics (``task_metrics.Key``); fixed once, when
        #: the name is known.
        self.key: tuple[str, ...] | None = None
        self.queue: str | None = None
        self.exchange: str | None = None
        self.routing_key: str | None = None
        self.args: str | None = None
        self.kwargs: str | None = None
        self.result: str | None = None
        self.root_id: str | None = None
        self.parent_id: str | None = None
        self.eta: str | None = None
        self.expires: str | None = None
        #: None, the only attempt, or (from the second one on) the list of them.
        self._attempts: Attempt | list[Attempt] | None = None
        self.state: str | None = None
        self.first_seen = now
        self.updated = now

    @property
    def attempts(self) -> list[Attempt]:
        """Its attempts in order; to read only (the engine adds them with ``add_attempt``)."""
        held = self._attempts
        if isinstance(held, list):
            return held
        return [] if held is None else [held]

    def add_attempt(self, index: int, att: Attempt) -> None:
        """Insert ``att`` at ``index`` of the attempts."""
        held = self._attempts
        if held is None:
            self._attempts = att
        elif isinstance(held, list):
            held.insert(index, att)
        else:
            self._attempts = [att, held] if index == 0 else [held, att]


def call_of(rec: TaskRecord, att: Attempt) -> tuple[str | None, str | None]:
    """The args and kwargs ``att`` was sent with (of a task with one attempt: its own)."""
    return att.call or (rec.args, rec.kwargs)


class WorkerRecord:
    """A worker as its heartbeats describe it; liveness uses the receive clock."""

    __slots__ = (
        "hostname",
        "alive_at",
        "last_event",
        "offline",
        "freq",
        "active",
        "processed",
        "loadavg",
        "sw_ident",
        "sw_ver",
        "sw_sys",
        "pid",
        "base",
        "prev",
        "started",
        "missing",
    )

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.alive_at: float | None = None
        self.last_event = 0.0
        self.offline = False
        self.freq = 2.0
        self.active = 0
        self.processed = 0
        self.loadavg: tuple[float, float, float] | None = None
        self.sw_ident = ""
        self.sw_ver = ""
        self.sw_sys = ""
        self.pid = ""
        #: Loss accounting: ``processed`` at the baseline and at the previous heartbeat,
        #: task-started events seen since the baseline, and the shortfall reported.
        self.base: int | None = None
        self.prev = 0
        self.started = 0
        self.missing = 0


class Transition(NamedTuple):
    """Task ``task`` reached ``state`` in ``attempt``, by its own event or inferred.

    ``current`` says whether the state became the task's current state (a late
    event counts its state without moving the task backward).
    """

    task: TaskRecord
    attempt: Attempt
    state: str
    timestamp: float | None
    inferred: bool
    current: bool
