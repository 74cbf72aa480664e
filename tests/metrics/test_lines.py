"""The compiled line writer (``_lines``) writes exactly what ``%`` writes from the same
template, for every kind of value a family hands it. It is only built with
``CLEARLY_EXPORTER_COMPILE=1`` (CI's second run); the first run renders with ``%``."""

from __future__ import annotations

import math
import struct
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearly_exporter.engine.histogram import DURATION_BUCKETS
from clearly_exporter.metrics import exposition
from clearly_exporter.metrics.exposition import (
    Verbatim,
    _sum,
    escape,
    exemplar_text,
    histogram_templates,
    number,
    pieces,
    scalar_template,
)
from clearly_exporter.metrics.rows import MAX_AGE

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


def _cells(counts: list[int], total: float) -> bytes:
    """A histogram row as a slab holds it: its buckets' counts, then its sum."""
    return struct.pack(f"{len(counts)}qd", *counts, total)


HISTOGRAM_ROW = st.tuples(
    st.lists(st.integers(0, 2**40), min_size=BUCKETS, max_size=BUCKETS), st.floats()
)


@given(
    rows=st.lists(st.tuples(HISTOGRAM_ROW, HISTOGRAM_ROW, st.booleans()), max_size=5),
    marks=st.dictionaries(
        st.integers(0, 4), st.lists(EXEMPLAR, min_size=BUCKETS, max_size=BUCKETS), max_size=3
    ),
    openmetrics=st.booleans(),
)
def test_a_block_written_again_is_what_the_python_path_writes(rows, marks, openmetrics) -> None:
    """Rows rendered, then their cells changed (or not) and rendered again from the
    first body: in C as by ``%`` (``histogram_block`` without ``_lines``), with exemplar
    texts where shown, including rows written again for their texts alone."""
    keys = [(str(i),) for i in range(len(rows))]
    split = _templates(keys, openmetrics, split=True)
    whole = _templates(keys, openmetrics)
    first = b"".join(_cells(*row) for row, _, _ in rows)
    then = b"".join(_cells(*(new if moved else row)) for row, new, moved in rows)
    texts = None
    if openmetrics:
        texts = {i: list(map(exemplar_text, m)) for i, m in marks.items() if i < len(rows)}
    width = BUCKETS + 1

    def both(*args):
        written = _lines.block(split, *args[:6], _sum, args[6])
        with patch.object(exposition, "_lines", None):
            assert written == exposition.histogram_block(whole, *args)
        return written

    body, ends = both(None, None, first, None, width, BUCKETS, texts)
    again, again_ends = both(body, ends, then, first, width, BUCKETS, texts)
    if first == then and not texts:
        assert again is body and again_ends is ends


def test_counts_beyond_64_bits_are_refused_not_wrapped() -> None:
    """No counter reaches 2**63; should one, the scrape fails rather than lie."""
    with pytest.raises(OverflowError):
        _lines.fill((b"a ", b"\n"), [2**63])
    row = struct.pack("2qd", 2**62, 2**62, 0.0)
    with pytest.raises(OverflowError):
        _lines.block([(b"",) * 5], None, None, row, None, 3, 2, _sum, None)


def test_blocks_of_sizes_that_do_not_agree_are_refused() -> None:
    row = struct.pack("2qd", 1, 2, 0.5)
    body, ends = _lines.block([(b"",) * 5], None, None, row, None, 3, 2, _sum, None)
    with pytest.raises(ValueError, match="sizes"):
        _lines.block([(b"",) * 5], None, None, row + b"x", None, 3, 2, _sum, None)
    with pytest.raises(ValueError, match="sizes"):
        _lines.block([(b"",) * 5], body, ends, row, row[:-1], 3, 2, _sum, None)
    with pytest.raises(ValueError, match="sizes"):
        _lines.block([(b"",) * 5], body, ends + ends, row, row, 3, 2, _sum, None)
    with pytest.raises(ValueError, match="order"):
        _lines.block(
            [(b"",) * 5], body, struct.pack("q", len(body) + 1), row, row, 3, 2, _sum, None
        )
    with pytest.raises(ValueError, match="tuples of 5"):
        _lines.block([(b"",) * 4], None, None, row, None, 3, 2, _sum, None)
    with pytest.raises(ValueError, match="per bucket"):
        _lines.block([(b"",) * 7], None, None, row, None, 3, 2, _sum, {0: [b""]})


