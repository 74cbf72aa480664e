"""The engine's histogram: buckets, and frozen copies a renderer can tell apart."""

from __future__ import annotations

from prometheus_client.samples import Exemplar

from clearly_exporter.engine.histogram import DURATION_BUCKETS, Histogram, Histograms, cumulative


def test_a_frozen_copy_is_shared_until_the_next_observation_and_keeps_its_values():
    hist = Histogram(DURATION_BUCKETS)
    hist.observe(0.07, "trace", 1.0)
    first = hist.freeze()
    assert hist.freeze() is first, "unchanged: the same copy, so a scrape need not render it"
    hist.observe(0.07)
    second = hist.freeze()
    assert second is not first
    assert (sum(first[0]), sum(second[0])) == (1, 2)
    assert cumulative(DURATION_BUCKETS, first)[2][:2] == ("0.1", 1)
    assert cumulative(DURATION_BUCKETS, second)[2][:2] == ("0.1", 2)
    assert cumulative(DURATION_BUCKETS, first)[2][2] == Exemplar({"trace_id": "trace"}, 0.07, 1.0)


def test_a_value_on_a_bound_falls_in_that_bucket():
    hist = Histogram((1.0, 60.0))
    for value in (1.0, 60.0, 61.0):
        hist.observe(value)
    assert [n for _, n, *_ in cumulative((1.0, 60.0), hist.freeze())] == [1, 2, 3]


def test_a_table_freezes_again_only_what_changed_marks_it_and_keeps_the_order():
    histograms = Histograms(DURATION_BUCKETS)
    histograms.observe(("a",), 0.2)
    histograms.observe(("b",), 2.0)
    first = histograms.table()
    assert first.keys == [("a",), ("b",)] and sorted(first.changed) == [0, 1]
    histograms.observe(("b",), 3.0)
    histograms.observe(("c",), 0.01, "trace", 5.0)
    histograms.observe(("b",), 4.0)
    second = histograms.table()
    assert second.keys == list(histograms) == [("a",), ("b",), ("c",)]
    assert sorted(second.changed) == [1, 2], "each changed histogram once, new ones too"
    assert second.generation == first.generation + 1
    assert second.values[0] is first.values[0], "unchanged: the same copy"
    assert first.values[1][1:] == (2.0, None), "an old copy stays as it was"
    assert (sum(second.values[1][0]), second.values[1][1]) == (3, 9.0)
    assert second.values[2][2][0] == ("trace", 0.01, 5.0), "trace id, value, timestamp"
    histograms.observe(("a",), 0.3)
    third = histograms.table()
    assert third.changed == [0] and sum(third.values[0][0]) == 2
    assert third.values[1:] == second.values[1:]
    assert all(a is b for a, b in zip(third.values[1:], second.values[1:], strict=True))
    for hist, (counts, total, _) in zip(histograms.values(), third.values, strict=True):
        assert (counts, total) == (hist.counts, hist.total)
    assert histograms.table().changed == [], "nothing observed: nothing marked"
