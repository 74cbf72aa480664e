"""State inference: orderings, duplicates, retries, revokes, rejects, custom types."""

from itertools import permutations

import pytest

from clearly_exporter.engine.states import FINAL
from tests.engine.events import (
    T0,
    counts,
    failed,
    feed,
    in_progress,
    received,
    rejected,
    retried,
    retried_with_new_args,
    revoked,
    sent,
    started,
    succeeded,
    task_event,
)

LIFE = [sent("a", T0), received("a", T0 + 1), started("a", T0 + 2), succeeded("a", T0 + 3, 1.0)]


@pytest.mark.parametrize("order", list(permutations(range(4))))
def test_every_arrival_order_gives_the_same_counts_and_state(order):
    # Task-sent events seen in the cluster, so a task received before its task-sent
    # waits for the queue label the sent event has.
    engine = feed([sent("earlier", T0 - 10)] + [LIFE[i] for i in order])
    assert counts(engine) == {"PENDING": 2, "RECEIVED": 1, "STARTED": 1, "SUCCESS": 1}
    assert {queue for (_, queue, _) in engine.metrics.tasks} == {"q1"}
    rec = engine.task("a")
    assert rec.state == "SUCCESS"
    assert rec.name == "app.add"
    assert len(rec.attempts) == 1
    att = rec.attempts[0]
    assert (att.t_sent, att.t_received, att.t_started, att.t_ended) == (
        T0,
        T0 + 1,
        T0 + 2,
        T0 + 3,
    )
    hist = engine.metrics.runtime[("app.add", "q1", "SUCCESS")]
    assert sum(hist.counts) == 1
    assert sum(engine.metrics.queue_wait[("app.add", "q1")].counts) == 1
    assert sum(engine.metrics.prefetch_wait[("app.add", "q1")].counts) == 1


def test_inferred_states_are_marked_and_counted():
    engine = feed([succeeded("a", T0 + 3), received("a", T0 + 1)])
    assert engine.inferred == {"RECEIVED": 1, "STARTED": 1}
    att = engine.task("a").attempts[0]
    assert att.t_received == T0 + 1, "a late event brings its real timestamp"
    assert counts(engine) == {"RECEIVED": 1, "STARTED": 1, "SUCCESS": 1}


def test_duplicates_change_nothing():
    once = feed(LIFE)
    twice = feed(LIFE + LIFE + [LIFE[2], LIFE[3]])
    assert counts(twice) == counts(once)
    assert twice.task("a").state == "SUCCESS"
    assert len(twice.task("a").attempts) == 1
    assert twice.events_late == 6


def test_two_retries_then_success():
    events = [
        sent("a", T0, retries=0),
        received("a", T0 + 1, retries=0),
        started("a", T0 + 2),
        sent("a", T0 + 2.5, retries=1),
        retried("a", T0 + 3),
        received("a", T0 + 4, retries=1),
        started("a", T0 + 5),
        sent("a", T0 + 5.5, retries=2),
        retried("a", T0 + 6),
        received("a", T0 + 7, retries=2),
        started("a", T0 + 8),
        succeeded("a", T0 + 9),
    ]
    engine = feed(events)
    assert counts(engine) == {
        "PENDING": 3,
        "RECEIVED": 3,
        "STARTED": 3,
        "RETRY": 2,
        "SUCCESS": 1,
    }
    rec = engine.task("a")
    assert [a.retries for a in rec.attempts] == [0, 1, 2]
    assert [a.outcome for a in rec.attempts] == ["RETRY", "RETRY", "SUCCESS"]
    assert engine.inferred == {}
    assert rec.state == "SUCCESS"


def test_retry_when_the_new_attempt_outruns_the_old_one():
    """The retried task's next attempt is seen before the old attempt's own events."""
    events = [
        received("a", T0 + 1, retries=0),
        received("a", T0 + 4, retries=1),
        started("a", T0 + 2),
        retried("a", T0 + 3),
        started("a", T0 + 5),
        succeeded("a", T0 + 6),
    ]
    engine = feed(events)
    assert counts(engine) == {"RECEIVED": 2, "STARTED": 2, "RETRY": 1, "SUCCESS": 1}
    assert [a.outcome for a in engine.task("a").attempts] == ["RETRY", "SUCCESS"]
    assert engine.inferred == {}


