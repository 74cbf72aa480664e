"""Families of slab rows: a block is rendered again only where its cells changed, a
histogram row whose exemplar changed is, and ages move where a series has a task."""

from __future__ import annotations

import math
import struct
from array import array
from itertools import accumulate

from hypothesis import given
from hypothesis import strategies as st

from clearly_exporter.engine.histogram import DURATION_BUCKETS, Histograms
from clearly_exporter.engine.slab import Slab
from clearly_exporter.metrics.exposition import histogram_args, histogram_block, histogram_templates
from clearly_exporter.metrics.rows import AgeFamily, CountFamily, HistogramFamily, RowsCache

OPENMETRICS = True


def counts(n: int) -> tuple[CountFamily, Slab]:
    slab = Slab(1)
    for _ in range(n):
        slab.add()
    keys = [(f"k{i}",) for i in range(n)]
    caches = (RowsCache(), RowsCache())
    return CountFamily("c", "doc", "counter", ("k",), keys, slab, caches), slab


def test_a_block_whose_cells_did_not_change_is_the_same_object(monkeypatch):
    monkeypatch.setattr(CountFamily, "block", 2)
    family, slab = counts(5)
    first: list[bytes] = []
    family.render(first, False)
    slab.segment(3).q[slab.cell(3)] += 7
    second: list[bytes] = []
    family.render(second, False)
    assert b"".join(second[1:]) == b'c_total{k="k0"} 0\nc_total{k="k1"} 0\nc_total{k="k2"} 0\n' + (
        b'c_total{k="k3"} 7\nc_total{k="k4"} 0\n'
    )
    assert [a is b for a, b in zip(first[1:], second[1:], strict=True)] == [True, False, True]


def histograms() -> tuple[Histograms, HistogramFamily]:
    engine = Histograms(DURATION_BUCKETS)
    engine.observe(("a",), 0.2, "t1", 5.0)
    engine.observe(("b",), 0.2, "t2", 5.0)
    table = engine.table()
    caches = (RowsCache(), RowsCache())
    family = HistogramFamily(
        "h", "doc", ("k",), table.keys, table.slab, caches, DURATION_BUCKETS, True, table.exemplars
    )
    return engine, family


def series(body: bytes, key: str) -> list[bytes]:
    """The lines of one histogram series."""
    return [line for line in body.splitlines() if f'k="{key}"'.encode() in line]


def test_a_histogram_row_is_rendered_again_where_its_cells_or_its_exemplar_changed():
    engine, family = histograms()
    first: list[bytes] = []
    family.render(first, OPENMETRICS)
    assert b't1"} 0.2 5.0' in first[1]
    engine.observe(("b",), 2.0)
    second: list[bytes] = []
    family.render(second, OPENMETRICS)
    assert series(second[1], "a") == series(first[1], "a")
    assert b'h_count{k="b"} 2' in second[1]
    # An exemplar that came after its cells were read (the render process reads the
    # cells as the consumer writes them) is rendered when it is sent, cells unchanged.
    family.marks[0] = [None] * 3 + [("t9", 0.3, 6.0)] + [None] * 9
    family.forced = frozenset({0})
    third: list[bytes] = []
    family.render(third, OPENMETRICS)
    assert b't9"} 0.3 6.0' in third[1]
    assert series(third[1], "b") == series(second[1], "b")


def test_the_text_format_shows_no_exemplars_and_keeps_rows_an_exemplar_alone_changed():
    _, family = histograms()
    first: list[bytes] = []
    family.render(first, False)
    assert b" # {" not in first[1]
    family.forced = frozenset({0})
    second: list[bytes] = []
    family.render(second, False)
    assert second[1] is first[1]


BOUNDS = (1.0,)
ROW = st.tuples(st.lists(st.integers(0, 2**40), min_size=2, max_size=2), st.floats())


def cells(row: tuple[list[int], float]) -> bytes:
    """A histogram row of ``BOUNDS`` as its slab holds it."""
    return struct.pack("2qd", *row[0], row[1])


@given(rows=st.lists(st.tuples(ROW, st.one_of(st.none(), ROW)), min_size=1, max_size=6))
def test_a_histogram_block_copies_the_rows_whose_cells_did_not_change(rows) -> None:
    """Each row's lines come from the old body where its cells are as they were (there,
    text no template writes), else from its template; where none changed, the old body
    and ends are the ones returned."""
    now = b"".join(cells(row) for row, _ in rows)
    before = b"".join(cells(old or row) for row, old in rows)
    kept = [b"kept %d\n" % i for i in range(len(rows))]
    body, ends = b"".join(kept), array("q", accumulate(map(len, kept))).tobytes()
    keys = [(str(i),) for i in range(len(rows))]
    templates = histogram_templates("h", labelset, BOUNDS, keys, False)
    texts = histogram_templates("h", labelset, BOUNDS, keys, False, split=False)
    new_body, new_ends = histogram_block(templates, body, ends, now, before, 3, 2)
    expected = [
        kept[i] if cells(old or row) == cells(row) else text % tuple(histogram_args(*row, None))
        for i, ((row, old), text) in enumerate(zip(rows, texts, strict=True))
    ]
    assert new_body == b"".join(expected)
    assert new_ends == array("q", accumulate(map(len, expected))).tobytes()
    if expected == kept:
        assert new_body is body and new_ends is ends
    first, _ = histogram_block(templates, None, None, now, None, 3, 2)
    assert first == b"".join(
        text % tuple(histogram_args(*row, None)) for (row, _), text in zip(rows, texts, strict=True)
    )


def labelset(key: tuple[str, ...]) -> str:
    return f'k="{key[0]}"'


def test_ages_are_rendered_again_where_a_series_has_a_task(monkeypatch):
    monkeypatch.setattr(AgeFamily, "block", 2)
    slab = Slab(1)
    for _ in range(4):
        slab.add()
    for row, start in enumerate([math.nan, math.nan, 100.0, math.nan]):
        slab.segment(row).d[slab.cell(row)] = start
    keys = [(f"k{i}",) for i in range(4)]
    caches = (RowsCache(), RowsCache())
    first: list[bytes] = []
    AgeFamily("age", "doc", ("k",), keys, slab, caches, 110.0).render(first, False)
    second: list[bytes] = []
    AgeFamily("age", "doc", ("k",), keys, slab, caches, 112.5).render(second, False)
    assert second[1] is first[1], "no task in the block: every age stays 0"
    assert second[2] == b'age{k="k2"} 12.500\nage{k="k3"} 0.000\n'
