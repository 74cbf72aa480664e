"""Slabs: rows of cells only ever appended, in segments another process can map."""

from __future__ import annotations

import math
import os
import resource

import pytest

from clearly_exporter.engine import Engine
from clearly_exporter.engine import slab as slab_module
from clearly_exporter.engine.slab import Slab, rows_per_segment
from tests.engine.events import T0, in_progress, received, started, succeeded


def test_rows_fill_a_segment_then_start_the_next_and_never_move(monkeypatch):
    monkeypatch.setattr(slab_module, "SEGMENT_BYTES", 4096)
    slab = Slab(1)
    assert slab.per_segment == 512 == rows_per_segment(3), "never fewer than 512 rows"
    first = [slab.add() for _ in range(512)]
    assert first == list(range(512)) and len(slab.segments) == 1
    slab.segment(7).q[slab.cell(7)] += 5
    assert slab.add() == 512 and len(slab.segments) == 2
    assert (slab.segment(512), slab.cell(512)) == (slab.segments[1], 0)
    slab.segment(512).q[slab.cell(512)] = 9
    column = slab.column()
    assert len(column) == 513 and (column[7], column[512], sum(column)) == (5, 9, 14)


def test_a_row_of_counts_then_a_float():
    slab = Slab(3)
    rows = [slab.add(), slab.add()]
    segment, cell = slab.segment(rows[1]), slab.cell(rows[1])
    assert cell == 3, "three cells a row"
    segment.q[cell] += 2
    segment.d[cell + 2] += 0.25
    assert segment.q[cell : cell + 2].tolist() == [2, 0] and segment.d[cell + 2] == 0.25
    assert slab.column() == [0, 2]
    nan = Slab(1)
    nan.add()
    nan.segment(0).d[0] = math.nan
    assert math.isnan(nan.column("d")[0])


def test_a_shared_slab_is_seen_live_where_it_is_mapped_and_only_read_there():
    owner = Slab(2, shared=True)
    row = owner.add()
    reader = Slab(2, per_segment=owner.per_segment)
    reader.attach(owner.segments[0].file.fileno())
    assert reader.rows == owner.per_segment
    owner.segment(row).q[owner.cell(row)] += 41
    owner.segment(row).q[owner.cell(row)] += 1
    assert reader.segment(row).q[reader.cell(row)] == 42, "the same memory"
    with pytest.raises(TypeError):
        reader.segment(row).q[reader.cell(row)] = 0


def test_a_private_slab_has_no_file_to_hand_over():
    slab = Slab(1)
    slab.add()
    assert slab.segments[0].file is None


def test_in_progress_series_stay_in_step_when_memory_cannot_be_had():
    """A new segment is a memory file: past the open-file limit the event fails (the
    source counts it invalid), and the series made after stay right."""
    engine = Engine(shared=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Every free descriptor number filled, then room for two more: one segment (a memory
    # file and the mapping's own copy), the in-progress counts', not their times'.
    top, fillers = max(map(int, os.listdir("/proc/self/fd"))), []
    while not fillers or fillers[-1] < top:
        fillers.append(os.open(os.devnull, os.O_RDONLY))
    resource.setrlimit(resource.RLIMIT_NOFILE, (fillers[-1] + 3, hard))
    try:
        with pytest.raises(OSError):
            engine.handle(received("a", T0), T0)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in fillers:
            os.close(fd)
    engine.handle(received("b", T0 + 1), T0 + 1)
    engine.handle(received("c", T0 + 2, name="app.mul"), T0 + 2)
    engine.handle(started("c", T0 + 3), T0 + 3)
    engine.handle(succeeded("a", T0 + 4), T0 + 4)
    assert in_progress(engine, T0 + 5) == {
        ("app.add", "celery", "RECEIVED"): (1, T0 + 1),
        ("app.mul", "celery", "RECEIVED"): (0, None),
        ("app.mul", "celery", "STARTED"): (1, T0 + 3),
    }
