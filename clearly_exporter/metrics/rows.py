"""The engine's large families rendered from their slabs: rows of cells read in place.

``celery_tasks``, the in-progress gauges and the three task histograms are 98 % of a
scrape at 1,000 task names. Their values live in slabs (``engine.slab``) that the render
process maps, so a scrape sends it only the keys added since the last one (and, with
tracing, the exemplars that changed). A block of rows whose cells are byte for byte as
they were at the last rendering is reused as it is; in one that changed, a histogram
renders again only the rows that changed.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

from prometheus_client.samples import Sample

from clearly_exporter.engine.histogram import TraceExemplar, cumulative
from clearly_exporter.engine.slab import CELL, Slab
from clearly_exporter.metrics.exposition import (
    Block,
    CachedFamily,
    Key,
    SeriesCache,
    Spec,
    _lines,
    emit,
    exemplar_text,
    histogram_block,
    histogram_templates,
    scalar_template,
)

#: An age block's cells where none of its series has a task: NaN starts.
NO_START = struct.pack("d", math.nan) * CachedFamily.block
#: Ages from this on (31,700 years) come from a start that is not a time: shown as 0, and
#: ``%.3f`` writes every other in at most 17 characters.
MAX_AGE = 1e12
#: Per position, a histogram's exemplars by bucket (None: none yet).
Exemplars = list[list[TraceExemplar | None] | None]


class Run(NamedTuple):
    """A block's rows: the first one's position, their cells as read now (what the block
    is rendered from), those it was last rendered from (None: never), and the rows (by
    index in the block) to render again whatever their cells."""

    start: int
    now: bytes
    before: bytes | None
    forced: Collection[int]


class RowsCache(SeriesCache):
    """A rows family's blocks as last rendered, and the cells they were rendered from."""

    def __init__(self) -> None:
        super().__init__()
        #: Per block, its rows' cells as last rendered (None: render it whole).
        self.cells: list[bytes | None] = []

    def clear(self) -> None:
        super().clear()
        self.cells = []

    def truncate(self, blocks: int) -> None:
        super().truncate(blocks)
        del self.cells[blocks:]

    def add(self, block: Block) -> None:
        super().add(block)
        self.cells.append(None)


