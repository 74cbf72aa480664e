"""Hostile events: wrong types in every field, deep nesting, huge strings, mixed batches.

Nothing raises out of the engine, good events next to bad ones are never lost, and
the counting invariants hold whatever arrives.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearly_exporter.engine import Engine, EngineConfig
from tests.engine.events import T0, received, succeeded

TYPES = [
    "task-sent",
    "task-received",
    "task-started",
    "task-succeeded",
    "task-failed",
    "task-retried",
    "task-revoked",
    "task-rejected",
    "task-cancelled",
    "task-custom",
    "worker-online",
    "worker-heartbeat",
    "worker-offline",
    "worker-elect",
    "bogus",
]
FIELDS = [
    "type",
    "uuid",
    "hostname",
    "timestamp",
    "name",
    "args",
    "kwargs",
    "result",
    "retries",
    "root_id",
    "parent_id",
    "eta",
    "expires",
    "queue",
    "exception",
    "traceback",
    "runtime",
    "requeue",
    "freq",
    "active",
    "processed",
    "loadavg",
    "sw_ident",
    "sw_ver",
    "pid",
    "clock",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.just("y" * 2500),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)
uuids = st.sampled_from(["a", "b", "c", ""]) | st.integers() | st.none()
events = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | values, "uuid": uuids},
    optional={field: values for field in FIELDS if field not in ("type", "uuid")}
    | {"parent_id": st.sampled_from(["a", "b", "c", "good"]) | values},
)
bodies = st.lists(st.one_of(events, values), max_size=12)


def deep(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=bodies)
def test_nothing_raises_and_good_neighbours_are_kept(batch):
    engine = Engine(EngineConfig(max_tasks=5, max_workers=3, name_wait=0.0))
    good = [received("good", T0), succeeded("good", T0 + 1)]
    engine.ingest([*batch, *good], T0)
    engine.tick(T0 + 10)
    rec = engine.task("good")
    assert rec is not None and rec.state == "SUCCESS"
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for (name, queue, state), n in engine.metrics.tasks.items():
        counts.setdefault((name, queue), {})[state] = n
    for by_state in counts.values():
        ends = sum(by_state.get(s, 0) for s in ("SUCCESS", "FAILURE", "RETRY"))
        assert by_state.get("RECEIVED", 0) >= by_state.get("STARTED", 0) >= ends
    snapshot = engine.snapshot(T0 + 20)
    assert snapshot.tasks_tracked <= 5
    stored = engine.stored_tasks()
    for parent in {rec.parent_id for rec in stored if rec.parent_id is not None}:
        expected = {rec.uuid for rec in stored if rec.parent_id == parent and rec.uuid != parent}
        assert set(engine.children(parent)) == expected
    assert len(engine._children) <= len(stored)


def test_deep_nesting_and_huge_values_are_survived():
    engine = Engine()
    nasty = [
        {"type": "task-received", "uuid": "d", "name": "n", "args": deep(5000)},
        {"type": "task-received", "uuid": "h", "name": "x" * 1_000_000, "kwargs": {"k": deep(50)}},
        {"type": "worker-heartbeat", "hostname": "w", "loadavg": deep(3000)},
        received("ok", T0),
    ]
    engine.ingest(nasty, T0)
    assert engine.task("ok").state == "RECEIVED"
    assert engine.events_invalid <= 2
