"""Rows of numbers in shared memory: where the engine keeps its large metric families.

At 1,000 task names a scrape renders ~90,000 series. Kept as Python objects, each scrape
copied what changed under the engine lock and pickled it to the render process: ~35 ms
of the consumer's time a scrape, a third of it young garbage collections. Kept here, in
memory the render process maps too, the engine's hot path writes each value in place,
and a scrape copies nothing: the render process reads the rows as they are.

A slab is rows of ``width`` 8-byte cells (signed counts, or floats where a family says
so), appended and never moved, in segments of ``SEGMENT_BYTES``: where shared, each
segment is a memory file (``memfd``) the render process maps once. A reader may see a
row while the consumer writes it: each cell is written whole, and a series read between
two of its updates is shown as it was a moment later on the next scrape.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from typing import BinaryIO

#: A segment's size: a few for the largest family at 1,000 task names.
SEGMENT_BYTES = 1 << 20
#: Rows per segment are a multiple of this, so that a family's blocks of rows (512 or 32
#: series, see ``metrics.rows``) never straddle two segments.
ROW_ALIGN = 512
CELL = 8


class Segment:
    """Zeroed memory, seen as signed counts (``q``) and floats (``d``); ``file``: the memory
    file it maps, for the render process to map too (None: private memory)."""

    __slots__ = ("file", "memory", "raw", "q", "d")

    def __init__(self, memory: mmap.mmap, file: BinaryIO | None = None) -> None:
        self.file = file
        self.memory = memory
        self.raw = memoryview(memory)
        self.q = self.raw.cast("q")
        self.d = self.raw.cast("d")


def memory_file(size: int = 0) -> BinaryIO:
    """A new file in memory only, of ``size`` zero bytes, closed with the object."""
    if hasattr(os, "memfd_create"):
        file: BinaryIO = open(os.memfd_create("clearly-exporter"), "w+b", buffering=0)  # noqa: SIM115
    else:  # not Linux: an unlinked temporary file
        file = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115
    if size:
        os.ftruncate(file.fileno(), size)
    return file


def rows_per_segment(width: int) -> int:
    return max(ROW_ALIGN, SEGMENT_BYTES // (CELL * width) // ROW_ALIGN * ROW_ALIGN)


class Slab:
    """A family's rows: ``width`` cells each, by position, only ever appended; in memory
    files if ``shared`` (a render process maps them), else in private memory."""

    __slots__ = ("width", "shared", "per_segment", "segments", "rows")

    def __init__(self, width: int, shared: bool = False, per_segment: int = 0) -> None:
        """``per_segment``: rows a segment holds, if not the default for ``width`` (the
        render process is told the exporter's)."""
        self.width = width
        self.shared = shared
        self.per_segment = per_segment or rows_per_segment(width)
        self.segments: list[Segment] = []
        self.rows = 0

    def reserve(self) -> None:
        """Room for one more row: a new segment if the last is full (``OSError`` if the
        memory cannot be had, the slab as it was)."""
        if self.rows // self.per_segment == len(self.segments):
            size = self.per_segment * self.width * CELL
            if self.shared:
                file = memory_file(size)
                self.segments.append(Segment(mmap.mmap(file.fileno(), size), file))
            else:
                self.segments.append(Segment(mmap.mmap(-1, size)))

    def add(self) -> int:
        """A new row, all zero: its position."""
        self.reserve()
        row = self.rows
        self.rows = row + 1
        return row

    def attach(self, fd: int) -> None:
        """Map the next segment, made by the process that owns the slab, from ``fd`` (the
        caller's to close), to read only; the slab holds that many more rows."""
        size = self.per_segment * self.width * CELL
        self.segments.append(Segment(mmap.mmap(fd, size, access=mmap.ACCESS_READ)))
        self.rows = len(self.segments) * self.per_segment

    def segment(self, row: int) -> Segment:
        return self.segments[row // self.per_segment]

    def cell(self, row: int) -> int:
        """Where the row's first cell is in its segment's ``q`` and ``d``."""
        return row % self.per_segment * self.width

    def column(self, cast: str = "q", rows: int | None = None) -> list:
        """Every row's first cell, by position, as counts (``q``) or floats (``d``); of
        the first ``rows`` rows, or all."""
        out: list = []
        left = self.rows if rows is None else rows
        for segment in self.segments:
            take = min(left, self.per_segment)
            view = segment.q if cast == "q" else segment.d
            out.extend(view[: take * self.width : self.width].tolist())
            left -= take
        return out