class RowsFamily(CachedFamily):
    """Series whose values are the rows of ``slab``, by position."""

    def __init__(
        self,
        name: str,
        documentation: str,
        typ: str,
        labels: tuple[str, ...],
        keys: list[Key],
        slab: Slab,
        caches: tuple[SeriesCache, SeriesCache],
    ) -> None:
        super().__init__(name, documentation, typ, labels, keys, caches)
        self.slab = slab
        #: Positions to render again even if their cells did not change (their exemplars
        #: did).
        self.forced: frozenset[int] = frozenset()

    @property
    def spec(self) -> Spec:
        return Spec(False, self.name, self.documentation, self.type, self.labels, width=1)

    def render(self, out: list[bytes], openmetrics: bool) -> None:
        """Append the family's header and its blocks to ``out``; a block is rendered again
        where its cells are not the ones it was rendered from."""
        out.append(self._header(openmetrics))
        cache = self.caches[openmetrics]
        assert isinstance(cache, RowsCache)
        keys, slab, size = self.keys, self.slab, self.block
        if slab.per_segment % size:
            raise ValueError(f"{self.name}: blocks of {size} rows straddle its segments")
        span = slab.width * CELL
        with cache.lock:
            blocks, cells = self._blocks(cache, keys, openmetrics), cache.cells
            forced: dict[int, set[int]] = {}
            for position in self.forced:
                forced.setdefault(position // size, set()).add(position % size)
            for index, start in enumerate(range(0, len(keys), size)):
                segment, cell = slab.segment(start), slab.cell(start)
                rows = min(size, len(keys) - start)
                now = segment.raw[cell * CELL : cell * CELL + rows * span].tobytes()
                before = cells[index]
                if now != before or index in forced or self._moving(now):
                    run = Run(start, now, before, forced.get(index, ()))
                    self._fill_rows(blocks[index], run, openmetrics)
                    cells[index] = now
            emit(out, blocks)

    def _moving(self, cells: bytes) -> bool:
        """Whether rows with these cells read differently from one scrape to the next
        even when their cells are the same."""
        return False

    def _fill_rows(self, block: Block, run: Run, openmetrics: bool) -> None:
        """Render ``block.body`` from its rows (``run``)."""
        raise NotImplementedError

    def _column(self, cast: str) -> list:
        """Every row's first cell, by position, as counts (``q``) or floats (``d``)."""
        return self.slab.column(cast, len(self.keys))


class CountFamily(RowsFamily):
    """A counter or gauge of counts, a cell a row (``celery_tasks``, tasks in progress)."""

    def _template(self, keys: Sequence[Key], openmetrics: bool) -> Any:
        return scalar_template(self.sample_name, self.labelset, keys, "%a")

    def _fill_rows(self, block: Block, run: Run, openmetrics: bool) -> None:
        if _lines is not None:
            block.body = _lines.counts(block.template, run.now)
        else:
            block.body = block.template % tuple(memoryview(run.now).cast("q").tolist())

    @property
    def samples(self) -> list[Sample]:
        """For prometheus_client's encoders: the same series as ordinary samples."""
        name, labels = self.sample_name, self.labels
        return [
            Sample(name, dict(zip(labels, key, strict=True)), value)
            for key, value in zip(self.keys, self._column("q"), strict=True)
        ]


class AgeFamily(RowsFamily):
    """A gauge of ages: its cells are start times (NaN: no start, age 0), worked out as
    ages at ``at`` only when rendered, so start times are written only when they change.

    Ages are written to the millisecond, ``%.3f``: every one is written again every scrape,
    and a float's shortest ``repr`` took three times as long (16,000 ages: 6.4 against
    1.9 ms). A millisecond is finer than any panel or alert reads an age.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...],
        keys: list[Key],
        slab: Slab,
        caches: tuple[SeriesCache, SeriesCache],
        at: float,
    ) -> None:
        super().__init__(name, documentation, "gauge", labels, keys, slab, caches)
        self.at = at

    @property
    def spec(self) -> Spec:
        return super().spec._replace(at=self.at)

    def _template(self, keys: Sequence[Key], openmetrics: bool) -> Any:
        """Pieces for ``_lines.ages`` where it is built (split at any placeholder), else a
        template for ``%``."""
        placeholder = "%.3f" if _lines is None else "%a"
        return scalar_template(self.sample_name, self.labelset, keys, placeholder)

    def _moving(self, cells: bytes) -> bool:
        """Ages grow with time, but where no series of the block has a task (most, at
        1,000 task names): those stay 0."""
        return cells != NO_START[: len(cells)]

    def ages(self, starts: Sequence[float]) -> list[float]:
        """Never negative, under ``MAX_AGE``: 0 for no start (NaN), a start after ``at``,
        or one that is not a time (as ``_lines.ages`` works them out)."""
        at = self.at
        return [age if 0.0 < (age := at - start) < MAX_AGE else 0.0 for start in starts]

    def _fill_rows(self, block: Block, run: Run, openmetrics: bool) -> None:
        if _lines is not None:
            block.body = _lines.ages(block.template, run.now, self.at, MAX_AGE)
        else:
            starts = memoryview(run.now).cast("d").tolist()
            block.body = block.template % tuple(self.ages(starts))

    @property
    def samples(self) -> list[Sample]:
        labels, ages = self.labels, self.ages(self._column("d"))
        return [
            Sample(self.name, dict(zip(labels, key, strict=True)), round(age, 3))
            for key, age in zip(self.keys, ages, strict=True)
        ]


class HistogramFamily(RowsFamily):
    """Histogram series: per-bucket counts, then the sum, a row each; exemplars (if
    ``exemplars``) only in OpenMetrics, from ``marks``."""

    #: A histogram's 15 lines are ~1.7 KB.
    block = 32

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...],
        keys: list[Key],
        slab: Slab,
        caches: tuple[SeriesCache, SeriesCache],
        bounds: tuple[float, ...],
        exemplars: bool = False,
        marks: Exemplars | None = None,
    ) -> None:
        super().__init__(name, documentation, "histogram", labels, keys, slab, caches)
        self.bounds = bounds
        self.exemplars = exemplars
        self.marks: Exemplars = marks if marks is not None else []
        #: Which of the engine's tables ``forced`` comes from: the positions whose
        #: exemplars changed since the table before (0: not from one).
        self.generation = 0

    @property
    def spec(self) -> Spec:
        return Spec(
            True,
            self.name,
            self.documentation,
            self.type,
            self.labels,
            self.bounds,
            self.exemplars,
            width=self.slab.width,
        )

    def _template(self, keys: Sequence[Key], openmetrics: bool) -> list:
        return histogram_templates(
            self.name, self.labelset, self.bounds, keys, openmetrics and self.exemplars
        )

    def _fill_rows(self, block: Block, run: Run, openmetrics: bool) -> None:
        """Only the rows whose cells (or exemplars) changed are written again."""
        texts = self._texts(run, len(block.template)) if openmetrics and self.exemplars else None
        block.body, block.ends = histogram_block(
            block.template,
            block.body,
            block.ends,
            run.now,
            run.before,
            self.slab.width,
            len(self.bounds) + 1,
            texts,
        )

    def _texts(self, run: Run, rows: int) -> dict[int, list[bytes]]:
        """The exemplar texts of the block's rows to write again, by index in the block:
        the ``forced`` ones (written again whatever their cells), and those whose cells
        changed and have exemplars (any other the C call finds changed shows none)."""
        start, now, before, forced = run
        span = self.slab.width * CELL
        redo: Collection[int] = range(rows)
        if before is not None:
            changed = (
                i
                for i in redo
                if now[i * span : (i + 1) * span] != before[i * span : (i + 1) * span]
            )
            redo = {*forced, *changed}
        marks, none = self.marks, [b""] * (len(self.bounds) + 1)
        texts = {}
        for i in redo:
            mark = marks[start + i] if start + i < len(marks) else None
            if mark is not None:
                texts[i] = list(map(exemplar_text, mark))
            elif i in forced:
                texts[i] = none
        return texts

    @property
    def samples(self) -> list[Sample]:
        """For prometheus_client's encoders: the same series as ordinary samples."""
        out = []
        slab, marks, buckets = self.slab, self.marks, len(self.bounds) + 1
        for position, key in enumerate(self.keys):
            segment, base = slab.segment(position), slab.cell(position)
            counts = segment.q[base : base + buckets].tolist()
            mark = marks[position] if self.exemplars and position < len(marks) else None
            labels = dict(zip(self.labels, key, strict=True))
            for bound, n, *exemplar in cumulative(self.bounds, (counts, 0.0, mark)):
                ex = exemplar[0] if exemplar else None
                out.append(Sample(f"{self.name}_bucket", {**labels, "le": bound}, n, None, ex))
            out.append(Sample(f"{self.name}_count", labels, sum(counts)))
            out.append(Sample(f"{self.name}_sum", labels, segment.d[base + buckets]))
        return out
