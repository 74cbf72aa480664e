"""clearly's state inference: which attempt an event belongs to, what it reaches.

Pure functions over a ``TaskRecord``. The rules come from ``states``; this module
only applies them, so that every arrival order of the same events ends in the same
counted states and the same current state.
"""

from __future__ import annotations

from clearly_exporter.engine.records import OPENED_LATE, Attempt, TaskRecord, Transition
from clearly_exporter.engine.states import (
    BIT,
    BLOCKS,
    FINAL,
    IMPLIED_BITS,
    IMPLIES,
    RANK,
    REJECTED,
    REOPENS,
    RETRY,
)

#: Transitions are made on every event: built as plain tuples, skipping NamedTuple's
#: Python-level constructor.
_new = tuple.__new__


def fits(attempt: Attempt, state: str) -> bool:
    """Whether ``state`` can still happen in ``attempt`` (not reached, no 2nd outcome)."""
    blocks = BLOCKS.get(state)
    if blocks is None:
        return attempt.custom is None or state not in attempt.custom
    return not attempt.reached & blocks


def select_attempt(rec: TaskRecord, state: str, retries: int | None, ts: float | None) -> Attempt:
    """The attempt an event belongs to, opening one when the event proves a new one.

    Only task-sent and task-received carry ``retries``; other events go to the oldest
    attempt that can still take their state (a retried task's next message is often
    seen before the old attempt's own started and retried events, so "the last
    attempt" would be wrong). An attempt followed by another ended in a way that
    brought the task back, so a final outcome never goes to it.
    """
    only = rec._attempts
    if type(only) is Attempt and (retries is None or only.retries == retries) and fits(only, state):
        return only  # the common case: one attempt, and the event fits it
    attempts = rec.attempts
    if not attempts:
        return _insert(rec, 0, retries or 0)
    for i, att in enumerate(attempts):
        if retries is not None and att.retries != retries:
            continue
        if fits(att, state) and not (state in FINAL and i + 1 < len(attempts)):
            return att
    last = attempts[-1]
    if retries is not None and retries > last.retries:
        return _insert(rec, len(attempts), retries)
    if retries is not None and all(att.retries != retries for att in attempts):
        before = next(i for i, att in enumerate(attempts) if att.retries > retries)
        return _insert(rec, before, retries)
    if last.reopen is not None and (ts is None or last.t_ended is None or ts > last.t_ended):
        next_retries = last.retries + 1 if last.outcome == RETRY else last.retries
        if retries is None or retries == next_retries:
            return _insert(rec, len(attempts), next_retries)
    if RANK.get(state) == 3 and last.outcome is not None and state != last.outcome:
        # A second, different outcome: it ended an earlier attempt we never saw.
        att = _insert(rec, len(attempts) - 1, last.retries)
        att.flags |= OPENED_LATE
        return att
    if retries is not None:
        # Late for an attempt of its own (its retries say which), not for the last one.
        return next(att for att in reversed(attempts) if att.retries == retries)
    return last


def _insert(rec: TaskRecord, index: int, retries: int) -> Attempt:
    att = Attempt(retries)
    rec.add_attempt(index, att)
    return att


def reach(
    rec: TaskRecord, att: Attempt, state: str, ts: float | None, requeue: bool = False
) -> tuple[list[Transition], bool]:
    """Make ``att`` reach ``state``; return the transitions and whether it was late.

    Missing predecessors are generated (``IMPLIES``); a state already reached only
    gains its real timestamp; a state behind the current one is counted but does not
    move the task back.
    """
    bit = BIT.get(state)
    if bit is None:
        if att.custom is None:
            att.custom = set()
        if state in att.custom:
            return [], True
        att.custom.add(state)
        return [_new(Transition, (rec, att, state, ts, False, False))], False
    if att.reached & bit:
        _stamp(att, state, ts)
        return [], True
    out = []
    implied_bits = IMPLIED_BITS[state]
    for implied in IMPLIES[state] if att.reached & implied_bits != implied_bits else ():
        ibit = BIT[implied]
        if not att.reached & ibit:
            att.reached |= ibit
            att.inferred |= ibit
            advance = att.state is None or RANK[implied] > RANK[att.state]
            if advance:
                att.state = implied
            out.append(_new(Transition, (rec, att, implied, None, True, advance)))
    att.reached |= bit
    _stamp(att, state, ts)
    advance = att.state is None or RANK[state] > RANK[att.state]
    if RANK[state] == 3:
        att.outcome = state
        if state != REJECTED or requeue:
            att.reopen = REOPENS.get(state)
    if advance:
        att.state = state
    out.append(_new(Transition, (rec, att, state, ts, False, advance)))
    return out, not advance


def _stamp(att: Attempt, state: str, ts: float | None) -> None:
    if ts is None:
        return
    rank = RANK[state]
    if rank == 0:
        att.t_sent = ts
    elif rank == 1:
        att.t_received = ts
    elif rank == 2:
        att.t_started = ts
    elif att.outcome is None or att.outcome == state:
        att.t_ended = ts


def current_state(rec: TaskRecord) -> str | None:
    """The task's state: its last attempt's, or the state it waits in to come back."""
    last = rec._attempts
    if isinstance(last, list):
        last = last[-1]
    elif last is None:
        return None
    return last.reopen or last.state
