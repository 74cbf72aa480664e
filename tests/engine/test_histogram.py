"""The engine's histograms: buckets written in place in their slab rows, exemplars taken
only where they changed."""

from __future__ import annotations

from prometheus_client.samples import Exemplar

from clearly_exporter.engine.histogram import DURATION_BUCKETS, Histogram, Histograms, cumulative


def test_a_frozen_copy_keeps_its_values_and_the_histogram_goes_on():
    hist = Histogram(DURATION_BUCKETS)
    hist.observe(0.07, "trace", 1.0)
    first = hist.freeze()
    hist.observe(0.07)
    second = hist.freeze()
    assert (sum(first[0]), sum(second[0])) == (1, 2)
    assert (first[1], second[1]) == (0.07, 0.14)
    assert cumulative(DURATION_BUCKETS, first)[2][:2] == ("0.1", 1)
    assert cumulative(DURATION_BUCKETS, second)[2][:2] == ("0.1", 2)
    assert cumulative(DURATION_BUCKETS, first)[2][2] == Exemplar({"trace_id": "trace"}, 0.07, 1.0)


def test_a_value_on_a_bound_falls_in_that_bucket():
    hist = Histogram((1.0, 60.0))
    for value in (1.0, 60.0, 61.0):
        hist.observe(value)
    assert [n for _, n, *_ in cumulative((1.0, 60.0), hist.freeze())] == [1, 2, 3]


def test_each_histogram_is_a_row_of_its_family_slab_in_the_order_they_came():
    histograms = Histograms(DURATION_BUCKETS)
    histograms.observe(("a",), 0.2)
    histograms.observe(("b",), 2.0)
    histograms.observe(("b",), 3.0)
    table = histograms.table()
    assert table.keys == [("a",), ("b",)]
    slab, buckets = table.slab, len(DURATION_BUCKETS) + 1
    rows = [slab.segment(i).q[slab.cell(i) : slab.cell(i) + buckets].tolist() for i in (0, 1)]
    assert rows == [histograms[("a",)].counts, histograms[("b",)].counts]
    assert (sum(rows[0]), sum(rows[1])) == (1, 2)
    assert slab.segment(1).d[slab.cell(1) + buckets] == 5.0, "the sum after the counts"
    histograms.observe(("c",), 0.5)
    assert table.keys == [("a",), ("b",)], "a table keeps the series it took"


def test_a_table_copies_only_the_exemplars_that_changed_and_says_where():
    histograms = Histograms(DURATION_BUCKETS)
    histograms.observe(("a",), 0.2, "t1", 5.0)
    histograms.observe(("b",), 2.0)
    first = histograms.table()
    assert first.changed == [0] and first.exemplars[1] is None
    assert first.exemplars[0][3] == ("t1", 0.2, 5.0), "trace id, value, timestamp"
    histograms.observe(("b",), 3.0, "t2", 6.0)
    histograms.observe(("b",), 4.0, "t3", 7.0)
    histograms.observe(("a",), 0.3)
    second = histograms.table()
    assert second.changed == [1], "each once; a plain observation marks nothing"
    assert second.exemplars[0] is first.exemplars[0], "unchanged: the same copy"
    assert second.exemplars[1][5] == ("t3", 4.0, 7.0)
    assert first.exemplars[1] is None, "an old table stays as it was"
    assert histograms.table().changed == [], "nothing observed: nothing marked"
