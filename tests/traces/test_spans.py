"""Span identity: which attempt a span is, stable while later events change the task."""

from __future__ import annotations

from clearly_exporter.traces.ids import span_id
from clearly_exporter.traces.spans import attempt_key
from tests.engine.events import T0, failed, feed, received, rejected, started, succeeded


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
