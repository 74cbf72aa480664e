"""Task states and the rules between them, written as tables.

An attempt's states form a small graph: PENDING → RECEIVED → STARTED → one outcome.
The tables below say which event reaches which state, what each state certainly
passed through (so it can be generated when its event is missing or late), and which
outcomes hand the task over to a next attempt.
"""

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
RETRY = "RETRY"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
CANCELLED = "CANCELLED"

#: The event type each standard task event reaches.
EVENT_STATE: dict[str, str] = {
    "task-sent": PENDING,
    "task-received": RECEIVED,
    "task-started": STARTED,
    "task-succeeded": SUCCESS,
    "task-failed": FAILURE,
    "task-retried": RETRY,
    "task-revoked": REVOKED,
    "task-rejected": REJECTED,
    "task-cancelled": CANCELLED,
}

#: Progress along the graph; outcomes share the last rank.
RANK: dict[str, int] = {
    PENDING: 0,
    RECEIVED: 1,
    STARTED: 2,
    SUCCESS: 3,
    FAILURE: 3,
    RETRY: 3,
    REVOKED: 3,
    REJECTED: 3,
    CANCELLED: 3,
}

#: States an attempt certainly passed before reaching the key state.
IMPLIES: dict[str, tuple[str, ...]] = {
    PENDING: (),
    RECEIVED: (),
    STARTED: (RECEIVED,),
    SUCCESS: (RECEIVED, STARTED),
    FAILURE: (RECEIVED, STARTED),
    RETRY: (RECEIVED, STARTED),
    REVOKED: (),
    REJECTED: (),
    CANCELLED: (),
}

#: Outcomes after which the task never runs again.
FINAL = frozenset({SUCCESS, FAILURE, REVOKED})

#: Outcomes after which the same task comes back as a new attempt, and the state the
#: task waits in meanwhile. REJECTED reopens only when the event says ``requeue``.
REOPENS: dict[str, str] = {RETRY: RETRY, REJECTED: PENDING, CANCELLED: PENDING}

#: States that count as "in progress" for the gauges.
IN_PROGRESS = (PENDING, RECEIVED, STARTED, RETRY)

#: Every known state, in graph order (custom states come after these).
KNOWN = tuple(RANK)

#: Bit of each known state in an attempt's masks.
BIT: dict[str, int] = {state: 1 << i for i, state in enumerate(KNOWN)}
#: Bits that, once an attempt reached them, keep a state out of it: the state's own, and
#: for an outcome every outcome (an attempt has one).
BLOCKS: dict[str, int] = {
    state: BIT[state] | (sum(BIT[s] for s in KNOWN if RANK[s] == 3) if RANK[state] == 3 else 0)
    for state in KNOWN
}
#: ``IMPLIES`` as masks: whether anything is missing is one test.
IMPLIED_BITS: dict[str, int] = {
    state: sum(BIT[implied] for implied in IMPLIES[state]) for state in KNOWN
}


def custom_state(event_type: str) -> str:
    """Name the state of a task event type outside the standard ones.

    ``task-progress-report`` becomes ``PROGRESS_REPORT``; a custom state marks an
    attempt without moving it along the graph.
    """
    return event_type[5:].replace("-", "_").upper() or "CUSTOM"
