"""The engine's histogram: buckets, and copies a renderer can tell apart."""

from __future__ import annotations

from clearly_exporter.engine.histogram import DURATION_BUCKETS, Histogram, Histograms


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


def test_a_snapshot_copies_again_only_what_changed_and_keeps_the_order():
    table = Histograms(DURATION_BUCKETS)
    table.observe(("a",), 0.2)
    table.observe(("b",), 2.0)
    first = table.snapshot()
    assert list(first) == [("a",), ("b",)]
    table.observe(("b",), 3.0)
    table.observe(("c",), 0.01, "trace", 5.0)
    table.observe(("b",), 4.0)
    second = table.snapshot()
    assert list(second) == list(table) == [("a",), ("b",), ("c",)]
    assert second[("a",)] is first[("a",)], "unchanged: the same copy"
    assert first[("b",)].count == 1 and first[("b",)].total == 2.0, "an old copy stays as it was"
    assert second[("b",)].count == 3 and second[("b",)].total == 9.0
    assert second[("c",)].exemplars[0].labels == {"trace_id": "trace"}
    table.observe(("a",), 0.3)
    third = table.snapshot()
    assert third[("a",)].count == 2 and third[("a",)] is not second[("a",)]
    assert third[("b",)] is second[("b",)] and third[("c",)] is second[("c",)]
    for key, hist in table.items():
        assert (third[key].counts, third[key].total) == (hist.counts, hist.total)