def test_a_late_received_of_an_earlier_attempt_is_stamped_on_that_attempt():
    """Its retries name the attempt: the last one, long past RECEIVED, is not it."""
    producer, *workers = retried_with_new_args()
    late = workers[1].pop(0)  # attempt 1's task-received, held back
    engine = feed([*producer, *(event for worker in workers for event in worker), late])
    rec = engine.task("a")
    assert [a.retries for a in rec.attempts] == [0, 1, 2]
    assert [a.t_received for a in rec.attempts] == [T0 + 1, T0 + 11, T0 + 21]
    assert engine.events_late == 1


def test_retry_whose_next_attempt_is_received_before_the_retried_event():
    """With a countdown the worker receives the next message before it reports the retry."""
    events = [
        sent("a", T0, retries=0),
        received("a", T0 + 1, retries=0),
        started("a", T0 + 2),
        sent("a", T0 + 3, retries=1, eta="2030-01-01T00:00:00"),
        received("a", T0 + 3.001, retries=1, eta="2030-01-01T00:00:00"),
        retried("a", T0 + 3.002),
        started("a", T0 + 4),
        succeeded("a", T0 + 5),
    ]
    engine = feed(events)
    assert counts(engine) == {
        "PENDING": 2,
        "RECEIVED": 2,
        "STARTED": 2,
        "RETRY": 1,
        "SUCCESS": 1,
    }
    assert [a.outcome for a in engine.task("a").attempts] == ["RETRY", "SUCCESS"]


def test_lost_events_of_an_old_attempt_never_take_the_final_outcome():
    events = [
        received("a", T0 + 1, retries=0),
        received("a", T0 + 4, retries=1),
        started("a", T0 + 5),
        succeeded("a", T0 + 6),
    ]
    engine = feed(events)
    rec = engine.task("a")
    assert rec.state == "SUCCESS"
    assert rec.attempts[-1].outcome == "SUCCESS"
    engine.snapshot(T0 + 7)
    assert not any(engine.metrics.in_progress().counts.column())


def test_task_waiting_for_its_retry_is_in_progress_as_retry():
    engine = feed([received("a", T0, retries=0), started("a", T0 + 1), retried("a", T0 + 2)])
    assert engine.task("a").state == "RETRY"
    assert in_progress(engine, T0 + 10)[("app.add", "celery", "RETRY")][0] == 1


def test_revoked_before_delivery_generates_no_started():
    engine = feed([sent("a", T0), revoked("a", T0 + 1)])
    assert counts(engine) == {"PENDING": 1, "REVOKED": 1}
    assert engine.task("a").state == "REVOKED"


@pytest.mark.parametrize("requeue", [False, True])
def test_rejected_after_started(requeue):
    events = [received("a", T0), started("a", T0 + 1), rejected("a", T0 + 2, requeue)]
    engine = feed(events)
    assert counts(engine) == {"RECEIVED": 1, "STARTED": 1, "REJECTED": 1}
    rec = engine.task("a")
    assert rec.state == ("PENDING" if requeue else "REJECTED")
    redelivered = [received("a", T0 + 3), started("a", T0 + 4), succeeded("a", T0 + 5)]
    for i, event in enumerate(redelivered):
        engine.handle(event, T0 + 10 + i)
    if requeue:
        assert counts(engine) == {"RECEIVED": 2, "STARTED": 2, "REJECTED": 1, "SUCCESS": 1}
        assert rec.state == "SUCCESS"
    else:
        # Events after a final rejection are late; SUCCESS is a second outcome of an
        # attempt never seen, so it opens an earlier one and the state stays REJECTED.
        assert rec.state == "REJECTED"
        assert counts(engine)["SUCCESS"] == 1


def test_cancelled_and_custom_event_types_are_counted_never_raise():
    events = [
        received("a", T0),
        started("a", T0 + 1),
        task_event("task-progress", "a", T0 + 1.5, done=50),
        task_event("task-progress", "a", T0 + 1.6, done=60),
        task_event("task-cancelled", "a", T0 + 2),
    ]
    engine = feed(events)
    assert counts(engine) == {"RECEIVED": 1, "STARTED": 1, "PROGRESS": 1, "CANCELLED": 1}
    assert engine.events["task-progress"] == 2
    assert engine.task("a").state == "PENDING", "a cancelled task waits to be delivered again"


