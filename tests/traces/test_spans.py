"""Span identity: which attempt a span is, stable while later events change the task."""

from __future__ import annotations

from clearly_exporter.traces.ids import span_id
from clearly_exporter.traces.spans import attempt_key, view_of
from tests.engine.events import (
    T0,
    failed,
    feed,
    received,
    rejected,
    retried_with_new_args,
    started,
    succeeded,
)


def keys(engine, uuid: str) -> list[tuple[str, int, int]]:
    rec = engine.task(uuid)
    return [attempt_key(rec, att) for att in rec.attempts]


def test_an_attempt_opened_late_takes_no_span_id_already_given():
    """A second, different outcome ends an attempt never seen, placed before the last:
    the last attempt keeps its key, and the new one gets one of its own."""
    engine = feed([received("a", T0), started("a", T0 + 1), rejected("a", T0 + 2, False)])
    (exported,) = keys(engine, "a")
    engine.handle(succeeded("a", T0 + 0.5), T0 + 10)
    engine.handle(failed("a", T0 + 0.7), T0 + 11)
    rec = engine.task("a")
    assert [att.outcome for att in rec.attempts] == ["SUCCESS", "FAILURE", "REJECTED"]
    now = keys(engine, "a")
    assert now[-1] == exported, "the span already sent keeps its id"
    assert len({span_id(*key) for key in now}) == 3
    assert now[0] != now[1] != exported


def test_deliveries_in_order_are_numbered_from_zero():
    engine = feed(
        [
            received("a", T0),
            started("a", T0 + 1),
            rejected("a", T0 + 2, True),
            received("a", T0 + 3),
            started("a", T0 + 4),
            succeeded("a", T0 + 5),
        ]
    )
    assert keys(engine, "a") == [("a", 0, 0), ("a", 0, 1)]


def test_each_attempt_of_a_retried_task_shows_the_args_it_was_sent_with():
    """``retry(args=...)``: the next attempt's events come before the retried one is a span."""
    engine = feed([event for stream in retried_with_new_args() for event in stream])
    rec = engine.task("a")
    views = [view_of(rec, att, None) for att in rec.attempts]
    assert [(v.state, v.args, v.kwargs) for v in views] == [
        ("RETRY", "(3,)", "{'n': 0}"),
        ("RETRY", "(2,)", "{'n': 1}"),
        ("SUCCESS", "(1,)", "{'n': 2}"),
    ]


def test_a_retry_naming_the_task_its_own_parent_is_no_child_of_itself():
    """Celery names a task without a parent as its retry's parent: its attempts stay
    siblings at the root of its trace, in any order of arrival, none a parent of another."""
    streams = retried_with_new_args()
    for events in ([e for s in streams for e in s], [e for s in reversed(streams) for e in s]):
        rec = feed(events).task("a")
        views = [view_of(rec, att, None) for att in rec.attempts]
        assert [(v.key, v.parent) for v in views] == [
            (("a", 0, 0), None),
            (("a", 1, 0), None),
            (("a", 2, 0), None),
        ]
