"""The engine's histogram: buckets, and copies a renderer can tell apart."""

from __future__ import annotations

from clearly_exporter.engine.histogram import DURATION_BUCKETS, Histogram


def test_a_copy_is_shared_until_the_next_observation_and_keeps_its_values():
    hist = Histogram(DURATION_BUCKETS)
    hist.observe(0.07, "trace", 1.0)
    first = hist.copy()
    assert hist.copy() is first, "unchanged: the same copy, so a scrape need not render it"
    hist.observe(0.07)
    second = hist.copy()
    assert second is not first
    assert (first.count, second.count) == (1, 2)
    assert first.cumulative()[2][:2] == ("0.1", 1)
    assert second.cumulative()[2][:2] == ("0.1", 2)


def test_a_value_on_a_bound_falls_in_that_bucket():
    hist = Histogram((1.0, 60.0))
    for value in (1.0, 60.0, 61.0):
        hist.observe(value)
    assert [n for _, n, *_ in hist.cumulative()] == [1, 2, 3]
