"""The engine as a whole: bounds, eviction, bad input and the snapshot it renders."""

import math
import random

import pytest

from clearly_exporter.engine import Engine, EngineConfig
from clearly_exporter.engine.core import MAX_EVENT_TYPES
from clearly_exporter.engine.records import call_of
from tests.engine.events import (
    T0,
    counts,
    failed,
    feed,
    in_progress,
    interleaved,
    received,
    retried,
    retried_with_new_args,
    revoked,
    sent,
    started,
    succeeded,
    worker_event,
)


def test_eviction_of_an_in_flight_task_is_counted_and_a_later_event_is_safe():
    engine = feed(
        [received("a", T0), started("a", T0 + 1), received("b", T0 + 2)],
        EngineConfig(max_tasks=1),
    )
    assert engine.task("a") is None
    assert engine.tasks_evicted == 1
    placed = in_progress(engine, T0 + 3)
    assert placed[("app.add", "celery", "STARTED")][0] == 0
    assert placed[("app.add", "celery", "RECEIVED")][0] == 1
    engine.handle(succeeded("a", T0 + 4), T0 + 4)
    assert engine.task("a").state == "SUCCESS"
    assert engine.tasks_evicted == 2


def test_in_progress_gauge_and_oldest_age_follow_the_current_state():
    engine = Engine()
    engine.handle(sent("a", T0), T0)
    engine.handle(sent("b", T0 + 1), T0 + 5)
    engine.handle(received("a", T0 + 2), T0 + 8)
    placed = in_progress(engine, T0 + 10)
    assert placed[("app.add", "q1", "PENDING")] == (1, T0 + 5)
    assert placed[("app.add", "q1", "RECEIVED")] == (1, T0 + 8)
    for i, event in enumerate([started("a", 0), succeeded("a", 0), received("b", 0)]):
        engine.handle(event, T0 + 11 + i)
    engine.handle(started("b", 0), T0 + 20)
    engine.handle(succeeded("b", 0), T0 + 21)
    assert {k: v[0] for k, v in in_progress(engine, T0 + 30).items()} == {
        ("app.add", "q1", "PENDING"): 0,
        ("app.add", "q1", "RECEIVED"): 0,
        ("app.add", "q1", "STARTED"): 0,
    }


def test_task_names_beyond_the_limit_fold_into_other():
    events = [received(f"t{i}", T0, name=f"app.t{i}") for i in range(5)]
    engine = feed(events, EngineConfig(max_task_names=3))
    names = {name for (name, _, _) in engine.metrics.tasks}
    assert names == {"app.t0", "app.t1", "app.t2", "other"}
    assert engine.metrics.tasks[("other", "celery", "RECEIVED")] == 2


def test_malformed_events_are_counted_and_skipped():
    bad = [
        "not a dict",
        {"no": "type"},
        {"type": 5},
        {"type": "task-received"},
        {"type": "task-received", "uuid": ""},
        {"type": "worker-heartbeat", "hostname": None},
        {"type": "task-received", "uuid": "x", "retries": "many", "timestamp": "soon"},
        {"type": "task-succeeded", "uuid": "y", "runtime": "fast", "timestamp": float("nan")},
        {"type": "worker-heartbeat", "hostname": "w", "loadavg": "high", "freq": -1},
    ]
    engine = Engine()
    engine.ingest([*bad, received("ok", T0)], T0)
    assert engine.events_invalid == 6
    assert engine.task("x").attempts[0].retries == 0
    assert engine.task("ok").state == "RECEIVED"
    assert engine.workers.views(T0)[0].freq == 2.0


def test_hostile_event_types_fold_into_other():
    engine = Engine()
    engine.ingest([{"type": f"custom-{i}"} for i in range(200)], T0)
    assert len(engine.events) == 65
    assert engine.events["other"] == 200 - 64


def test_event_lag_uses_receive_time_minus_event_time_clamped_at_zero():
    engine = Engine()
    engine.handle(received("a", T0), T0 + 0.2)
    engine.handle(received("b", T0 + 9), T0)
    assert sum(engine.event_lag.counts) == 2
    assert engine.event_lag.total == pytest.approx(0.2)


def test_a_scrape_takes_the_keys_and_reads_the_values_where_they_are():
    """A scrape renders the series it took, from the slab the engine writes in place:
    nothing is copied under the lock but the keys."""
    engine = feed([received("a", T0)])
    rows = engine.metrics.rows()
    engine.handle(received("b", T0), T0)
    engine.handle(received("c", T0, name="app.mul"), T0)
    assert rows.keys == [("app.add", "celery", "RECEIVED")]
    assert rows.slab.column() == [2, 1], "the values as they are now"
    assert counts(engine) == {"RECEIVED": 3}


def test_queues_seen_in_events_are_remembered_for_depth_probes():
    engine = feed([sent("a", T0, queue="emails"), worker_event("worker-online", "w", T0)])
    assert engine.snapshot(T0).queues == {"emails"}


def test_worker_events_still_apply_once_event_types_fold_into_other():
    engine = Engine()
    engine.ingest([{"type": f"bogus-{i}", "timestamp": T0} for i in range(MAX_EVENT_TYPES)], T0)
    engine.handle(worker_event("worker-online", "w@a", T0), T0)
    assert engine.events["other"] == 1
    assert [w.hostname for w in engine.workers.records()] == ["w@a"]


