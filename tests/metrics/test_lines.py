"""The compiled line writer (``_lines``) writes exactly what ``%`` writes from the same
template, for every kind of value a family hands it. It is only built with
``CLEARLY_EXPORTER_COMPILE=1`` (CI's second run); the first run renders with ``%``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearly_exporter.engine.histogram import DURATION_BUCKETS
from clearly_exporter.metrics.exposition import (
    Caches,
    HistogramFamily,
    ScalarFamily,
    Verbatim,
    _sum,
    _values,
    exemplar_text,
    number,
    pieces,
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
    family = ScalarFamily("jobs", "d", "counter", ("a", "b"), [], [], Caches().of("jobs"))
    template = family._text(keys)
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
    family = HistogramFamily(
        "runtime", "d", ("name",), [], [], Caches().of("runtime"), DURATION_BUCKETS, True
    )
    (template,) = family._texts([(label,)], openmetrics)
    hist = (counts, total, marks)
    texts = None
    if openmetrics:
        texts = [exemplar_text(m) for m in marks] if marks else [b""] * BUCKETS
    written = _lines.histogram(pieces(template), counts, _sum(total), texts)
    assert written == template % tuple(_values(hist, openmetrics))


def test_pieces_keep_an_escaped_percent_as_text() -> None:
    assert pieces(b'a{x="%%d"} %a\nb %d%s\n%%') == (b'a{x="%d"} ', b"\nb ", b"", b"\n%")


def test_counts_beyond_64_bits_are_refused_not_wrapped() -> None:
    """No counter reaches 2**63; should one, the scrape fails rather than lie."""
    with pytest.raises(OverflowError):
        _lines.fill((b"a ", b"\n"), [2**63])
    with pytest.raises(OverflowError):
        _lines.histogram((b"",) * 5, [2**62, 2**62], 0.0, None)


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
