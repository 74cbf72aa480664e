"""The compiled line writer (``_lines``) writes exactly what ``%`` writes from the same
template, for every kind of value a family hands it. It is only built with
``CLEARLY_EXPORTER_COMPILE=1`` (CI's second run); the first run renders with ``%``."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearly_exporter.engine.histogram import DURATION_BUCKETS
from clearly_exporter.metrics.exposition import (
    Verbatim,
    _sum,
    escape,
    exemplar_text,
    histogram_args,
    histogram_templates,
    number,
    pieces,
    scalar_template,
)

_lines = pytest.importorskip("clearly_exporter.metrics._lines")

#: Label values as a family bakes them into its template, a ``%`` among them.
LABEL = st.text(alphabet='ab%ds\\"\n{}=,', max_size=6)
INT = st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
BUCKETS = len(DURATION_BUCKETS) + 1
EXEMPLAR = st.one_of(
    st.none(),
    st.tuples(
        st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
        st.floats(),
        st.one_of(st.none(), st.floats(min_value=0, max_value=2e9)),
    ),
)


@given(keys=st.lists(st.tuples(LABEL, LABEL), min_size=1, max_size=8), data=st.data())
def test_a_scalar_block_is_written_as_percent_writes_it(keys, data) -> None:
    """Ints and finite floats as ``%a``; the rest comes as ``Verbatim`` text (``number``)."""
    template = scalar_template("jobs_total", _labelset, keys, "%a", split=False)
    value = st.one_of(INT, FINITE, st.floats().map(lambda v: Verbatim(number(v))))
    values = data.draw(st.lists(value, min_size=len(keys), max_size=len(keys)))
    assert _lines.fill(pieces(template), values) == template % tuple(values)


@given(
    label=LABEL,
    counts=st.lists(st.integers(0, 2**40), min_size=BUCKETS, max_size=BUCKETS),
    total=st.floats(),
    marks=st.one_of(st.none(), st.lists(EXEMPLAR, min_size=BUCKETS, max_size=BUCKETS)),
    openmetrics=st.booleans(),
)
def test_a_histogram_series_is_written_as_percent_writes_it(
    label, counts, total, marks, openmetrics
) -> None:
    """Cumulative counts, exemplar texts where shown, the count, then the sum (a large,
    infinite or NaN one as Go writes it)."""
    (template,) = _templates([(label,)], openmetrics)
    texts = None
    if openmetrics:
        texts = [exemplar_text(m) for m in marks] if marks else [b""] * BUCKETS
    written = _lines.histogram(pieces(template), counts, _sum(total), texts)
    assert written == template % tuple(histogram_args(counts, total, texts))


ROW = st.tuples(st.lists(st.integers(0, 2**40), min_size=BUCKETS, max_size=BUCKETS), st.floats())


@given(
    rows=st.lists(st.tuples(ROW, st.one_of(st.none(), ROW)), min_size=1, max_size=6),
    first=st.booleans(),
)
def test_histogram_rows_write_only_the_rows_that_changed(rows, first) -> None:
    """Rows of cells as a slab holds them, against the cells last rendered: each one that
    differs (all, the first time) is written as ``%`` writes it, the others are kept."""
    width = BUCKETS + 1

    def cells(row: tuple[list[int], float]) -> bytes:
        return struct.pack(f"{BUCKETS}qd", *row[0], row[1])

    now = b"".join(cells(row) for row, _ in rows)
    before = None if first else b"".join(cells(old or row) for row, old in rows)
    templates = _templates([(str(i),) for i in range(len(rows))], False)
    parts = [b"kept"] * len(rows)
    written = _lines.rows([pieces(t) for t in templates], parts, now, before, width, BUCKETS, _sum)
    changed = [first or (old is not None and cells(old) != cells(row)) for row, old in rows]
    assert written == sum(changed)
    for part, template, ((counts, total), _), redone in zip(
        parts, templates, rows, changed, strict=True
    ):
        expected = template % tuple(histogram_args(counts, total, None)) if redone else b"kept"
        assert part == expected


def _labelset(key: tuple[str, ...]) -> str:
    return ",".join(f'{n}="{escape(v)}"' for n, v in zip(("a", "b"), key, strict=False))


def _templates(keys: list[tuple[str, ...]], exemplars: bool) -> list[bytes]:
    return histogram_templates("runtime", _labelset, DURATION_BUCKETS, keys, exemplars, False)


def test_pieces_keep_an_escaped_percent_as_text() -> None:
    assert pieces(b'a{x="%%d"} %a\nb %d%s\n%%') == (b'a{x="%d"} ', b"\nb ", b"", b"\n%")


def test_counts_beyond_64_bits_are_refused_not_wrapped() -> None:
    """No counter reaches 2**63; should one, the scrape fails rather than lie."""
    with pytest.raises(OverflowError):
        _lines.fill((b"a ", b"\n"), [2**63])
    with pytest.raises(OverflowError):
        _lines.histogram((b"",) * 5, [2**62, 2**62], 0.0, None)
    row = struct.pack("2qd", 2**62, 2**62, 0.0)
    with pytest.raises(OverflowError):
        _lines.rows([(b"",) * 5], [b""], row, None, 3, 2, _sum)


def test_rows_of_sizes_that_do_not_agree_are_refused() -> None:
    row = struct.pack("2qd", 1, 2, 0.5)
    with pytest.raises(ValueError, match="sizes"):
        _lines.rows([(b"",) * 5], [b""], row + b"x", None, 3, 2, _sum)
    with pytest.raises(ValueError, match="sizes"):
        _lines.rows([(b"",) * 5], [b""], row, row[:-1], 3, 2, _sum)
    with pytest.raises(ValueError, match="sizes"):
        _lines.rows([(b"",) * 5], [b"", b""], row, None, 3, 2, _sum)


def test_a_template_of_the_wrong_shape_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 bytes"):
        _lines.fill((b"a", b"b", b"c"), [1])
    with pytest.raises(TypeError, match="list"):
        _lines.fill((b"a", b"b"), [[1]])


def test_the_extremes_of_each_kind_of_value() -> None:
    """The longest int and float ``repr`` there are, and text that is not ASCII refused
    (a label value's non-ASCII text is in the pieces, never among the values)."""
    assert _lines.fill((b"", b" ", b""), [-(2**63), -1.2345678901234567e-308]) == (
        b"%d %a" % (-(2**63), -1.2345678901234567e-308)
    )
    with pytest.raises(TypeError):
        _lines.fill((b"", b""), [Verbatim("é")])


def test_a_template_with_a_conversion_it_does_not_write_is_refused() -> None:
    with pytest.raises(ValueError, match="%f"):
        pieces(b"age %f\n")