@given(
    keys=st.lists(st.tuples(LABEL, LABEL), min_size=1, max_size=8),
    data=st.data(),
)
def test_a_column_of_counts_is_written_as_percent_writes_it(keys, data) -> None:
    template = scalar_template("jobs_total", _labelset, keys, "%d", split=False)
    values = data.draw(st.lists(INT, min_size=len(keys), max_size=len(keys)))
    cells = struct.pack(f"{len(values)}q", *values)
    assert _lines.counts(pieces(template), cells) == template % tuple(values)


@given(
    keys=st.lists(st.tuples(LABEL, LABEL), min_size=1, max_size=8),
    at=st.floats(0, 2e9),
    data=st.data(),
)
def test_a_column_of_ages_is_written_as_percent_writes_them(keys, at, data) -> None:
    """From start times, any float among them: an age is ``at - start`` to the
    millisecond, or 0 where that is not one (NaN, negative, or from ``MAX_AGE`` on)."""
    template = scalar_template("age", _labelset, keys, "%.3f", split=False)
    starts = data.draw(st.lists(st.floats(), min_size=len(keys), max_size=len(keys)))
    ages = [age if 0.0 < (age := at - start) < MAX_AGE else 0.0 for start in starts]
    cells = struct.pack(f"{len(starts)}d", *starts)
    assert _lines.ages(pieces(template.replace(b"%.3f", b"%a")), cells, at, MAX_AGE) == (
        template % tuple(ages)
    )


def test_a_block_given_what_it_cannot_write_raises_and_writes_nothing() -> None:
    """A sum's text that is not text, lists changed by the texts' own code, widths past
    any row: an error, never a body read or written past its end."""
    row = struct.pack("2qd", 1, 2, 1e7)
    with pytest.raises(TypeError):
        _lines.block([(b"",) * 5], None, None, row, None, 3, 2, lambda total: [0] * 9, None)
    templates = [(b"",) * 7] * 2

    def emptying():
        templates.clear()
        yield from (b"", b"")

    body, _ = _lines.block(templates, None, None, row * 2, None, 3, 2, _sum, {0: emptying()})
    assert body == b"1331e+07" * 2, "both rows, from the templates as they were"
    for width in (2**58, 2**61 + 2):
        with pytest.raises(ValueError, match="sizes"):
            _lines.block([(b"",) * 5] * 8, None, None, b"", None, width, 2, _sum, None)


def test_a_column_needs_a_piece_more_than_its_cells() -> None:
    with pytest.raises(ValueError, match="a piece more"):
        _lines.counts((b"a", b"b", b"c"), struct.pack("q", 1))
    with pytest.raises(ValueError, match="would not fit"):
        _lines.ages((b"a", b"b"), struct.pack("d", 1.0), 2.0, math.inf)


def _labelset(key: tuple[str, ...]) -> str:
    return ",".join(f'{n}="{escape(v)}"' for n, v in zip(("a", "b"), key, strict=False))


def _templates(keys: list[tuple[str, ...]], exemplars: bool, split: bool = False) -> list:
    return histogram_templates("runtime", _labelset, DURATION_BUCKETS, keys, exemplars, split)


def test_pieces_keep_an_escaped_percent_as_text() -> None:
    assert pieces(b'a{x="%%d"} %a\nb %d%s\n%%') == (b'a{x="%d"} ', b"\nb ", b"", b"\n%")


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