def test_a_scrape_runs_the_time_driven_rules_but_not_the_consumers_tickers():
    """A garbage collection or a hand-over of spans would make the scrape wait."""
    engine = Engine(EngineConfig(name_wait=1.0))
    ticks: list[float] = []
    engine.on_tick(ticks.append)
    engine.handle(started("a", T0), T0)
    assert in_progress(engine, T0 + 2)[("unknown", "celery", "STARTED")][0] == 1
    assert ticks == []
    engine.tick(T0 + 3)
    assert ticks == [T0 + 3]


def test_each_attempt_keeps_the_args_it_was_sent_with_in_any_arrival_order():
    rng = random.Random(6)
    for _ in range(300):
        events = interleaved(retried_with_new_args(), rng)
        rec = feed(events).task("a")
        calls = {att.retries: call_of(rec, att) for att in rec.attempts}
        expected = {n: (f"({3 - n},)", f"{{'n': {n}}}") for n in range(3)}
        assert calls == expected, [(e["type"], e.get("retries")) for e in events]
        assert [att.outcome for att in rec.attempts] == ["RETRY", "RETRY", "SUCCESS"]


def test_a_task_with_one_attempt_keeps_its_args_once():
    rec = feed(retried_with_new_args()[-1]).task("a")
    (only,) = rec.attempts
    assert only.call is None and call_of(rec, only) == ("(1,)", "{'n': 2}")


def test_a_late_event_without_args_keeps_its_attempts_own():
    events = [event for stream in retried_with_new_args() for event in stream]
    late = received("a", T0 + 11, retries=1)
    del late["args"], late["kwargs"]
    rec = feed([*events, late]).task("a")
    assert [call_of(rec, att)[0] for att in rec.attempts] == ["(3,)", "(2,)", "(1,)"]


def test_tasks_of_one_type_and_queue_share_one_labels_key():
    """Every finished task keeps its labels: one tuple for all of them, built or compiled."""
    engine = feed([sent("a", T0), sent("b", T0), succeeded("a", T0 + 1), sent("c", T0 + 1)])
    key = engine.task("a").key
    assert key == ("app.add", "q1")
    assert engine.task("b").key is key and engine.task("c").key is key


def test_a_snapshot_writes_each_in_progress_series_count_and_oldest_time_in_its_row():
    engine = Engine()
    for event, now in [
        (received("a", T0), T0),
        (received("b", T0 + 1, name="app.mul"), T0 + 1),
        (received("c", T0 + 2), T0 + 2),
    ]:
        engine.handle(event, now)
    placed = engine.metrics.in_progress()
    assert placed.keys == [("app.add", "celery", "RECEIVED"), ("app.mul", "celery", "RECEIVED")]
    assert placed.counts.column() == [2, 1]
    assert placed.since.column("d") == [T0, T0 + 1], "the oldest task's receive time"
    engine.handle(started("a", T0 + 3), T0 + 3)
    engine.handle(started("c", T0 + 3), T0 + 3)
    placed = engine.metrics.in_progress()
    assert placed.counts.column()[0] == 0
    assert math.isnan(placed.since.column("d")[0]), "no task: no time"


@pytest.mark.parametrize("seed", range(5))
def test_in_progress_series_read_between_events_end_as_read_once(seed):
    """A snapshot reads again only the series that changed since the one before: taken
    after every event, the last must still equal one taken only at the end (evictions,
    moves between states, tasks leaving)."""
    rng = random.Random(seed)
    moves = [sent, received, started, succeeded, failed, retried, revoked]
    events = [
        rng.choice(moves)(f"t{rng.randrange(12)}", T0 + i)
        if rng.random() < 0.9
        else received(f"t{rng.randrange(12)}", T0 + i, name="app.mul")
        for i in range(300)
    ]
    config = EngineConfig(max_tasks=8)
    often, once = Engine(config), Engine(config)
    for i, event in enumerate(events):
        often.handle(event, T0 + i)
        once.handle(event, T0 + i)
        often.metrics.in_progress()  # not the engine's snapshot: its rules would differ
    assert in_progress(often, T0 + 400) == in_progress(once, T0 + 400)
    assert sum(count for count, _ in in_progress(once, T0 + 400).values()) > 0


def test_a_task_named_its_own_parent_keeps_the_parent_it_has_or_none():
    """Celery's retry of a task without a parent names the task itself: ignored."""
    engine = feed(
        [
            sent("c", T0, parent_id="p", root_id="p"),
            sent("c", T0 + 1, retries=1, parent_id="c", root_id="p"),
            sent("a", T0),
            sent("a", T0 + 1, retries=1, parent_id="a", root_id="a"),
            sent("5", T0),
            sent("5", T0 + 1, retries=1, parent_id=5),  # the same id, once decoded
        ]
    )
    assert engine.task("c").parent_id == "p" and engine.children("p") == ["c"]
    assert engine.task("a").parent_id is None and engine.children("a") == []
    assert engine.task("5").parent_id is None and engine.children("5") == []


def test_attempts_retried_with_the_same_args_share_one_string():
    events = [dict(event, args="(7,)") for stream in retried_with_new_args() for event in stream]
    rec = feed(events).task("a")
    assert {call_of(rec, att)[0] for att in rec.attempts} == {"(7,)"}
    assert len({id(att.call[0]) for att in rec.attempts}) == 1
