"""JSON views of the engine's records, for the API and its stream.

Views are copied from the records under the engine lock (records change as events
come) and redacted outside it: redaction may parse a repr, which is too slow to do
while the consumer waits.
"""

from __future__ import annotations

from typing import Any

from clearly_exporter.engine.records import Attempt, TaskRecord
from clearly_exporter.engine.states import BIT, KNOWN, RANK
from clearly_exporter.engine.workers import WorkerView
from clearly_exporter.traces.redact import Redactor

#: Fields holding Celery's reprs of user values: the ones redaction applies to.
VALUES = ("args", "kwargs", "result", "exception", "traceback")


def state_time(att: Attempt, state: str) -> float | None:
    """When ``att`` reached ``state``, by its event's own timestamp (None if inferred)."""
    rank = RANK.get(state)
    if rank == 0:
        return att.t_sent
    if rank == 1:
        return att.t_received
    if rank == 2:
        return att.t_started
    if rank == 3 and state == att.outcome:
        return att.t_ended
    return None


def task_summary(rec: TaskRecord) -> dict[str, Any]:
    """A task as it stands now, as lists show it (caller holds the lock)."""
    last = rec.attempts[-1] if rec.attempts else None
    timestamp = None
    if last is not None and rec.state is not None:
        timestamp = state_time(last, last.state or rec.state)
    return {
        "uuid": rec.uuid,
        "name": rec.name,
        "state": rec.state,
        "timestamp": timestamp if timestamp is not None else rec.updated,
        "retries": last.retries if last else 0,
        "worker": last.worker if last else None,
        "queue": rec.queue,
        "routing_key": rec.routing_key,
        "args": rec.args,
        "kwargs": rec.kwargs,
        "result": rec.result,
        "exception": last.exception if last else None,
        "traceback": last.traceback if last else None,
        "root_id": rec.root_id,
        "parent_id": rec.parent_id,
        "first_seen": rec.first_seen,
        "updated": rec.updated,
    }


def attempt_view(att: Attempt) -> dict[str, Any]:
    """One attempt: every state it reached, in graph order, generated ones marked."""
    states = [
        {
            "state": state,
            "timestamp": state_time(att, state),
            "inferred": bool(att.inferred & BIT[state]),
        }
        for state in KNOWN
        if att.reached & BIT[state]
    ]
    states += [
        {"state": state, "timestamp": None, "inferred": False} for state in sorted(att.custom or ())
    ]
    return {
        "retries": att.retries,
        "state": att.state,
        "outcome": att.outcome,
        "worker": att.worker,
        "runtime": att.runtime,
        "exception": att.exception,
        "traceback": att.traceback,
        "states": states,
    }


def task_detail(rec: TaskRecord, children: list[str], trace_id: str) -> dict[str, Any]:
    """Everything known of one task (caller holds the lock)."""
    view = task_summary(rec)
    view.update(
        exchange=rec.exchange,
        eta=rec.eta,
        expires=rec.expires,
        children=children,
        trace_id=trace_id,
        attempts=[attempt_view(att) for att in rec.attempts],
    )
    return view


def worker_view(view: WorkerView, now: float, stats: bool) -> dict[str, Any]:
    """A worker as lists show it; ``stats`` adds everything else its heartbeats say."""
    out: dict[str, Any] = {
        "hostname": view.hostname,
        "state": "ONLINE" if view.up else "OFFLINE",
        "last_heartbeat": view.last_heartbeat,
        "heartbeat_age": None if view.last_heartbeat is None else now - view.last_heartbeat,
        "active": view.active,
        "processed": view.processed,
        "loadavg": list(view.loadavg) if view.loadavg is not None else None,
        "sw_ver": view.sw_ver,
    }
    if stats:
        out.update(freq=view.freq, sw_ident=view.sw_ident, sw_sys=view.sw_sys, pid=view.pid)
    return out


def redact(view: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    """Redact the user values of a task view (and of its attempts) in place."""
    for key in VALUES:
        value = view.get(key)
        if value is not None:
            view[key] = redactor(value)
    for att in view.get("attempts", ()):
        redact(att, redactor)
    return view