def test_late_retry_after_failure_keeps_failure():
    events = [received("a", T0), started("a", T0 + 1), failed("a", T0 + 3), retried("a", T0 + 2)]
    engine = feed(events)
    rec = engine.task("a")
    assert rec.state == "FAILURE"
    c = counts(engine)
    assert c == {"RECEIVED": 2, "STARTED": 2, "RETRY": 1, "FAILURE": 1}
    assert engine.metrics.failures[("app.add", "celery", "ValueError")] == 1


@pytest.mark.parametrize(
    "first",
    [succeeded("a", T0), failed("a", T0), retried("a", T0), revoked("a", T0), started("a", T0)],
    ids=lambda e: e["type"],
)
def test_first_event_of_an_unknown_uuid(first):
    engine = feed([first])
    rec = engine.task("a")
    assert rec.name is None
    assert counts(engine) == {}, "transitions wait for the task's name"
    engine.tick(T0 + 1)
    assert counts(engine) == {}
    engine.handle(received("a", T0 - 1, name="app.late"), T0 + 2)
    expected_state = {"task-started": "STARTED", "task-revoked": "REVOKED"}.get(
        first["type"], rec.attempts[0].outcome
    )
    assert rec.state == expected_state
    assert all(name == "app.late" for (name, _, _) in engine.metrics.tasks)
    assert counts(engine)["RECEIVED"] == 1


def test_name_never_comes_counts_as_unknown_after_the_wait():
    engine = feed([started("a", T0), succeeded("a", T0 + 1)])
    engine.tick(T0 + 4.9)
    assert counts(engine) == {}
    engine.tick(T0 + 5.1)
    assert counts(engine) == {"RECEIVED": 1, "STARTED": 1, "SUCCESS": 1}
    assert {name for (name, _, _) in engine.metrics.tasks} == {"unknown"}
    engine.handle(received("a", T0, name="app.add"), T0 + 6)
    assert counts(engine) == {"RECEIVED": 1, "STARTED": 1, "SUCCESS": 1}
    assert engine.task("a").name == "app.add"


def test_funnel_holds_for_every_final_outcome():
    events = []
    for i, outcome in enumerate([succeeded, failed, retried]):
        uuid = f"t{i}"
        events += [outcome(uuid, T0 + 3), started(uuid, T0 + 2), received(uuid, T0 + 1)]
    c = counts(feed(events))
    assert c["RECEIVED"] == c["STARTED"] == c["SUCCESS"] + c["FAILURE"] + c["RETRY"] == 3


def test_final_states_are_those_of_the_table():
    assert {"SUCCESS", "FAILURE", "REVOKED"} == set(FINAL)


def test_queue_label_waits_for_task_sent_only_where_one_is_expected():
    engine = feed([received("a", T0, name="app.quiet")])
    assert ("app.quiet", "celery", "RECEIVED") in engine.metrics.tasks, "no task-sent seen yet"
    engine.handle(sent("b", T0, name="app.loud"), T0)
    engine.handle(received("c", T0 + 1, name="app.loud"), T0 + 1)
    assert ("app.loud", "celery", "RECEIVED") not in engine.metrics.tasks, "app.loud sends"
    engine.handle(received("d", T0 + 1, name="app.new"), T0 + 1)
    assert ("app.new", "celery", "RECEIVED") not in engine.metrics.tasks, "new in a sending cluster"
    engine.handle(sent("d", T0, name="app.new", queue="q9"), T0 + 2)
    assert engine.metrics.tasks[("app.new", "q9", "RECEIVED")] == 1
    engine.handle(received("e", T0 + 3, name="app.quiet"), T0 + 3)
    assert engine.metrics.tasks[("app.quiet", "celery", "RECEIVED")] == 2, "known not to send"
    engine.tick(T0 + 7)
    assert engine.metrics.tasks[("app.loud", "celery", "RECEIVED")] == 1
