"""What each task event type brings, as data (as celery.events.state's merge rules).

One lookup per event gives the state it reaches and every field it merges, so the
hot path runs no per-type branches.
"""

from __future__ import annotations

from dataclasses import dataclass

from clearly_exporter.engine.states import EVENT_STATE, custom_state

_SENT_FIELDS = ("args", "kwargs", "eta", "expires")


@dataclass(frozen=True)
class EventRule:
    state: str
    #: Fields copied onto the task record.
    task_fields: tuple[str, ...] = ()
    #: Fields copied onto the task record whose few distinct values records share.
    labels: tuple[str, ...] = ()
    #: Carries ``root_id`` and ``parent_id`` (ids of other tasks).
    ids: bool = False
    #: Fields copied onto the attempt.
    attempt_fields: tuple[str, ...] = ()
    #: Sent by the worker running the attempt (its ``hostname`` is the attempt's worker).
    worker_side: bool = True
    #: Carries ``retries`` and ``eta`` (task-sent and task-received).
    retries: bool = False
    #: Carries the worker's own ``runtime``.
    runtime: bool = False
    #: A task-sent: names the queue, shows the task type sends task-sent events.
    sent: bool = False
    #: Carries ``requeue`` (task-rejected: whether the task comes back).
    requeue: bool = False


RULES: dict[str, EventRule] = {etype: EventRule(state) for etype, state in EVENT_STATE.items()}
RULES.update(
    {
        "task-rejected": EventRule("REJECTED", requeue=True),
        "task-sent": EventRule(
            "PENDING",
            _SENT_FIELDS,
            ("name", "queue", "exchange", "routing_key"),
            ids=True,
            worker_side=False,
            retries=True,
            sent=True,
        ),
        "task-received": EventRule("RECEIVED", _SENT_FIELDS, ("name",), ids=True, retries=True),
        "task-succeeded": EventRule("SUCCESS", ("result",), runtime=True),
        "task-failed": EventRule("FAILURE", attempt_fields=("exception", "traceback")),
        "task-retried": EventRule("RETRY", attempt_fields=("exception", "traceback")),
    }
)

#: Rules of custom task event types seen so far; a bound against hostile producers.
_CUSTOM: dict[str, EventRule] = {}
MAX_CUSTOM = 64


def custom_rule(etype: str) -> EventRule:
    """The rule of a task event type outside Celery's: a mark in its own state."""
    rule = _CUSTOM.get(etype)
    if rule is None:
        rule = EventRule(custom_state(etype))
        if len(_CUSTOM) < MAX_CUSTOM:
            _CUSTOM[etype] = rule
    return rule
